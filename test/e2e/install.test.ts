import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/schema.js';
import { cleanupDirs, daemonDirs, eventually } from './support/daemon.js';
import { REPO, startPrivateBus } from './support/dbus.js';
import { nextSeqnum, usbDevice } from './support/events.js';

// Installs into DESTDIR trees and a scratch dpkg root: nothing here touches the live system.

const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const UNIT = 'usr/lib/systemd/system/veea-hmd.service';
const POLICY = 'io.veea.VeeaHub.HardwareMonitoringDaemon.conf';
const rulesFiles = readdirSync(join(REPO, 'udev-rules')).filter((f) => f.endsWith('.rules'));
const xmlFiles = readdirSync(join(REPO, 'dbus')).filter((f) => f.endsWith('.xml'));

/** The configuration file of DESIGN A3, verbatim. */
const A3_CONFIG = {
  bus: 'system',
  spoolDir: '/run/veea-hmd/spool',
  stateDir: '/var/lib/veea-hmd',
  keystore: { sourceDir: '/var/lib/veea/keystore/{cid}', storeDir: '/var/lib/veea-hmd/keystore', keyFile: '/etc/veea-hmd/keystore.key', limitBytes: 131072 },
  delivery: { timeoutMs: 5000 },
  devices: { subsystems: ['usb', 'tty', 'block', 'hidraw', 'video4linux', 'sound'], coldplug: true },
};

const have = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const blocker =
  process.getuid?.() !== 0 ? 'install tests need root (files owned by root, dpkg into a scratch root)'
  : !have('dpkg-deb') || !have('dpkg') ? 'dpkg/dpkg-deb are not installed'
  : null;
if (blocker) console.warn(`SKIPPING install tests: ${blocker}`);

function run(cmd: string, args: string[], env: Record<string, string> = {}, cwd = REPO): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 120_000 });
}
function ok(r: SpawnSyncReturns<string>): SpawnSyncReturns<string> {
  if (r.status !== 0) throw new Error(`exit ${r.status}: ${r.stderr}${r.stdout}`);
  return r;
}
const install = (destdir: string, env: Record<string, string> = {}): SpawnSyncReturns<string> =>
  ok(run(join(REPO, 'scripts/install.sh'), ['install'], { DESTDIR: destdir, ...env }));
const mode = (p: string): number => lstatSync(p).mode & 0o7777;

/** Every path under root, relative, directories included, root itself excluded. */
function walk(root: string, dir = root): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? [relative(root, p), ...walk(root, p)] : [relative(root, p)];
  });
}

const temps: string[] = [];
const temp = (name: string): string => {
  const d = mkdtempSync(join(tmpdir(), `hmd-install-${name}-`));
  temps.push(d);
  return d;
};

describe.skipIf(blocker !== null)('install', () => {
  let dest = '';
  let firstRun: SpawnSyncReturns<string>;

  beforeAll(() => {
    if (!existsSync(join(REPO, 'dist/main.js'))) {
      ok(run('sh', ['-c', `${join(REPO, 'node_modules/.bin/tsc')} -p tsconfig.build.json && chmod +x dist/main.js`]));
    }
    dest = temp('dest');
    firstRun = install(dest);
  });
  afterAll(() => {
    for (const d of temps) rmSync(d, { recursive: true, force: true });
  });

  describe('make install DESTDIR=…', () => {
    it('puts every contract path of DESIGN A3 and the layout in place, with its mode', () => {
      const same = (installed: string, source: string, m: number): void => {
        expect(statSync(join(dest, installed)).mode & 0o7777, installed).toBe(m);
        expect(readFileSync(join(dest, installed), 'utf8'), installed).toBe(readFileSync(join(REPO, source), 'utf8'));
      };
      same('usr/libexec/veea-hmd/hmd-uevent', 'udev-rules/hmd-uevent', 0o755);
      expect(rulesFiles.length).toBeGreaterThan(0);
      for (const r of rulesFiles) {
        same(`usr/lib/udev/rules.d/${r}`, `udev-rules/${r}`, 0o644);
        expect(readFileSync(join(dest, 'usr/lib/udev/rules.d', r), 'utf8')).toContain('/usr/libexec/veea-hmd/hmd-uevent');
      }
      same(`usr/share/dbus-1/system.d/${POLICY}`, `dbus/${POLICY}`, 0o644);
      expect(xmlFiles).toEqual(expect.arrayContaining(['io.veea.VeeaHub.HardwareMonitoringDaemon.Container.xml', 'io.veea.VeeaHub.HardwareMonitoringAgent.Events.xml']));
      for (const x of xmlFiles) same(`usr/share/dbus-1/interfaces/${x}`, `dbus/${x}`, 0o644);
      // The program looks for its data under its own folder first: relative links to the above.
      for (const f of [...xmlFiles, POLICY]) same(`usr/lib/veea-hmd/dbus/${f}`, `dbus/${f}`, 0o644);
      expect(readlinkSync(join(dest, 'usr/lib/veea-hmd/udev-rules/hmd-uevent'))).toBe('../../../libexec/veea-hmd/hmd-uevent');
      same(UNIT, 'systemd/veea-hmd.service', 0o644);
      same('usr/lib/tmpfiles.d/veea-hmd.conf', 'systemd/veea-hmd.tmpfiles', 0o644);
      same('usr/lib/veea-hmd/package.json', 'package.json', 0o644);
      same('usr/lib/veea-hmd/dist/main.js', 'dist/main.js', 0o755);
      expect(mode(join(dest, 'usr/bin/hmd'))).toBe(0o755);
      expect(mode(join(dest, 'etc/veea-hmd'))).toBe(0o700);
      expect(mode(join(dest, 'etc/veea-hmd/config.json'))).toBe(0o644);
      expect(mode(join(dest, 'etc/veea-hmd/keystore.key'))).toBe(0o600);
      expect(statSync(join(dest, 'etc/veea-hmd/keystore.key')).size).toBe(32);
      // Nothing group- or world-writable anywhere in the tree.
      expect(walk(dest).filter((p) => !lstatSync(join(dest, p)).isSymbolicLink() && (mode(join(dest, p)) & 0o022) !== 0)).toEqual([]);
    });

    it('ships the production dependencies and none of the development ones', () => {
      const nm = join(dest, 'usr/lib/veea-hmd/node_modules');
      for (const dep of Object.keys(pkg.dependencies)) expect(existsSync(join(nm, dep, 'package.json')), dep).toBe(true);
      for (const dep of Object.keys(pkg.devDependencies)) expect(existsSync(join(nm, dep)), dep).toBe(false);
      expect(existsSync(join(nm, '.bin'))).toBe(false);
    });

    it('writes a default config that shows every key of DESIGN A3 with its default', () => {
      const raw: unknown = JSON.parse(readFileSync(join(dest, 'etc/veea-hmd/config.json'), 'utf8'));
      expect(raw).toEqual(A3_CONFIG);
      expect(parseConfig(raw)).toEqual(defaultConfig());
    });

    it('leaves the running system alone when DESTDIR is set', () => {
      expect(firstRun.stderr).toContain('DESTDIR is set, so udev, D-Bus and systemd were not reloaded');
    });

    it('keeps a modified config and the existing key on a second install', () => {
      const config = join(dest, 'etc/veea-hmd/config.json');
      const key = readFileSync(join(dest, 'etc/veea-hmd/keystore.key'));
      writeFileSync(config, '{"bus":"session"}\n');
      const again = install(dest);
      expect(again.stderr).toContain('kept the existing /etc/veea-hmd/config.json');
      expect(readFileSync(config, 'utf8')).toBe('{"bus":"session"}\n');
      expect(readFileSync(join(dest, 'etc/veea-hmd/keystore.key'))).toEqual(key);
    });

    it('runs the installed hmd from the DESTDIR tree, also through a symlink', () => {
      const elsewhere = temp('cwd');
      symlinkSync(join(dest, 'usr/bin/hmd'), join(elsewhere, 'hmd'));
      for (const launcher of [join(dest, 'usr/bin/hmd'), join(elsewhere, 'hmd')]) {
        const r = run(launcher, ['--help'], {}, elsewhere);
        expect(r.status, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/\bdaemon\b/);
        expect(r.stdout).toMatch(/\bstatus\b/);
      }
    });

    it('serves from the DESTDIR tree alone: installed helper -> installed daemon -> installed hmd status', async () => {
      const bus = await startPrivateBus();
      const dirs = daemonDirs();
      // A folder outside the repository, so nothing resolves against the checkout.
      const cwd = temp('serve');
      const daemon = spawn(join(dest, 'usr/bin/hmd'), ['daemon', '--bus', bus.address, '--config', dirs.configFile], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      daemon.stdout.on('data', (b: Buffer) => (out += b.toString()));
      daemon.stderr.on('data', (b: Buffer) => (out += b.toString()));
      const status = (): { containers: unknown[]; devices: Array<{ id: string }> } | null => {
        const r = run(join(dest, 'usr/bin/hmd'), ['status', '--bus', bus.address, '--json'], {}, cwd);
        return r.status === 0 ? (JSON.parse(r.stdout) as { containers: unknown[]; devices: Array<{ id: string }> }) : null;
      };
      try {
        await eventually(() => out.includes('"serving"') || daemon.exitCode !== null, 20_000, 'the installed daemon to serve or exit');
        expect(out, 'daemon output').toContain('"serving"');
        expect(status()).toMatchObject({ containers: [], devices: [] });
        const dev = usbDevice(1);
        const env = { ...dev, ACTION: 'add', SEQNUM: nextSeqnum().toString(), HMD_SPOOL_DIR: dirs.spoolDir, PATH: '/usr/bin:/bin' };
        expect(spawnSync(join(dest, 'usr/libexec/veea-hmd/hmd-uevent'), [], { env }).status).toBe(0);
        await eventually(() => status()?.devices.some((d) => d.id === dev.DEVPATH), 20_000, 'the plugged device in hmd status');
      } finally {
        daemon.kill('SIGTERM');
        await new Promise((r) => (daemon.exitCode !== null || daemon.signalCode !== null ? r(null) : daemon.once('exit', r)));
        await bus.stop();
        cleanupDirs(dirs);
      }
    });

    it('says clearly when Node.js is missing', () => {
      const r = run(join(dest, 'usr/bin/hmd'), ['--help'], { HMD_NODE: 'no-such-node' });
      expect(r.status).toBe(127);
      expect(r.stderr).toContain('Node.js >= 20 is needed');
    });

    it('honours PREFIX and SYSCONFDIR in the launcher, rules, unit and config', () => {
      const d = temp('prefix');
      install(d, { PREFIX: '/usr/local', SYSCONFDIR: '/opt/etc' });
      expect(readFileSync(join(d, UNIT), 'utf8')).toContain('ExecStart=/usr/local/bin/hmd daemon --config /opt/etc/veea-hmd/config.json');
      for (const r of rulesFiles) expect(readFileSync(join(d, 'usr/lib/udev/rules.d', r), 'utf8')).toContain('/usr/local/libexec/veea-hmd/hmd-uevent');
      expect(mode(join(d, 'usr/local/libexec/veea-hmd/hmd-uevent'))).toBe(0o755);
      const cfg = parseConfig(JSON.parse(readFileSync(join(d, 'opt/etc/veea-hmd/config.json'), 'utf8')));
      expect(cfg.keystore.keyFile).toBe('/opt/etc/veea-hmd/keystore.key');
      expect(statSync(join(d, 'opt/etc/veea-hmd/keystore.key')).size).toBe(32);
      expect(ok(run(join(d, 'usr/local/bin/hmd'), ['--help'])).stdout).toMatch(/\bdaemon\b/);
    });

    it('uninstalls, keeping config and key unless PURGE=1', () => {
      const d = temp('uninstall');
      install(d);
      ok(run(join(REPO, 'scripts/install.sh'), ['uninstall'], { DESTDIR: d }));
      expect(walk(d).filter((p) => !lstatSync(join(d, p)).isDirectory()).sort()).toEqual(['etc/veea-hmd/config.json', 'etc/veea-hmd/keystore.key']);
      ok(run(join(REPO, 'scripts/install.sh'), ['uninstall'], { DESTDIR: d, PURGE: '1' }));
      expect(existsSync(join(d, 'etc/veea-hmd'))).toBe(false);
    });

    it('is what `make install` and `make uninstall` run, with the variables passed on', () => {
      const r = ok(run('make', ['-n', 'install', 'uninstall', 'DESTDIR=/x', 'PREFIX=/p', 'SYSCONFDIR=/e']));
      expect(r.stdout).toContain('DESTDIR="/x" PREFIX="/p" SYSCONFDIR="/e" PURGE="0" ./scripts/install.sh install');
      expect(r.stdout).toContain('./scripts/install.sh uninstall');
    });
  });

  describe('systemd unit and tmpfiles entry', () => {
    const unit = (): string => readFileSync(join(REPO, 'systemd/veea-hmd.service'), 'utf8');

    it('declares what issue 6 asks of the service', () => {
      const lines = new Set(unit().split('\n').map((l) => l.trim()));
      for (const l of [
        'Type=dbus', 'BusName=io.veea.VeeaHub.HardwareMonitoringDaemon', 'ExecStart=/usr/bin/hmd daemon --config /etc/veea-hmd/config.json',
        'Restart=on-failure', 'StateDirectory=veea-hmd', 'RuntimeDirectory=veea-hmd', 'RuntimeDirectoryPreserve=yes',
        'ProtectSystem=strict', 'ReadWritePaths=/run/veea-hmd /var/lib/veea-hmd -/etc/veea-hmd', 'ProtectHome=yes', 'PrivateTmp=yes',
        'NoNewPrivileges=yes', 'RestrictAddressFamilies=AF_UNIX AF_NETLINK', 'SystemCallArchitectures=native', 'LockPersonality=yes',
        'After=dbus.service', 'WantedBy=multi-user.target',
      ]) expect(lines.has(l), l).toBe(true);
      expect(unit()).not.toMatch(/^MemoryDenyWriteExecute=/m);
    });

    it.skipIf(!have('systemd-analyze'))('passes systemd-analyze verify', () => {
      // verify checks that ExecStart's program exists: point it at the DESTDIR launcher (the only
      // change), since /usr/bin/hmd is not installed on this machine.
      const dir = temp('verify');
      writeFileSync(join(dir, 'veea-hmd.service'), readFileSync(join(dest, UNIT), 'utf8').replace('/usr/bin/hmd', join(dest, 'usr/bin/hmd')));
      const r = run('systemd-analyze', ['verify', join(dir, 'veea-hmd.service')]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toBe(''); // unknown keys and bad values are only warnings
    });

    it.skipIf(!have('systemd-tmpfiles'))('creates a private spool through tmpfiles.d', () => {
      const root = temp('tmpfiles');
      ok(run('systemd-tmpfiles', [`--root=${root}`, '--create', join(dest, 'usr/lib/tmpfiles.d/veea-hmd.conf')]));
      expect(mode(join(root, 'run/veea-hmd'))).toBe(0o755);
      expect(mode(join(root, 'run/veea-hmd/spool'))).toBe(0o700);
    });
  });

  describe('host reload steps (stub udevadm/systemctl, a real private dbus-daemon)', () => {
    function stubs(failing: string[] = []): { bin: string; log: string } {
      const bin = temp('stubs');
      const log = join(bin, 'calls.log');
      for (const tool of ['udevadm', 'systemctl', 'systemd-tmpfiles']) {
        writeFileSync(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >>${log}\nexit ${failing.includes(tool) ? 1 : 0}\n`);
        chmodSync(join(bin, tool), 0o755);
      }
      return { bin, log };
    }
    const reload = (bin: string, env: Record<string, string>, config: string): SpawnSyncReturns<string> =>
      ok(run('sh', ['-c', '. ./packaging/host.sh && hmd_create_spool && hmd_reload_host "$1"', 'sh', config], { PATH: `${bin}:${process.env.PATH ?? ''}`, ...env }));

    it('reloads udev, triggers the configured subsystems, reloads D-Bus and systemd', async () => {
      const { bin, log } = stubs();
      const config = join(temp('cfg'), 'config.json');
      writeFileSync(config, JSON.stringify({ devices: { subsystems: ['usb', 'tty'] } }));
      const bus = await startPrivateBus();
      try {
        const r = reload(bin, { HMD_SYSTEMD_RUNDIR: bin, HMD_DBUS_SOCKET: join(bus.dir, 'bus.sock') }, config);
        expect(r.stderr).toBe('');
      } finally {
        await bus.stop();
      }
      expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual([
        'systemd-tmpfiles --create veea-hmd.conf',
        'udevadm control --reload',
        'udevadm trigger --action=add --subsystem-match=usb --subsystem-match=tty',
        'systemctl daemon-reload',
      ]);
    });

    it('skips, with a message, what is not running', () => {
      const { bin, log } = stubs(['udevadm']);
      const r = reload(bin, { HMD_SYSTEMD_RUNDIR: join(bin, 'absent'), HMD_DBUS_SOCKET: join(bin, 'absent.sock') }, '/nonexistent.json');
      expect(r.stderr).toContain('udevd is not running');
      expect(r.stderr).toContain('skipping D-Bus reload');
      expect(r.stderr).toContain('systemd is not running');
      expect(readFileSync(log, 'utf8')).not.toContain('trigger');
      expect(readFileSync(log, 'utf8')).not.toContain('systemctl');
    });
  });

  describe('make deb', () => {
    let deb = '';
    const arch = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout.trim();

    beforeAll(() => {
      const out = temp('deb');
      deb = ok(run(join(REPO, 'scripts/build-deb.sh'), [out])).stdout.trim().split('\n').pop() ?? '';
    });

    it('builds veea-hmd_<version>_<arch>.deb with the control fields', () => {
      expect(basename(deb)).toBe(`veea-hmd_${pkg.version.replace(/-/g, '~')}_${arch}.deb`);
      const field = (f: string): string => ok(run('dpkg-deb', ['-f', deb, f])).stdout.trim();
      expect(field('Package')).toBe('veea-hmd');
      expect(field('Architecture')).toBe(arch);
      expect(field('Depends')).toBe('dbus, udev');
      expect(ok(run('dpkg-deb', ['-I', deb, 'conffiles'])).stdout.trim()).toBe('/etc/veea-hmd/config.json');
    });

    it('contains exactly the install layout, root-owned, without a keystore key', () => {
      const listing = ok(run('dpkg-deb', ['-c', deb])).stdout.trim().split('\n');
      const entries = new Map(listing.map((l) => {
        const [perms, owner, , , , ...name] = l.split(/\s+/);
        return [name.join(' ').replace(/^\.\//, '').replace(/\/$/, '').replace(/ -> .*$/, ''), { perms, owner }];
      }));
      entries.delete('');
      const expected = walk(dest).filter((p) => p !== 'etc/veea-hmd/keystore.key').sort();
      expect([...entries.keys()].sort()).toEqual(expected);
      expect([...entries.values()].filter((e) => e.owner !== 'root/root')).toEqual([]);
      expect(entries.get('usr/libexec/veea-hmd/hmd-uevent')?.perms).toBe('-rwxr-xr-x');
      expect(entries.get('usr/bin/hmd')?.perms).toBe('-rwxr-xr-x');
      expect(entries.get('etc/veea-hmd')?.perms).toBe('drwx------');
      expect(entries.get(`usr/share/dbus-1/system.d/${POLICY}`)?.perms).toBe('-rw-r--r--');
    });

    it('installs into a scratch root only with Node.js, then removes (keeping data) and purges', () => {
      const root = temp('root');
      for (const d of ['info', 'updates', 'triggers']) mkdirSync(join(root, 'var/lib/dpkg', d), { recursive: true });
      writeFileSync(join(root, 'var/lib/dpkg/status'), '');
      const live = ['/etc/veea-hmd', '/usr/lib/veea-hmd', '/run/veea-hmd', '/var/lib/veea-hmd'].map((p) => [p, existsSync(p)] as const);
      // --force-script-chrootless: the scratch root has no shell to chroot into; the maintainer
      // scripts then work on $DPKG_ROOT and leave the live system alone.
      const dpkg = (...args: string[]): SpawnSyncReturns<string> =>
        run('dpkg', [`--root=${root}`, `--log=${join(root, 'dpkg.log')}`, '--force-not-root', '--force-depends', '--force-script-chrootless', ...args]);
      const status = (): string => ok(dpkg('-s', 'veea-hmd')).stdout.match(/^Status: (.*)$/m)?.[1] ?? '';

      const refused = dpkg('-i', deb);
      expect(refused.status).not.toBe(0);
      expect(refused.stderr).toContain('Node.js >= ');
      expect(existsSync(join(root, 'usr/lib/veea-hmd'))).toBe(false);

      mkdirSync(join(root, 'usr/bin'), { recursive: true });
      symlinkSync(process.execPath, join(root, 'usr/bin/node'));
      ok(dpkg('-i', deb));
      expect(status()).toBe('install ok installed');
      expect(mode(join(root, 'etc/veea-hmd/keystore.key'))).toBe(0o600);
      expect(statSync(join(root, 'etc/veea-hmd/keystore.key')).size).toBe(32);
      expect(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/veea-hmd.service'))).toBe('/usr/lib/systemd/system/veea-hmd.service');
      expect(ok(run(join(root, 'usr/bin/hmd'), ['--help'])).stdout).toMatch(/\bdaemon\b/);

      mkdirSync(join(root, 'var/lib/veea-hmd'), { recursive: true });
      writeFileSync(join(root, 'var/lib/veea-hmd/devices.json'), '{}');
      const key = readFileSync(join(root, 'etc/veea-hmd/keystore.key'));
      ok(dpkg('-r', 'veea-hmd'));
      expect(status()).toBe('deinstall ok config-files');
      expect(existsSync(join(root, 'usr/lib/veea-hmd'))).toBe(false);
      expect(existsSync(join(root, 'usr/bin/hmd'))).toBe(false);
      expect(existsSync(join(root, 'var/lib/veea-hmd/devices.json'))).toBe(true);
      expect(readFileSync(join(root, 'etc/veea-hmd/keystore.key'))).toEqual(key);
      expect(existsSync(join(root, 'etc/veea-hmd/config.json'))).toBe(true);

      ok(dpkg('-P', 'veea-hmd'));
      expect(dpkg('-s', 'veea-hmd').status).not.toBe(0);
      for (const p of ['etc/veea-hmd', 'var/lib/veea-hmd', 'etc/systemd/system/multi-user.target.wants/veea-hmd.service']) {
        expect(lstatExists(join(root, p)), p).toBe(false);
      }
      expect(live.map(([p]) => [p, existsSync(p)])).toEqual(live);
    });
  });
});

function lstatExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
