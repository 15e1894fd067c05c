import { spawnSync } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DAEMON_BUS_NAME, DAEMON_OBJECT_PATH, CONTAINER_INTERFACE } from '../../src/constants.js';
import type { BusConnection } from '../../src/bus/types.js';
import { e2eBlocker, REPO, startPrivateBus, type PrivateBus } from './support/dbus.js';
import { FakeContainer, TEST_CGROUP_PARENTS, killAllContainers, removeTestCgroupParents, type CgroupFlavour } from './support/containers.js';
import { cleanupDirs, daemonDirs, eventually, getStatus, rootClient, startDaemon, type DaemonDirs, type DaemonProcess } from './support/daemon.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING foundation e2e tests: ${blocker} ***\n`);

const HUB_UID = 7777775;

describe.skipIf(blocker !== null)('foundation: the daemon on a private system bus', () => {
  let bus: PrivateBus;
  let dirs: DaemonDirs;
  let daemon: DaemonProcess;
  let root: BusConnection;
  let addedUser = false;

  beforeAll(async () => {
    if (spawnSync('getent', ['passwd', String(HUB_UID)]).status !== 0) {
      // dbus-daemon refuses a uid without a passwd entry (DESIGN facts); the hub has one too.
      expect(spawnSync('useradd', ['-u', String(HUB_UID), '-M', '-N', '-s', '/usr/sbin/nologin', 'hmdtest']).status).toBe(0);
      addedUser = true;
    }
    bus = await startPrivateBus();
    dirs = daemonDirs({ identity: { dockerCgroupParents: TEST_CGROUP_PARENTS } });
    daemon = await startDaemon(bus, dirs);
    root = await rootClient(bus);
  });

  afterEach(async () => {
    await killAllContainers();
  });

  afterAll(async () => {
    root?.close();
    await daemon?.stop();
    await bus?.stop();
    if (dirs) cleanupDirs(dirs);
    if (addedUser) spawnSync('userdel', ['hmdtest']);
    removeTestCgroupParents();
  });

  const register = async (c: FakeContainer): Promise<[number, string]> => {
    await c.connect(bus.address);
    const r = await c.call('Register');
    expect(r['error']).toBeUndefined();
    return r['body'] as [number, string];
  };

  it.each<[string, CgroupFlavour, number | undefined]>([
    ['cgroup v1', 'v1', undefined],
    ['cgroup v2, systemd driver', 'v2', undefined],
    ['cgroup v2, cgroupfs driver', 'v2-cgroupfs', undefined],
    ['cgroup v1 under a --cgroup-parent', 'v1-parent', undefined],
    ['cgroup v2 under a --cgroup-parent slice', 'v2-parent-slice', undefined],
    ['a non-root uid (65534)', 'v1', 65534],
    ['the hub uid 7777775', 'v2', HUB_UID],
  ])('Register from a container on %s answers 0 and its agent name', async (_label, flavour, uid) => {
    const c = await FakeContainer.start({ flavour, ...(uid === undefined ? {} : { uid }) });
    const [status, name] = await register(c);
    expect(status).toBe(0);
    expect(name).toBe(`io.veea.VeeaHub.HardwareMonitoringAgent.C_${c.cid}`);
    // Idempotent.
    expect(await register(c)).toEqual([0, name]);
  });

  it('a host process gets ENODATA and an empty name', async () => {
    const host = await FakeContainer.start({ cid: null });
    expect(await register(host)).toEqual([61, '']);
    const ks = await host.call('GetKeystoreStatus');
    expect(ks['body']).toEqual([61]);
  });

  it('Ready from a container that never registered is the NotRegistered error', async () => {
    const c = await FakeContainer.start();
    await c.connect(bus.address);
    const r = await c.call('Ready');
    expect(r['error']).toBe('io.veea.VeeaHub.HardwareMonitoringDaemon.Error.NotRegistered');
    const host = await FakeContainer.start({ cid: null });
    await host.connect(bus.address);
    expect((await host.call('Ready'))['error']).toBe('io.veea.VeeaHub.HardwareMonitoringDaemon.Error.NotRegistered');
  });

  it('two containers each get their own identity, and one registering does not register the other', async () => {
    const a = await FakeContainer.start({ flavour: 'v1' });
    const b = await FakeContainer.start({ flavour: 'v2' });
    const [, nameA] = await register(a);
    await b.connect(bus.address);
    expect((await b.call('Ready'))['error']).toBe('io.veea.VeeaHub.HardwareMonitoringDaemon.Error.NotRegistered');
    const [, nameB] = await register(b);
    expect(nameA).toContain(a.cid);
    expect(nameB).toContain(b.cid);
    expect(nameA).not.toBe(nameB);
    // B cannot take A's name? The bus lets anyone own agent names (policy), but the daemon
    // verifies owners before delivering: covered by the dispatcher tests.
    const st = await getStatus(root);
    const ids = st.containers.map((c) => c['id']);
    expect(ids).toContain(a.cid);
    expect(ids).toContain(b.cid);
  });

  it('a container whose process exits is gone from status within a second or so', async () => {
    const c = await FakeContainer.start();
    await register(c);
    expect((await getStatus(root)).containers.map((x) => x['id'])).toContain(c.cid);
    await c.kill();
    const t0 = Date.now();
    await eventually(async () => !(await getStatus(root)).containers.some((x) => x['id'] === c.cid), 5000, 'container to be forgotten');
    // Reported for the record; the behaviour asserted is that it goes, promptly.
    console.info(`container forgotten ${Date.now() - t0} ms after exit`);
  });

  it('hmd status --json from the command line has the contract format', async () => {
    const c = await FakeContainer.start();
    await register(c);
    const out = spawnSync(process.execPath, [`${REPO}/dist/main.js`, 'status', '--json', '--bus', bus.address], { encoding: 'utf8' });
    expect(out.status, out.stderr).toBe(0);
    const doc = JSON.parse(out.stdout) as { containers: Array<Record<string, unknown>>; devices: unknown[] };
    const mine = doc.containers.find((x) => x['id'] === c.cid);
    expect(mine).toMatchObject({ id: c.cid, busName: `io.veea.VeeaHub.HardwareMonitoringAgent.C_${c.cid}`, state: 'registered' });
    expect(Array.isArray(doc.devices)).toBe(true);
  });

  it('50 connections x 20 Register calls all answer correctly', async () => {
    const containers = await Promise.all(Array.from({ length: 10 }, () => FakeContainer.start()));
    // 10 containers, 5 connections each (separate processes would be the same to the bus).
    const answers = await Promise.all(
      containers.flatMap((c) =>
        Array.from({ length: 5 }, async (_, i) => {
          const peer = i === 0 ? c : await FakeContainer.start({ cid: c.cid, flavour: 'v1' });
          await peer.connect(bus.address);
          const got = await Promise.all(Array.from({ length: 20 }, () => peer.call('Register')));
          return got.map((g) => [c.cid, g['body']] as const);
        }),
      ),
    );
    const flat = answers.flat();
    expect(flat).toHaveLength(1000);
    for (const [cid, body] of flat) expect(body).toEqual([0, `io.veea.VeeaHub.HardwareMonitoringAgent.C_${cid}`]);
  });

  describe('D-Bus behaviour and policy', () => {
    it('answers bad calls with proper errors and keeps serving', async () => {
      const c = await FakeContainer.start({ uid: 65534 });
      await c.connect(bus.address);
      expect((await c.call('Nope'))['error']).toBe('org.freedesktop.DBus.Error.UnknownMethod');
      expect((await c.call('Register', 's', ['x']))['error']).toBe('org.freedesktop.DBus.Error.InvalidArgs');
      expect((await c.call('Register', '', [], { path: '/io/veea/Nothing' }))['error']).toMatch(/UnknownObject|AccessDenied/);
      expect((await c.call('Register', 'as', [['a'.repeat(100_000)]]))['error']).toBe('org.freedesktop.DBus.Error.InvalidArgs');
      const intro = await c.call('Introspect', '', [], { iface: 'org.freedesktop.DBus.Introspectable' });
      expect(String((intro['body'] as string[])[0])).toContain('<interface name="io.veea.VeeaHub.HardwareMonitoringDaemon.Container">');
      expect((await c.call('Ping', '', [], { iface: 'org.freedesktop.DBus.Peer' }))['error']).toBeUndefined();
      const all = await c.call('GetAll', 's', [CONTAINER_INTERFACE], { iface: 'org.freedesktop.DBus.Properties' });
      expect(all['body']).toEqual([{}]);
      expect((await c.call('Register'))['body']).toEqual([0, `io.veea.VeeaHub.HardwareMonitoringAgent.C_${c.cid}`]);
      expect(daemon.running).toBe(true);
    });

    it('only root may call the Admin interface; non-root is denied by the bus', async () => {
      const c = await FakeContainer.start({ uid: 65534 });
      await c.connect(bus.address);
      const r = await c.call('GetStatus', '', [], { iface: 'io.veea.VeeaHub.HardwareMonitoringDaemon.Admin' });
      expect(r['error']).toBe('org.freedesktop.DBus.Error.AccessDenied');
      await expect(getStatus(root)).resolves.toHaveProperty('containers');
    });

    it('non-root may own agent names but not the daemon name', async () => {
      const c = await FakeContainer.start({ uid: 65534 });
      await c.connect(bus.address);
      expect((await c.request({ op: 'own', name: `io.veea.VeeaHub.HardwareMonitoringAgent.C_${c.cid}` }))['result']).toBe(1);
      expect((await c.request({ op: 'own', name: DAEMON_BUS_NAME }))['error']).toBe('org.freedesktop.DBus.Error.AccessDenied');
      expect((await c.request({ op: 'own', name: 'org.example.Other' }))['error']).toBe('org.freedesktop.DBus.Error.AccessDenied');
    });

    it('introspection of the parent path lists the daemon object', async () => {
      const [xml] = await root.call(DAEMON_BUS_NAME, '/io/veea/VeeaHub', 'org.freedesktop.DBus.Introspectable', 'Introspect', '', []);
      expect(xml).toContain('<node name="HardwareMonitoringDaemon"/>');
      const [full] = await root.call(DAEMON_BUS_NAME, DAEMON_OBJECT_PATH, 'org.freedesktop.DBus.Introspectable', 'Introspect', '', []);
      expect(full).toContain('io.veea.VeeaHub.HardwareMonitoringDaemon.Admin');
    });
  });

  it('a second daemon refuses to start while the first owns the name', async () => {
    const other = daemonDirs();
    const r = spawnSync(process.execPath, [`${REPO}/dist/main.js`, 'daemon', '--bus', bus.address, '--config', other.configFile], { encoding: 'utf8', timeout: 20_000 });
    cleanupDirs(other);
    expect(r.status).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/already owned/);
    expect(daemon.running).toBe(true);
  });
});

describe.skipIf(blocker !== null)('foundation: stopping', () => {
  it('SIGTERM releases the name and exits 0 promptly', async () => {
    const bus = await startPrivateBus();
    const dirs = daemonDirs();
    try {
      const d = await startDaemon(bus, dirs);
      const root = await rootClient(bus);
      expect(await root.getNameOwner(DAEMON_BUS_NAME)).not.toBeNull();
      const t0 = Date.now();
      expect(await d.stop('SIGTERM')).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(await root.getNameOwner(DAEMON_BUS_NAME)).toBeNull();
      root.close();
    } finally {
      await bus.stop();
      cleanupDirs(dirs);
    }
  });

  it('exits non-zero within 5 s when dbus-daemon dies', async () => {
    const bus = await startPrivateBus();
    const dirs = daemonDirs();
    try {
      const d = await startDaemon(bus, dirs);
      bus.kill('SIGKILL');
      const code = await d.waitExit(10_000);
      expect(code).not.toBe(0);
      expect(d.logsMatching('cannot go on serving').length).toBeGreaterThan(0);
    } finally {
      await bus.stop();
      cleanupDirs(dirs);
    }
  });
});
