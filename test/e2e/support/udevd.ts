/**
 * A real udev for tests, kept away from the host: `udevadm test` and `systemd-udevd` run in a
 * private mount namespace where
 *   - /usr/lib/udev/rules.d and /etc/udev/rules.d are empty (the distribution's rules stay out),
 *   - /run is a fresh tmpfs whose /run/udev/rules.d holds the rules under test, their RUN
 *     rewritten to the helper under test, and whose /run/veea-hmd/spool is the test's spool dir
 *     (a RUN program gets the device's properties as environment, not udevd's: HMD_SPOOL_DIR
 *     cannot be passed, so the default path is bound instead),
 *   - /dev is a fresh tmpfs with null/zero/full/random/urandom, so udev's node handling
 *     (permissions, /dev/char links) touches nothing of the host's,
 * and the udev database and control socket live in that private /run. Kernel uevents are global:
 * a daemon started here sees every uevent of the machine while it runs, so daemons started
 * through this module take a lock and run one at a time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { HELPER_INSTALL_PATH } from '../../../src/constants.js';
import { packageRoot } from '../../../src/paths.js';

export const REPO_RULES_DIR = join(packageRoot(), 'udev-rules');
export const REPO_HELPER = join(REPO_RULES_DIR, 'hmd-uevent');
const LOCK_FILE = join(tmpdir(), 'veea-hmd-test-udevd.lock');

export const UDEVD_PATH = ['/lib/systemd/systemd-udevd', '/usr/lib/systemd/systemd-udevd'].find((p) => existsSync(p)) ?? null;

const hasCommand = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Whether this machine can run the namespace tests, and why not. */
export function udevAvailability(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (mount namespaces, tmpfs mounts)' };
  for (const cmd of ['udevadm', 'unshare', 'nsenter', 'flock', 'mount']) {
    if (!hasCommand(cmd)) return { ok: false, reason: `${cmd} not installed (Debian packages udev, util-linux, mount)` };
  }
  if (UDEVD_PATH === null) return { ok: false, reason: 'systemd-udevd not installed (Debian package udev)' };
  if (!existsSync('/sys/class/tty/ttyS0/uevent')) return { ok: false, reason: 'no /sys/class/tty/ttyS0 to trigger' };
  return { ok: true };
}

/** True when this udevadm has the `verify` subcommand (udev 253 and later). */
export function udevadmHasVerify(): boolean {
  const r = spawnSync('udevadm', ['--help'], { encoding: 'utf8' });
  return /^\s+verify\s/m.test(r.stdout);
}

export interface UdevNamespaceOptions {
  /** Folder whose *.rules are installed (default: the repository's udev-rules/). */
  rulesDir?: string;
  /** What the rules' RUN calls instead of the installed helper (default: the repository's). */
  helperPath?: string;
  /** Bound over /run/veea-hmd/spool inside the namespace (default: an empty temporary folder). */
  spoolDir?: string;
}

const NS_SCRIPT = `set -eu
work=$1 spool=$2
shift 2
echo $$ >"$work/pid"
mount -t tmpfs -o mode=0755 tmpfs "$work/dev"
for n in null zero full random urandom; do cp -a "/dev/$n" "$work/dev/"; done
mount --move "$work/dev" /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/udev/rules.d /run/veea-hmd/spool
cp "$work"/rules/*.rules /run/udev/rules.d/
mount --bind "$spool" /run/veea-hmd/spool
empty=""
for d in /usr/lib/udev/rules.d /lib/udev/rules.d /usr/local/lib/udev/rules.d /etc/udev/rules.d; do
  [ -d "$d" ] || continue
  real=$(readlink -f "$d")
  case " $empty " in *" $real "*) continue ;; esac
  mount -t tmpfs -o ro,mode=0755 tmpfs "$real"
  empty="$empty $real"
done
exec "$@"
`;

interface Stage {
  work: string;
  spoolDir: string;
  cleanup(): void;
}

/** A work folder with the rewritten rules, the namespace script and a /dev mount point. */
function stage(opts: UdevNamespaceOptions): Stage {
  const work = mkdtempSync(join(tmpdir(), 'hmd-udev-'));
  const rulesDir = opts.rulesDir ?? REPO_RULES_DIR;
  const helper = opts.helperPath ?? REPO_HELPER;
  mkdirSync(join(work, 'rules'));
  mkdirSync(join(work, 'dev'));
  const rules = readdirSync(rulesDir).filter((f) => f.endsWith('.rules'));
  if (rules.length === 0) throw new Error(`no *.rules in ${rulesDir}`);
  for (const f of rules) {
    const text = readFileSync(join(rulesDir, f), 'utf8');
    writeFileSync(join(work, 'rules', f), text.split(HELPER_INSTALL_PATH).join(helper));
  }
  writeFileSync(join(work, 'ns.sh'), NS_SCRIPT);
  let spoolDir = opts.spoolDir;
  if (spoolDir === undefined) {
    spoolDir = join(work, 'spool');
    mkdirSync(spoolDir);
  }
  return { work, spoolDir, cleanup: () => rmSync(work, { recursive: true, force: true }) };
}

const nsArgs = (s: Stage, cmd: string[]): string[] => ['-m', '--propagation', 'private', 'sh', join(s.work, 'ns.sh'), s.work, s.spoolDir, ...cmd];

export interface UdevadmTestResult {
  status: number | null;
  stdout: string;
  stderr: string;
  /** The programs udev would RUN for the event. */
  runs: string[];
  /** The event's properties as udev computed them. */
  properties: Record<string, string>;
}

/** `udevadm test --action=ACTION SYSPATH` with the rules under test, in a private namespace. */
export function udevadmTest(opts: UdevNamespaceOptions & { syspath: string; action?: 'add' | 'remove' | 'change' }): UdevadmTestResult {
  const s = stage(opts);
  try {
    const r = spawnSync('unshare', nsArgs(s, ['udevadm', 'test', `--action=${opts.action ?? 'add'}`, opts.syspath]), { encoding: 'utf8', timeout: 30_000 });
    const lines = r.stdout.split('\n');
    const runs = lines.flatMap((l) => /^run: '(.*)'$/.exec(l)?.slice(1) ?? []);
    const properties = Object.fromEntries(lines.flatMap((l) => (/^[A-Z][A-Z0-9_]*=/.test(l) ? [[l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]] : [])));
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, runs, properties };
  } finally {
    s.cleanup();
  }
}

export interface PrivateUdevd {
  /** systemd-udevd's PID (in the host's PID namespace). */
  pid: number;
  spoolDir: string;
  logFile: string;
  /** Waits until udevd's queue is empty. */
  settle(): Promise<void>;
  /** Makes the kernel emit a real uevent for a sysfs device (`echo add > SYSPATH/uevent`). */
  trigger(syspath: string, action?: 'add' | 'remove' | 'change'): void;
  /** udevd's --debug log so far. */
  log(): string;
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function inNamespace(pid: number, cmd: string[], timeoutMs = 15_000): { status: number | null; output: string } {
  const r = spawnSync('nsenter', ['-t', String(pid), '-m', ...cmd], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** Starts systemd-udevd --debug in a private namespace and waits until it answers. */
export async function startPrivateUdevd(opts: UdevNamespaceOptions): Promise<PrivateUdevd> {
  if (UDEVD_PATH === null) throw new Error('systemd-udevd not installed');
  const s = stage(opts);
  const logFile = join(s.work, 'udevd.log');
  const logFd = openSync(logFile, 'a');
  // flock holds the lock for as long as udevd runs: one private udevd on the machine at a time.
  const child: ChildProcess = spawn('flock', ['-w', '55', LOCK_FILE, 'unshare', ...nsArgs(s, [UDEVD_PATH, '--debug', '--resolve-names=never'])], {
    stdio: ['ignore', logFd, logFd],
  });
  closeSync(logFd);
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const pidFile = join(s.work, 'pid');

  const fail = async (why: string): Promise<never> => {
    child.kill('SIGKILL');
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : 0;
    if (pid > 0) killQuietly(pid, 'SIGKILL');
    await Promise.race([exited, sleep(2000)]);
    const text = log();
    s.cleanup();
    throw new Error(`private systemd-udevd: ${why}\n${text.slice(-2000)}`);
  };

  const deadline = Date.now() + 60_000;
  let pid = 0;
  while (pid === 0) {
    if (gone) return fail('exited at start');
    if (Date.now() > deadline) return fail('did not start (lock held by another test?)');
    if (existsSync(pidFile)) pid = Number(readFileSync(pidFile, 'utf8'));
    else await sleep(20);
  }
  for (;;) {
    if (gone) return fail('exited at start');
    if (Date.now() > deadline) return fail('does not answer udevadm control --ping');
    if (inNamespace(pid, ['udevadm', 'control', '--ping', '--timeout=2']).status === 0) break;
    await sleep(50);
  }

  live.add(pid);
  let stopped = false;
  return {
    pid,
    spoolDir: s.spoolDir,
    logFile,
    settle: () => {
      const r = inNamespace(pid, ['udevadm', 'settle', '--timeout=10']);
      return r.status === 0 ? Promise.resolve() : Promise.reject(new Error(`udevadm settle: ${r.output}`));
    },
    trigger: (syspath, action = 'add') => writeFileSync(join(syspath, 'uevent'), action),
    log,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      live.delete(pid);
      killQuietly(pid, 'SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (!gone) {
        killQuietly(pid, 'SIGKILL');
        child.kill('SIGKILL');
        await exited;
      }
      // Keep the log for a failing test to print; the work folder goes with the rest.
      const text = log();
      s.cleanup();
      savedLogs.set(logFile, text);
    },
  };
}

// A test process that dies without stop() must not leave a udevd behind.
const live = new Set<number>();
process.once('exit', () => {
  for (const pid of live) killQuietly(pid, 'SIGKILL');
});

/** PIDs of the private udevds started here and not stopped yet. */
export const liveUdevdPids = (): number[] => [...live];

const savedLogs = new Map<string, string>();
/** The log of a stopped udevd (its work folder is gone). */
export const stoppedLog = (logFile: string): string => savedLogs.get(logFile) ?? '';

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Runs fn with a private udevd, always stopping it afterwards. */
export async function withPrivateUdevd<T>(opts: UdevNamespaceOptions, fn: (udevd: PrivateUdevd) => Promise<T>): Promise<T> {
  const udevd = await startPrivateUdevd(opts);
  try {
    return await fn(udevd);
  } finally {
    await udevd.stop();
  }
}

/** Parses a spool file (`env -0` format) into its properties. */
export function readSpoolFile(file: string): Record<string, string> {
  const records = readFileSync(file, 'utf8').split('\0');
  if (records[records.length - 1] === '') records.pop();
  return Object.fromEntries(records.map((r) => [r.slice(0, r.indexOf('=')), r.slice(r.indexOf('=') + 1)]));
}

export interface SpoolHit {
  name: string;
  properties: Record<string, string>;
}

/** Polls the spool folder until a (final, not dot-temp) file matches, or fails after timeoutMs. */
export async function waitForSpoolFile(spoolDir: string, match: (p: Record<string, string>, name: string) => boolean, timeoutMs = 10_000): Promise<SpoolHit> {
  const deadline = Date.now() + timeoutMs;
  const seen = new Set<string>();
  for (;;) {
    for (const name of readdirSync(spoolDir).sort()) {
      if (name.startsWith('.') || seen.has(name)) continue;
      seen.add(name);
      const properties = readSpoolFile(join(spoolDir, name));
      if (match(properties, name)) return { name, properties };
    }
    if (Date.now() > deadline) throw new Error(`no matching spool file in ${spoolDir} after ${timeoutMs} ms (saw: ${[...seen].join(', ') || 'none'})`);
    await sleep(25);
  }
}

/**
 * The whole round trip for one device: start a private udevd with the rules, make the kernel
 * emit `action` for `trigger` (a sysfs path), wait for the helper's spool file, stop udevd.
 */
export async function runUdevdTrigger(opts: UdevNamespaceOptions & { trigger: string; action?: 'add' | 'remove' | 'change'; timeoutMs?: number }): Promise<SpoolHit & { log: string; pid: number }> {
  const action = opts.action ?? 'add';
  const spoolDir = opts.spoolDir ?? mkdtempSync(join(tmpdir(), 'hmd-spool-'));
  let logFile = '';
  let pid = 0;
  try {
    const hit = await withPrivateUdevd({ ...opts, spoolDir }, async (udevd) => {
      logFile = udevd.logFile;
      pid = udevd.pid;
      await udevd.settle();
      udevd.trigger(opts.trigger, action);
      const kernel = basename(opts.trigger);
      try {
        return await waitForSpoolFile(spoolDir, (p) => p['ACTION'] === action && p['DEVPATH']?.endsWith(`/${kernel}`) === true, opts.timeoutMs ?? 10_000);
      } catch (err) {
        throw new Error(`${(err as Error).message}\nudevd log:\n${udevd.log().slice(-3000)}`);
      }
    });
    return { ...hit, log: stoppedLog(logFile), pid };
  } finally {
    if (opts.spoolDir === undefined) rmSync(spoolDir, { recursive: true, force: true });
  }
}
