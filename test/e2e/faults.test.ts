import { describe, expect, it } from 'vitest';
import { eventually, getStatus, rootClient, startDaemon, usePerTestBus } from './support/daemon.js';
import { e2eBlocker } from './support/dbus.js';
import { FakeContainer, type ContainerEvent } from './support/containers.js';
import { plugMany, usbDevice } from './support/events.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING fault e2e tests: ${blocker} ***\n`);

/**
 * What each container holds after at-least-once delivery: every event, in order, where a
 * repeat is recognisable because it carries a sequence number already seen.
 */
function dedupe(events: ContainerEvent[]): ContainerEvent[] {
  const out: ContainerEvent[] = [];
  let last = 0;
  for (const e of events) {
    const seq = Number(e.properties['HMD_SEQUENCE']);
    if (seq <= last) {
      // A repeat is the same event again, never another event under a number already used.
      const first = out[seq - 1];
      expect(`${e.member} ${e.deviceId}`, `repeat of HMD_SEQUENCE ${seq}`).toBe(`${first?.member} ${first?.deviceId}`);
      continue;
    }
    expect(seq).toBe(last + 1);
    last = seq;
    out.push(e);
  }
  return out;
}

describe.skipIf(blocker !== null)('faults', () => {
  const { setup, cleanup } = usePerTestBus();

  it('140 hung containers cannot starve 2 healthy ones of the bus reply slots', async () => {
    const { bus, dirs } = await setup({ delivery: { timeoutMs: 300 } });
    const daemon = await startDaemon(bus, dirs);
    cleanup.push(() => daemon.stop().then(() => undefined));
    const hung: FakeContainer[] = [];
    // Start them in waves: 140 Node processes on 2 cores.
    for (let wave = 0; wave < 7; wave++) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => FakeContainer.start()));
      await Promise.all(batch.map((c) => c.becomeReady(bus.address, 'hang')));
      hung.push(...batch);
    }
    const healthy = await Promise.all([0, 1].map(() => FakeContainer.start()));
    for (const h of healthy) await h.becomeReady(bus.address);
    // Each of these events leaves one more unanswered call per hung container... unless the
    // daemon never sends a second one while the first is unanswered.
    await plugMany(dirs.spoolDir, 0, 30);
    for (const h of healthy) {
      const got = await h.waitForEvents(30, 60_000);
      expect(dedupe(got).map((e) => e.deviceId)).toEqual(Array.from({ length: 30 }, (_, i) => usbDevice(i).DEVPATH));
    }
    // Every hung container got exactly one call (one in flight at most) and is marked stalled.
    await eventually(() => hung.every((c) => c.events.length === 1), 30_000, 'each hung container to hold its one call');
    const root = await rootClient(bus);
    const st = await eventually(async () => {
      const s = await getStatus(root);
      return s.containers.filter((c) => c['stalled'] === true).length === 140 ? s : null;
    }, 30_000, 'all 140 hung containers to be stalled');
    root.close();
    expect(hung.every((c) => c.events.length === 1)).toBe(true);
    const delivery = (st as unknown as { delivery: { connections: number; pending: number[] } }).delivery;
    expect(delivery.pending.every((p) => p <= 100)).toBe(true);
    expect(delivery.connections).toBeGreaterThanOrEqual(2);
  }, 180_000);

  it('kill -9 of the daemon during a 200-event burst: after restart every Ready container has every event in order', async () => {
    const { bus, dirs } = await setup();
    let daemon = await startDaemon(bus, dirs);
    const containers = await Promise.all([0, 1, 2].map(() => FakeContainer.start()));
    for (const c of containers) await c.becomeReady(bus.address);
    const burst = plugMany(dirs.spoolDir, 0, 200);
    await eventually(() => containers[0]!.events.length >= 40, 30_000, 'the burst to be under way');
    daemon.proc.kill('SIGKILL');
    await daemon.waitExit();
    await burst;
    daemon = await startDaemon(bus, dirs);
    cleanup.push(() => daemon.stop().then(() => undefined));
    for (const c of containers) {
      await eventually(() => dedupe(c.events).length >= 200, 60_000, `container ${c.cid?.slice(0, 8)} to hold 200 events`);
      const unique = dedupe(c.events);
      expect(unique.map((e) => e.deviceId)).toEqual(Array.from({ length: 200 }, (_, i) => usbDevice(i).DEVPATH));
      expect(unique.every((e) => e.member === 'DeviceInserted')).toBe(true);
    }
    // The containers were restored without registering again.
    const root = await rootClient(bus);
    const st = await getStatus(root);
    root.close();
    expect(st.containers.filter((c) => c['state'] === 'ready').map((c) => c['id']).sort()).toEqual(containers.map((c) => c.cid).sort());
  }, 180_000);

  it('kill -9 before acks were saved: the unsaved ones come again with their own HMD_SEQUENCE, then the sequence goes on', async () => {
    const { bus, dirs } = await setup();
    let daemon = await startDaemon(bus, dirs);
    const c = await FakeContainer.start();
    await c.becomeReady(bus.address);
    // Slow acks: each arrives after the state write its event caused, and progress is saved
    // only in batches, so some acks are not on disk when the daemon dies.
    await c.request({ op: 'events', mode: 'ack', delayMs: 50 });
    await plugMany(dirs.spoolDir, 0, 10);
    await c.waitForEvents(10);
    daemon.proc.kill('SIGKILL'); // before the tenth ack can reach it
    await daemon.waitExit();
    daemon = await startDaemon(bus, dirs);
    cleanup.push(() => daemon.stop().then(() => undefined));
    await eventually(() => c.events.length > 10, 15_000, 'the unacknowledged event to come again');
    await plugMany(dirs.spoolDir, 10, 5);
    await eventually(() => dedupe(c.events).length === 15, 15_000, 'the sequence to go on after the repeats');
    const unique = dedupe(c.events); // also checks each repeat is the same event as the first time
    expect(unique.map((e) => e.deviceId)).toEqual(Array.from({ length: 15 }, (_, i) => usbDevice(i).DEVPATH));
    expect(unique.map((e) => e.properties['HMD_SEQUENCE'])).toEqual(Array.from({ length: 15 }, (_, i) => String(i + 1)));
    const repeats = c.events.length - 15;
    expect(repeats).toBeGreaterThanOrEqual(1);
    expect(repeats).toBeLessThanOrEqual(10);
  }, 60_000);

  it('events written to the spool while the daemon is down are delivered after it starts', async () => {
    const { bus, dirs } = await setup();
    let daemon = await startDaemon(bus, dirs);
    const c = await FakeContainer.start();
    await c.becomeReady(bus.address);
    await plugMany(dirs.spoolDir, 0, 5);
    await c.waitForEvents(5);
    expect(await daemon.stop()).toBe(0);
    await plugMany(dirs.spoolDir, 5, 5);
    await plugMany(dirs.spoolDir, 0, 2, 'remove');
    daemon = await startDaemon(bus, dirs);
    cleanup.push(() => daemon.stop().then(() => undefined));
    const got = dedupe(await c.waitForEvents(12));
    expect(got.map((e) => [e.member, e.deviceId])).toEqual([
      ...Array.from({ length: 10 }, (_, i) => ['DeviceInserted', usbDevice(i).DEVPATH]),
      ['DeviceRemoved', usbDevice(0).DEVPATH],
      ['DeviceRemoved', usbDevice(1).DEVPATH],
    ]);
  }, 60_000);
});
