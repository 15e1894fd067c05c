import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, getStatus, startDaemon, useDaemonSuite } from './support/daemon.js';
import { e2eBlocker, REPO, startPrivateBus } from './support/dbus.js';
import { forOtherUids } from './support/repo-view.js';
import { FakeContainer } from './support/containers.js';
import { runHelper, usbDevice } from './support/events.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING operations e2e tests: ${blocker} ***\n`);

describe.skipIf(blocker !== null)('operating the daemon', () => {
  const t = useDaemonSuite();

  it('hmd agent (the client library) survives a daemon restart and keeps receiving events, in sequence', async () => {
    const agent = await FakeContainer.agent(t.bus.address);
    await eventually(async () => (await getStatus(t.root)).containers.some((c) => c['id'] === agent.cid && c['state'] === 'ready'), 10_000, 'the agent to be ready');
    await runHelper(t.dirs.spoolDir, 'add', usbDevice(1));
    await agent.waitForEvents(1);
    expect(await t.daemon.stop()).toBe(0);
    t.daemon = await startDaemon(t.bus, t.dirs);
    await runHelper(t.dirs.spoolDir, 'add', usbDevice(2));
    const got = await agent.waitForEvents(2);
    expect(got.map((e) => [e.deviceId, e.properties['HMD_SEQUENCE']])).toEqual([
      [usbDevice(1).DEVPATH, '1'],
      [usbDevice(2).DEVPATH, '2'],
    ]);
    expect(agent.exited).toBe(false);
    await runHelper(t.dirs.spoolDir, 'remove', usbDevice(1));
    await runHelper(t.dirs.spoolDir, 'remove', usbDevice(2));
    await agent.waitForEvents(4);
  });

  it('SIGHUP reloads log level, deadlines and subsystems without dropping containers', async () => {
    const c = await FakeContainer.start();
    await c.becomeReady(t.bus.address);
    const cfg = JSON.parse(readFileSync(t.dirs.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    cfg['devices'] = { ...cfg['devices'], subsystems: ['tty'] };
    cfg['delivery'] = { timeoutMs: 1234 };
    writeFileSync(t.dirs.configFile, JSON.stringify(cfg));
    t.daemon.proc.kill('SIGHUP');
    await eventually(() => t.daemon.logsMatching('configuration reloaded').length > 0, 5000, 'the reload log line');
    expect(t.daemon.logsMatching('configuration reloaded')[0]).toMatchObject({ delivery: { timeoutMs: 1234 }, subsystems: ['tty'] });
    // usb is no longer reported; the container is still there and still served.
    await runHelper(t.dirs.spoolDir, 'add', usbDevice(7));
    await runHelper(t.dirs.spoolDir, 'add', { DEVPATH: '/devices/platform/serial8250/tty/ttyS3', SUBSYSTEM: 'tty', DEVNAME: '/dev/ttyS3' });
    const got = await c.waitForEvents(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(c.events.map((e) => e.deviceId)).toEqual(['/devices/platform/serial8250/tty/ttyS3']);
    expect(got[0]?.properties['HMD_SEQUENCE']).toBe('1');
    expect((await getStatus(t.root)).containers.find((x) => x['id'] === c.cid)?.['state']).toBe('ready');
    // A broken file is refused and the running configuration kept.
    writeFileSync(t.dirs.configFile, '{ broken');
    t.daemon.proc.kill('SIGHUP');
    await eventually(() => t.daemon.logsMatching('configuration reload failed').length > 0, 5000, 'the refusal log line');
    expect(t.daemon.running).toBe(true);
  });

  it('hmd status says clearly when the caller is not root, and when the daemon is not running', async () => {
    const asNobody = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, forOtherUids(join(REPO, 'dist/main.js')), 'status', '--bus', t.bus.address], { encoding: 'utf8', timeout: 30_000 });
    expect(asNobody.status).toBe(1);
    expect(asNobody.stderr).toMatch(/^hmd: permission denied: GetStatus is for root only/m);
    const other = await startPrivateBus();
    try {
      const r = spawnSync(process.execPath, [join(REPO, 'dist/main.js'), 'status', '--bus', other.address], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^hmd: the daemon is not running/m);
      expect(r.stdout).toBe('');
    } finally {
      await other.stop();
    }
  });
});
