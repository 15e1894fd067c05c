import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CGROUP_READ_LIMIT, CallerIdentifier, cgroupPatterns, containerFromCgroup, type CgroupVerdict, type Runtime } from '../../src/containers/identity.js';
import { RemoteError, type Credentials } from '../../src/bus/types.js';
import { createLogger, silentLogger, type Logger } from '../../src/log.js';

const A = '3f1c9a0b7e2d4c5f8a6b1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b';
const B = 'aa5e2b7c19d84f3e6a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f';
const C = '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
const ALL: Runtime[] = ['docker', 'podman', 'containerd'];
const DOCKER: Runtime[] = ['docker'];

/** A cgroup v1 host with a v2 `0::` line, like this machine: every controller line, one path each. */
function v1(paths: Partial<Record<string, string>>, v2 = '/'): string {
  const controllers = ['name=systemd', 'pids', 'blkio', 'freezer', 'devices', 'memory', 'cpuset', 'cpuacct', 'cpu'];
  const lines = controllers.map((c, i) => `${9 - i}:${c}:${paths[c] ?? '/'}`);
  return `${lines.join('\n')}\n0::${v2}\n`;
}

type Row = [name: string, text: string, runtimes: Runtime[], expected: CgroupVerdict];
const container = (cid: string): CgroupVerdict => ({ kind: 'container', cid });
const none: CgroupVerdict = { kind: 'none' };

const rows: Row[] = [
  // Docker, cgroupfs driver on v1: every controller names the container.
  ['v1 docker on every controller', v1(Object.fromEntries(['name=systemd', 'pids', 'blkio', 'freezer', 'devices', 'memory', 'cpuset', 'cpuacct', 'cpu'].map((c) => [c, `/docker/${A}`]))), DOCKER, container(A)],
  ['v1 docker on pids only (as the e2e harness does it)', v1({ pids: `/docker/${A}` }), DOCKER, container(A)],
  ['v1 docker on name=systemd only', v1({ 'name=systemd': `/docker/${A}` }), DOCKER, container(A)],
  ['v1 docker on combined cpu,cpuacct', `12:cpu,cpuacct:/docker/${A}\n11:net_cls,net_prio:/docker/${A}\n1:name=systemd:/docker/${A}\n`, DOCKER, container(A)],
  ['v1 systemd driver', v1({ pids: `/system.slice/docker-${A}.scope`, 'name=systemd': `/system.slice/docker-${A}.scope` }), DOCKER, container(A)],
  // This machine's own /proc/self/cgroup has an unrelated v1 memory line; a docker line beside it wins.
  ['unrelated memory:/process_api line alone', v1({ memory: '/process_api/d64e12c86d2235249cbfdaee8087db40' }), DOCKER, none],
  ['unrelated memory:/process_api line mixed with docker', v1({ memory: '/process_api/d64e12c86d2235249cbfdaee8087db40', pids: `/docker/${A}` }), DOCKER, container(A)],
  // Recorded on this machine: a process moved into pids:/docker/<cid> and unified system.slice/docker-<cid>.scope.
  [
    'recorded: v1 pids + v2 scope + unrelated memory line',
    '9:name=systemd:/\n8:pids:/docker/' + A + '\n7:blkio:/\n6:freezer:/\n5:devices:/\n4:memory:/process_api/d64e12c86d2235249cbfdaee8087db40\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/system.slice/docker-' + A + '.scope\n',
    DOCKER,
    container(A),
  ],
  ['v2 systemd driver', `0::/system.slice/docker-${A}.scope\n`, DOCKER, container(A)],
  ['v2 cgroupfs driver', `0::/docker/${A}\n`, DOCKER, container(A)],
  ['v2 hybrid (this machine: unified at the 0:: line)', v1({}, `/system.slice/docker-${A}.scope`), DOCKER, container(A)],
  ['v2 without trailing newline', `0::/docker/${A}`, DOCKER, container(A)],
  // Nested: the host knows the outermost container.
  ['docker-in-docker, cgroupfs', `0::/docker/${A}/docker/${B}\n`, DOCKER, container(A)],
  ['docker-in-docker, systemd outside', `0::/system.slice/docker-${A}.scope/docker/${B}\n`, DOCKER, container(A)],
  ['docker-in-docker on v1 lines', v1({ pids: `/docker/${A}/docker/${B}`, memory: `/docker/${A}/docker/${B}` }), DOCKER, container(A)],
  ['trailing init.scope', `0::/system.slice/docker-${A}.scope/init.scope\n`, DOCKER, container(A)],
  ['trailing child path', `0::/docker/${A}/some/child\n`, DOCKER, container(A)],
  ['same container on v1 and v2 lines', v1({ pids: `/docker/${A}` }, `/system.slice/docker-${A}.scope`), DOCKER, container(A)],
  ['two containers on two lines', v1({ pids: `/docker/${A}`, memory: `/docker/${B}` }), DOCKER, { kind: 'ambiguous', cids: [A, B].sort() }],
  ['two containers, v1 and v2', v1({ pids: `/docker/${A}` }, `/docker/${B}`), DOCKER, { kind: 'ambiguous', cids: [A, B].sort() }],
  // Podman and containerd only when enabled.
  ['podman scope, enabled', `0::/machine.slice/libpod-${A}.scope\n`, ALL, container(A)],
  ['podman scope with /container, enabled', `0::/machine.slice/libpod-${A}.scope/container\n`, ALL, container(A)],
  ['podman cgroupfs, enabled', `5:pids:/libpod_parent/libpod-${A}\n`, ['podman'], container(A)],
  ['podman scope, docker only', `0::/machine.slice/libpod-${A}.scope/container\n`, DOCKER, none],
  ['podman conmon is not the container', `0::/machine.slice/libpod-conmon-${A}.scope\n`, ALL, none],
  ['containerd in kubepods, enabled', `0::/kubepods/burstable/pod6d9b8c2e-1f3a-4b5c-9d8e-7f6a5b4c3d2e/cri-containerd-${A}.scope\n`, ['containerd'], container(A)],
  [
    'containerd in kubepods.slice (systemd), enabled',
    `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6d9b8c2e_1f3a.slice/cri-containerd-${A}.scope\n`,
    ALL,
    container(A),
  ],
  ['containerd nested: outermost wins', `0::/kubepods/pod1/cri-containerd-${A}.scope/kubepods/cri-containerd-${B}.scope\n`, ['containerd'], container(A)],
  ['containerd, docker only', `0::/kubepods/burstable/pod6d9b/cri-containerd-${A}.scope\n`, DOCKER, none],
  ['docker and podman naming different containers', `0::/machine.slice/libpod-${B}.scope\n4:pids:/docker/${A}\n`, ALL, { kind: 'ambiguous', cids: [A, B].sort() }],
  // Not containers.
  ['host process, v1+v2 all root', v1({}), ALL, none],
  ['v2 root only', '0::/\n', ALL, none],
  ['init.scope', '0::/init.scope\n', ALL, none],
  ['user session', '0::/user.slice/user-1000.slice/session-3.scope\n', ALL, none],
  ['ssh service', v1({ 'name=systemd': '/system.slice/ssh.service', pids: '/system.slice/ssh.service' }, '/system.slice/ssh.service'), ALL, none],
  ['docker daemon itself', '0::/system.slice/docker.service\n', ALL, none],
  ['a user faking a scope in a delegated subtree', `0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker-${A}.scope\n`, ALL, none],
  ['a user faking /docker/ in a delegated subtree', `1:name=systemd:/user.slice/user-1000.slice/user@1000.service/docker/${A}\n`, ALL, none],
  ['a service faking a nested scope', `0::/system.slice/foo.service/docker-${A}.scope\n`, ALL, none],
  ['bare /docker', '0::/docker\n0::/docker/\n', ALL, none],
  ['buildkit is no container', '0::/docker/buildkit/abc\n', ALL, none],
  ['63 hex', `0::/docker/${A.slice(1)}\n`, ALL, none],
  ['65 hex', `0::/docker/${A}0\n`, ALL, none],
  ['upper-case hex', `0::/docker/${A.toUpperCase()}\n`, ALL, none],
  ['non-hex', `0::/docker/${A.slice(0, 63)}g\n`, ALL, none],
  ['65 hex scope', `0::/system.slice/docker-${A}0.scope\n`, ALL, none],
  ['scope without .scope', `0::/system.slice/docker-${A}\n`, ALL, none],
  ['scope with suffix', `0::/system.slice/docker-${A}.scopex\n`, ALL, none],
  ['empty file', '', ALL, none],
  ['garbage bytes', '\u0000\u00ff\ufffd:::/docker\n\n:/docker/x\n', ALL, none],
  ['missing hierarchy id', `:pids:/docker/${A}\n`, ALL, none],
  ['non-numeric hierarchy id', `x:pids:/docker/${A}\n`, ALL, none],
  ['relative path', `4:pids:docker/${A}\n`, ALL, none],
  ['v2 line with controllers', `0:pids:/docker/${A}\n`, ALL, none],
  ['v1 line without controllers', `4::/docker/${A}\n`, ALL, none],
  ['leading space', ` 0::/docker/${A}\n`, ALL, none],
  ['malformed line beside a good one', `garbage\n0::/docker/${C}\n`, DOCKER, container(C)],
];

describe('containerFromCgroup', () => {
  it.each(rows)('%s', (_name, text, runtimes, expected) => {
    expect(containerFromCgroup(text, cgroupPatterns(runtimes))).toEqual(expected);
  });
});

/** A bus that answers GetConnectionCredentials from a table and counts the calls. */
class FakeBus {
  calls: string[] = [];
  creds = new Map<string, Credentials | Error>();
  gate: Promise<void> | undefined;
  async getCredentials(name: string): Promise<Credentials> {
    this.calls.push(name);
    if (this.gate) await this.gate;
    const c = this.creds.get(name);
    if (c === undefined) throw new RemoteError('org.freedesktop.DBus.Error.NameHasNoOwner', `Could not get credentials of name '${name}': no such name`);
    if (c instanceof Error) throw c;
    return c;
  }
}

/** A logger that keeps its records, to check that failures are logged with their reason. */
function recordingLogger(): { logger: Logger; records: Array<{ level: string; reason?: string; msg: string }> } {
  const records: Array<{ level: string; reason?: string; msg: string }> = [];
  const logger = createLogger({ level: 'debug', stream: { write: (line: string) => void records.push(JSON.parse(line) as { level: string; msg: string }) } });
  return { logger, records };
}

describe('CallerIdentifier', () => {
  let root: string;
  let bus: FakeBus;
  const writeCgroup = (pid: number, text: string | Buffer): void => {
    mkdirSync(join(root, String(pid)), { recursive: true });
    writeFileSync(join(root, String(pid), 'cgroup'), text);
  };
  const make = (opts: { uidMap?: Record<string, string>; runtimes?: Runtime[]; parents?: string[]; cacheLimit?: number; logger?: Logger } = {}): CallerIdentifier =>
    new CallerIdentifier({
      bus,
      procRoot: root,
      runtimes: opts.runtimes ?? DOCKER,
      uidMap: opts.uidMap ?? {},
      ...(opts.parents === undefined ? {} : { dockerCgroupParents: opts.parents }),
      logger: opts.logger ?? silentLogger(),
      ...(opts.cacheLimit === undefined ? {} : { cacheLimit: opts.cacheLimit }),
    });

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'hmd-proc-'));
    bus = new FakeBus();
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('identifies a docker container from its cgroup', async () => {
    bus.creds.set(':1.5', { pid: 4242, uid: 0 });
    writeCgroup(4242, v1({ pids: `/docker/${A}`, memory: '/process_api/d64e12c86d2235249cbfdaee8087db40' }));
    await expect(make().identify(':1.5')).resolves.toEqual({ kind: 'container', cid: A, pid: 4242, uid: 0, via: 'cgroup' });
  });

  it('says a host process is not a container', async () => {
    bus.creds.set(':1.6', { pid: 100, uid: 1000 });
    writeCgroup(100, '0::/user.slice/user-1000.slice/session-3.scope\n');
    const id = await make().identify(':1.6');
    expect(id).toMatchObject({ kind: 'unknown', pid: 100, uid: 1000 });
    expect(id.kind === 'unknown' && id.reason).toMatch(/not in a container/);
  });

  it('caches per sender: a second identify neither asks the bus nor re-reads the file', async () => {
    bus.creds.set(':1.7', { pid: 200, uid: 0 });
    writeCgroup(200, `0::/docker/${A}\n`);
    const ident = make();
    const first = await ident.identify(':1.7');
    writeCgroup(200, `0::/docker/${B}\n`); // the PID got reused by another container's process
    expect(await ident.identify(':1.7')).toEqual(first);
    expect(bus.calls).toEqual([':1.7']);
  });

  it('forget() makes the next identify look again', async () => {
    bus.creds.set(':1.8', { pid: 300, uid: 0 });
    writeCgroup(300, `0::/docker/${A}\n`);
    const ident = make();
    expect(await ident.identify(':1.8')).toMatchObject({ cid: A });
    ident.forget(':1.8');
    expect(ident.size).toBe(0);
    writeCgroup(300, `0::/docker/${B}\n`);
    expect(await ident.identify(':1.8')).toMatchObject({ cid: B });
    expect(bus.calls).toEqual([':1.8', ':1.8']);
  });

  it('concurrent identify() of one sender share one lookup', async () => {
    bus.creds.set(':1.9', { pid: 400, uid: 0 });
    writeCgroup(400, `0::/docker/${A}\n`);
    let open!: () => void;
    bus.gate = new Promise((r) => (open = r));
    const ident = make();
    const pending = Array.from({ length: 10 }, () => ident.identify(':1.9'));
    open();
    const results = await Promise.all(pending);
    expect(bus.calls).toEqual([':1.9']);
    for (const r of results) expect(r).toEqual({ kind: 'container', cid: A, pid: 400, uid: 0, via: 'cgroup' });
  });

  it('a forget() during a lookup is not undone by the lookup finishing', async () => {
    bus.creds.set(':1.10', { pid: 401, uid: 0 });
    writeCgroup(401, `0::/docker/${A}\n`);
    let open!: () => void;
    bus.gate = new Promise((r) => (open = r));
    const ident = make();
    const p = ident.identify(':1.10');
    ident.forget(':1.10');
    open();
    await p;
    bus.gate = undefined;
    await ident.identify(':1.10');
    expect(bus.calls).toEqual([':1.10', ':1.10']);
  });

  it('a vanished process gives unknown with the reason, cached (the PID may be reused)', async () => {
    bus.creds.set(':1.11', { pid: 500, uid: 0 });
    const { logger, records } = recordingLogger();
    const ident = make({ logger });
    const id = await ident.identify(':1.11');
    expect(id).toMatchObject({ kind: 'unknown', pid: 500, uid: 0 });
    expect(id.kind === 'unknown' && id.reason).toMatch(/process 500 .* is gone .*ENOENT/);
    expect(records.some((r) => r.level === 'warn' && r.reason?.includes('ENOENT'))).toBe(true);
    writeCgroup(500, `0::/docker/${A}\n`); // an unrelated process got PID 500
    expect(await ident.identify(':1.11')).toEqual(id);
    expect(bus.calls).toHaveLength(1);
  });

  it('a read error that may pass (here EISDIR, as root cannot get EACCES) is not cached', async () => {
    bus.creds.set(':1.13', { pid: 601, uid: 0 });
    mkdirSync(join(root, '601', 'cgroup'), { recursive: true });
    const ident = make();
    const id = await ident.identify(':1.13');
    expect(id.kind === 'unknown' && id.reason).toMatch(/cannot read .*601\/cgroup: EISDIR/);
    rmSync(join(root, '601', 'cgroup'), { recursive: true });
    writeCgroup(601, `0::/docker/${A}\n`);
    expect(await ident.identify(':1.13')).toMatchObject({ kind: 'container', cid: A });
  });

  it('an oversized cgroup file is refused', async () => {
    bus.creds.set(':1.14', { pid: 602, uid: 0 });
    writeCgroup(602, `0::/docker/${A}\n${'9:pids:/x\n'.repeat(CGROUP_READ_LIMIT / 10 + 1)}`);
    const id = await make().identify(':1.14');
    expect(id.kind === 'unknown' && id.reason).toMatch(/larger than 65536 bytes/);
  });

  it('garbage bytes in the file mean no container', async () => {
    bus.creds.set(':1.15', { pid: 603, uid: 0 });
    writeCgroup(603, Buffer.from([0xff, 0xfe, 0x00, 0x3a, 0x3a, 0x2f, 0x80, 0x0a]));
    expect(await make().identify(':1.15')).toMatchObject({ kind: 'unknown', pid: 603 });
  });

  it('a caller that left the bus gives unknown, cached', async () => {
    const ident = make();
    const id = await ident.identify(':1.16');
    expect(id).toEqual({ kind: 'unknown', reason: 'caller :1.16 left the bus before it could be identified' });
    await ident.identify(':1.16');
    expect(bus.calls).toHaveLength(1);
  });

  it('any other credentials error gives unknown and is retried next time', async () => {
    bus.creds.set(':1.17', new Error('timed out'));
    const ident = make();
    const id = await ident.identify(':1.17');
    expect(id.kind === 'unknown' && id.reason).toMatch(/cannot get the credentials of :1.17: timed out/);
    bus.creds.set(':1.17', { pid: 700, uid: 0 });
    writeCgroup(700, `0::/docker/${A}\n`);
    expect(await ident.identify(':1.17')).toMatchObject({ kind: 'container', cid: A });
  });

  it('nonsense credentials give unknown', async () => {
    bus.creds.set(':1.18', { pid: 0, uid: -1 });
    expect(await make().identify(':1.18')).toMatchObject({ kind: 'unknown' });
  });

  it('two containers in one cgroup file: unknown, logged as a warning', async () => {
    bus.creds.set(':1.19', { pid: 800, uid: 0 });
    writeCgroup(800, v1({ pids: `/docker/${A}` }, `/docker/${B}`));
    const { logger, records } = recordingLogger();
    const id = await make({ logger }).identify(':1.19');
    expect(id.kind === 'unknown' && id.reason).toContain('several containers');
    expect(records.some((r) => r.level === 'warn' && r.reason?.includes(A) && r.reason.includes(B))).toBe(true);
  });

  it('the uid map identifies a container whose cgroup says nothing', async () => {
    bus.creds.set(':1.20', { pid: 900, uid: 7777775 });
    writeCgroup(900, v1({}));
    const id = await make({ uidMap: { '7777775': C } }).identify(':1.20');
    expect(id).toEqual({ kind: 'container', cid: C, pid: 900, uid: 7777775, via: 'uidmap' });
  });

  it('an unmapped uid with a silent cgroup is not a container', async () => {
    bus.creds.set(':1.21', { pid: 901, uid: 7777776 });
    writeCgroup(901, v1({}));
    expect(await make({ uidMap: { '7777775': C } }).identify(':1.21')).toMatchObject({ kind: 'unknown' });
  });

  it('cgroup and uid map agreeing: the cgroup is the proof', async () => {
    bus.creds.set(':1.22', { pid: 902, uid: 7777775 });
    writeCgroup(902, `0::/docker/${C}\n`);
    expect(await make({ uidMap: { '7777775': C } }).identify(':1.22')).toMatchObject({ kind: 'container', cid: C, via: 'cgroup' });
  });

  it('cgroup and uid map disagreeing: unknown, logged', async () => {
    bus.creds.set(':1.23', { pid: 903, uid: 7777775 });
    writeCgroup(903, `0::/docker/${A}\n`);
    const { logger, records } = recordingLogger();
    const id = await make({ uidMap: { '7777775': C }, logger }).identify(':1.23');
    expect(id).toMatchObject({ kind: 'unknown', pid: 903, uid: 7777775 });
    expect(id.kind === 'unknown' && id.reason).toContain(`mapped to ${C}`);
    expect(records.some((r) => r.level === 'warn' && r.reason?.includes(C))).toBe(true);
  });

  it('podman is recognised only when configured', async () => {
    bus.creds.set(':1.24', { pid: 904, uid: 0 });
    writeCgroup(904, `0::/machine.slice/libpod-${A}.scope/container\n`);
    expect(await make().identify(':1.24')).toMatchObject({ kind: 'unknown' });
    expect(await make({ runtimes: ['docker', 'podman'] }).identify(':1.24')).toMatchObject({ kind: 'container', cid: A });
  });

  it('docker --cgroup-parent: containers under a configured parent, both drivers, anchored', async () => {
    bus.creds.set(':1.30', { pid: 910, uid: 0 });
    bus.creds.set(':1.31', { pid: 911, uid: 0 });
    bus.creds.set(':1.32', { pid: 912, uid: 0 });
    writeCgroup(910, v1({ pids: `/hub-apps/${A}` }));
    writeCgroup(911, `0::/hub.slice/docker-${B}.scope\n`);
    // The same name further down (e.g. inside a user's delegated subtree) proves nothing.
    writeCgroup(912, `0::/user.slice/user-1000.slice/hub-apps/${C}\n`);
    expect(await make().identify(':1.30')).toMatchObject({ kind: 'unknown' });
    const id = make({ parents: ['/hub-apps', '/hub.slice'] });
    expect(await id.identify(':1.30')).toMatchObject({ kind: 'container', cid: A });
    expect(await id.identify(':1.31')).toMatchObject({ kind: 'container', cid: B });
    expect(await id.identify(':1.32')).toMatchObject({ kind: 'unknown' });
  });

  it('the cache is bounded, least recently used first out', async () => {
    for (let i = 0; i < 4; i++) {
      bus.creds.set(`:1.${100 + i}`, { pid: 1000 + i, uid: 0 });
      writeCgroup(1000 + i, `0::/docker/${A}\n`);
    }
    const ident = make({ cacheLimit: 2 });
    await ident.identify(':1.100');
    await ident.identify(':1.101');
    await ident.identify(':1.100'); // now :1.101 is the oldest
    await ident.identify(':1.102');
    expect(ident.size).toBe(2);
    bus.calls = [];
    await ident.identify(':1.100');
    expect(bus.calls).toEqual([]);
    await ident.identify(':1.101');
    expect(bus.calls).toEqual([':1.101']);
  });

  it('rejects a bad configuration', () => {
    expect(() => make({ uidMap: { abc: C } })).toThrow(/decimal uid/);
    expect(() => make({ uidMap: { '1000': A.toUpperCase() } })).toThrow(/64-hex/);
    expect(() => make({ runtimes: ['lxc' as Runtime] })).toThrow();
    for (const bad of ['hub-apps', '/', '/hub/', '/user.slice', '/user.slice/x', '/a/../b', '/a b', '/a/.*']) {
      expect(() => make({ parents: [bad] }), bad).toThrow();
    }
    expect(() => make({ parents: ['/hub-apps', '/machine.slice/hub@1.service'] })).not.toThrow();
  });
});
