import { describe, expect, it } from 'vitest';
import { eventually, getStatus, useDaemonSuite } from './support/daemon.js';
import { e2eBlocker } from './support/dbus.js';
import { FakeContainer, type ContainerEvent } from './support/containers.js';
import { plugMany, runHelper, usbDevice } from './support/events.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING dispatcher e2e tests: ${blocker} ***\n`);

const seqOf = (e: ContainerEvent): number => Number(e.properties['HMD_SEQUENCE']);

/** Order, no gaps, and what was delivered: [member, deviceId] pairs. */
function checkSequence(events: ContainerEvent[]): Array<[string, string]> {
  expect(events.map(seqOf)).toEqual(events.map((_, i) => i + 1));
  return events.map((e) => [e.member, e.deviceId]);
}

describe.skipIf(blocker !== null)('dispatcher: delivery to Ready containers', () => {
  const t = useDaemonSuite({ config: { delivery: { timeoutMs: 500 } } });

  const devicesPresent = async (n: number): Promise<void> => {
    await eventually(async () => (await getStatus(t.root)).devices.length === n, 10_000, `${n} devices in the table`);
  };

  it('hmd agent gets a replay of present devices, then live events, in order, sequences 1..n', async () => {
    await plugMany(t.dirs.spoolDir, 0, 3);
    await devicesPresent(3);
    const agent = await FakeContainer.agent(t.bus.address);
    const replay = await agent.waitForEvents(3);
    expect(replay.every((e) => e.member === 'DeviceInserted' && e.properties['HMD_REPLAY'] === '1')).toBe(true);
    await plugMany(t.dirs.spoolDir, 3, 2);
    await runHelper(t.dirs.spoolDir, 'remove', usbDevice(0));
    const all = await agent.waitForEvents(6);
    expect(checkSequence(all)).toEqual([
      ['DeviceInserted', usbDevice(0).DEVPATH],
      ['DeviceInserted', usbDevice(1).DEVPATH],
      ['DeviceInserted', usbDevice(2).DEVPATH],
      ['DeviceInserted', usbDevice(3).DEVPATH],
      ['DeviceInserted', usbDevice(4).DEVPATH],
      ['DeviceRemoved', usbDevice(0).DEVPATH],
    ]);
    expect(all[3]?.properties['HMD_REPLAY']).toBeUndefined();
    expect(all[3]?.properties['ID_SERIAL']).toBe('Silicon_Labs_Test_Device_3');
    expect(Object.keys(all[3]?.properties ?? {}).filter((k) => k.startsWith('HMD_') && k !== 'HMD_SEQUENCE')).toEqual([]);
    expect(all[3]?.properties['PATH']).toBeUndefined();
    // Clean up the table for the next tests.
    await plugMany(t.dirs.spoolDir, 1, 4, 'remove');
    await devicesPresent(0);
  });

  it('a registered container that is not Ready gets nothing, then exactly the replay once Ready', async () => {
    await plugMany(t.dirs.spoolDir, 10, 2);
    await devicesPresent(2);
    const c = await FakeContainer.start();
    await c.connect(t.bus.address);
    const [, name] = (await c.call('Register'))['body'] as [number, string];
    await c.request({ op: 'events', mode: 'ack' });
    await c.request({ op: 'own', name });
    await plugMany(t.dirs.spoolDir, 12, 1);
    await devicesPresent(3);
    await new Promise((r) => setTimeout(r, 300));
    expect(c.events).toHaveLength(0);
    await c.call('Ready');
    const got = await c.waitForEvents(3);
    await new Promise((r) => setTimeout(r, 300));
    expect(c.events).toHaveLength(3);
    expect(got.every((e) => e.properties['HMD_REPLAY'] === '1')).toBe(true);
    checkSequence(got);
    await plugMany(t.dirs.spoolDir, 10, 3, 'remove');
    await devicesPresent(0);
  });

  it('an insert racing with Ready appears exactly once', async () => {
    for (let round = 0; round < 5; round++) {
      const c = await FakeContainer.start();
      await c.connect(t.bus.address);
      const [, name] = (await c.call('Register'))['body'] as [number, string];
      await c.request({ op: 'events', mode: 'ack' });
      await c.request({ op: 'own', name });
      const n = 20 + round;
      await Promise.all([c.call('Ready'), runHelper(t.dirs.spoolDir, 'add', usbDevice(n))]);
      await c.waitForEvents(1);
      await new Promise((r) => setTimeout(r, 300));
      expect(c.events.filter((e) => e.deviceId === usbDevice(n).DEVPATH)).toHaveLength(1);
      await runHelper(t.dirs.spoolDir, 'remove', usbDevice(n));
      await c.waitForEvents(2);
      checkSequence(c.events);
      await c.kill();
    }
  });

  it('a remove carries the last known properties (insert, updated by change)', async () => {
    const c = await FakeContainer.start();
    await c.becomeReady(t.bus.address);
    const dev = usbDevice(30);
    await runHelper(t.dirs.spoolDir, 'add', dev);
    await c.waitForEvents(1);
    await runHelper(t.dirs.spoolDir, 'change', { ...dev, ID_MODEL: 'Renamed_Model' });
    // The remove event from the kernel carries almost nothing: sysfs is gone.
    await runHelper(t.dirs.spoolDir, 'remove', { DEVPATH: dev.DEVPATH, SUBSYSTEM: 'usb', DEVTYPE: 'usb_device' });
    const [ins, rem] = await c.waitForEvents(2);
    expect(ins?.member).toBe('DeviceInserted');
    expect(rem?.member).toBe('DeviceRemoved');
    expect(rem?.properties['ID_MODEL']).toBe('Renamed_Model');
    expect(rem?.properties['ID_SERIAL']).toBe(dev.ID_SERIAL);
    expect(rem?.properties['DEVNAME']).toBe(dev.DEVNAME);
  });

  it('3 healthy containers get 100 events in order while a hung one is stalled', async () => {
    const healthy = await Promise.all([0, 1, 2].map(() => FakeContainer.start()));
    for (const h of healthy) await h.becomeReady(t.bus.address);
    const hung = await FakeContainer.start();
    await hung.becomeReady(t.bus.address, 'hang');
    await plugMany(t.dirs.spoolDir, 100, 50);
    await plugMany(t.dirs.spoolDir, 100, 50, 'remove');
    for (const h of healthy) {
      const got = await h.waitForEvents(100, 30_000);
      const pairs = checkSequence(got);
      expect(pairs.slice(0, 50).map((p) => p[1])).toEqual(Array.from({ length: 50 }, (_, i) => usbDevice(100 + i).DEVPATH));
      expect(pairs.slice(50).every((p) => p[0] === 'DeviceRemoved')).toBe(true);
    }
    expect(hung.events).toHaveLength(1);
    const st = await getStatus(t.root);
    const h = st.containers.find((x) => x['id'] === hung.cid);
    expect(h?.['stalled']).toBe(true);
    expect(h?.['state']).toBe('ready');
  });

  it('a squatter owning another container\'s agent name gets no calls, and the incident is counted', async () => {
    const victim = await FakeContainer.start();
    await victim.connect(t.bus.address);
    const [, name] = (await victim.call('Register'))['body'] as [number, string];
    const squatter = await FakeContainer.start();
    await squatter.connect(t.bus.address);
    await squatter.request({ op: 'events', mode: 'ack' });
    expect((await squatter.request({ op: 'own', name }))['result']).toBe(1);
    const before = (await getStatus(t.root)).metrics['squatAttempts'] ?? 0;
    expect((await victim.call('Ready'))['error']).toBeUndefined();
    await runHelper(t.dirs.spoolDir, 'add', usbDevice(40));
    await eventually(async () => ((await getStatus(t.root)).metrics['squatAttempts'] ?? 0) > before, 5000, 'squat to be counted');
    await new Promise((r) => setTimeout(r, 300));
    expect(squatter.events).toHaveLength(0);
    // The squatter leaves; the victim takes its name and gets everything, in order.
    await squatter.kill();
    await victim.request({ op: 'events', mode: 'ack' });
    expect((await victim.request({ op: 'own', name }))['result']).toBe(1);
    const got = await victim.waitForEvents(1);
    expect(got[0]?.deviceId).toBe(usbDevice(40).DEVPATH);
    await runHelper(t.dirs.spoolDir, 'remove', usbDevice(40));
  });

  it('a container that is killed is dropped with its queue', async () => {
    const c = await FakeContainer.start();
    await c.becomeReady(t.bus.address, 'hang');
    await runHelper(t.dirs.spoolDir, 'add', usbDevice(41));
    await c.waitForEvents(1);
    await c.kill();
    await eventually(async () => !(await getStatus(t.root)).containers.some((x) => x['id'] === c.cid), 5000, 'killed container to be dropped');
    await runHelper(t.dirs.spoolDir, 'remove', usbDevice(41));
  });
});
