/**
 * Shared pieces of the benchmarks: rows and percentiles, a private bus with a daemon on it,
 * fake containers made Ready in waves, spool files written the helper's way, /proc readings of
 * a process, and cleanup that runs even when a benchmark throws or the run is interrupted.
 */
import { Message, sessionBus, type MessageBus } from '@jellybrick/dbus-next';
import { execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BusConnection } from '../src/bus/types.js';
import { EVENTS_INTERFACE, agentObjectPath } from '../src/constants.js';
import { spoolName } from '../src/sources/spool-file.js';
import { REPO, startPrivateBus, type PrivateBus } from '../test/e2e/support/dbus.js';
import { FakeContainer, killAllContainers } from '../test/e2e/support/containers.js';
import { usbDevice } from '../test/e2e/support/events.js';
import { cleanupDirs, daemonDirs, eventually, getStatus, rootClient, startDaemon, unitEnvironment, type DaemonDirs, type DaemonProcess } from '../test/e2e/support/daemon.js';

/** One line of the results table. Latency rows carry percentiles; rate/ratio/size rows a value. */
export interface Row {
  /** Stable id the goals refer to (rows of the older modules have none). */
  key?: string;
  name: string;
  unit: string;
  p50?: number;
  p99?: number;
  max?: number;
  value?: number;
  /** Number of samples behind the figure. */
  n?: number;
}

export interface BenchContext {
  quick: boolean;
  /** When set, daemons run with `--cpu-prof` and write their profiles here. */
  profileDir: string | null;
  /** Extra node flags for the daemons (experiments, e.g. --max-semi-space-size=1). */
  daemonNodeArgs: string[];
  /** Figures measured earlier in this run that later benchmarks compare with. */
  baseline: { pipelinedCallsPerSec?: number; fanoutCallsPerSec?: number };
  log: (msg: string) => void;
}

/**
 * Milliseconds of CLOCK_MONOTONIC, the clock the fake containers stamp arrivals with: shared by
 * all processes of the host, unlike `performance.timeOrigin + now()`, whose wall-clock anchor
 * differs between processes started before and after a step of the system clock.
 */
export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/** Nearest-rank percentile of sorted samples. */
export function percentile(sorted: readonly number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? NaN;
}

export function summarize(key: string, name: string, samples: readonly number[], unit = 'ms'): Row {
  const s = [...samples].sort((a, b) => a - b);
  return { key, name, unit, n: s.length, p50: round3(percentile(s, 50)), p99: round3(percentile(s, 99)), max: round3(s[s.length - 1] ?? NaN) };
}

export function valueRow(key: string, name: string, value: number, unit: string, n?: number): Row {
  return { key, name, unit, value: round3(value), ...(n === undefined ? {} : { n }) };
}

export const median = (xs: readonly number[]): number => percentile([...xs].sort((a, b) => a - b), 50);

// ---------------------------------------------------------------------------------------------
// Cleanup: every resource a benchmark opens is registered here and released in reverse order,
// by the benchmark's own `finally` and, as a last resort, by run.ts on a signal or a crash.

const cleanups: Array<() => Promise<void> | void> = [];

export function onCleanup(fn: () => Promise<void> | void): () => Promise<void> {
  cleanups.push(fn);
  return async () => {
    const i = cleanups.lastIndexOf(fn);
    if (i >= 0) cleanups.splice(i, 1);
    await fn();
  };
}

export async function cleanupAll(): Promise<void> {
  await killAllContainers().catch(() => undefined);
  while (cleanups.length > 0) {
    const fn = cleanups.pop() as () => Promise<void> | void;
    try {
      await fn();
    } catch {
      // best effort: the next resource still gets released
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A daemon on a private bus.

export interface Env {
  bus: PrivateBus;
  dirs: DaemonDirs;
  daemon: DaemonProcess;
  root: BusConnection;
  close(): Promise<void>;
}

export async function startBus(): Promise<{ bus: PrivateBus; stopBus: () => Promise<void> }> {
  const bus = await startPrivateBus();
  return { bus, stopBus: onCleanup(() => bus.stop()) };
}

/** Warning and error lines the daemons logged (run.ts reports and clears them per benchmark). */
export const daemonWarnings: string[] = [];

/**
 * `hmd daemon` from dist/, as the e2e harness starts it but at log level info (debug logging
 * would be measured too) and with node flags of our own. Warnings and errors are kept for the
 * report; HMD_BENCH_DAEMON_LOG=FILE keeps everything the daemon prints (e.g. --trace-gc).
 */
function spawnDaemon(bus: PrivateBus, dirs: DaemonDirs, nodeArgs: string[]): Promise<DaemonProcess> {
  const keep = process.env['HMD_BENCH_DAEMON_LOG'];
  return startDaemon(bus, dirs, {
    nodeArgs,
    env: unitEnvironment(),
    logLevel: 'info',
    ...(keep !== undefined && keep !== '' ? { onOutput: (b: Buffer) => appendFileSync(keep, b) } : {}),
    keepLog: (l) => {
      const warn = l['level'] === 'warn' || l['level'] === 'error' || l['level'] === 'fatal';
      if (warn) daemonWarnings.push(`${String(l['level'])}: ${String(l['msg'])}`);
      return warn;
    },
  });
}

/**
 * A private bus, a daemon, and a root connection for status queries. With a profile dir the
 * daemon runs with `--cpu-prof` (the profile is written when it exits).
 */
export async function startEnv(ctx: BenchContext, config: Record<string, unknown> = {}): Promise<Env> {
  const { bus, stopBus } = await startBus();
  const dirs = daemonDirs(config);
  const releaseDirs = onCleanup(() => cleanupDirs(dirs));
  const nodeArgs = [...ctx.daemonNodeArgs, ...(ctx.profileDir === null ? [] : ['--cpu-prof', `--cpu-prof-dir=${ctx.profileDir}`])];
  const daemon = await spawnDaemon(bus, dirs, nodeArgs);
  const stopDaemon = onCleanup(async () => {
    await daemon.stop().catch(() => daemon.proc.kill('SIGKILL'));
  });
  const root = await rootClient(bus);
  const closeRoot = onCleanup(() => root.close());
  return {
    bus,
    dirs,
    daemon,
    root,
    close: async () => {
      await killAllContainers();
      await closeRoot();
      await stopDaemon();
      await releaseDirs();
      await stopBus();
    },
  };
}

export async function waitForDevices(env: Env, n: number, timeoutMs = 60_000): Promise<void> {
  await eventually(async () => (await getStatus(env.root)).devices.length === n, timeoutMs, `${n} devices in the daemon's table`);
}

// ---------------------------------------------------------------------------------------------
// The raw baseline: dbus-next used directly, no daemon in between (bench code may; src/ may not).

/** A raw dbus-next connection, with an error listener (a send on a dead socket must not crash us). */
export async function rawClient(address: string): Promise<{ bus: MessageBus; close: () => Promise<void> }> {
  const bus = sessionBus({ busAddress: address });
  const em = bus as unknown as { once(ev: string, fn: (...a: unknown[]) => void): void; on(ev: string, fn: (...a: unknown[]) => void): void };
  await new Promise<void>((resolve, reject) => {
    em.once('connect', () => resolve());
    em.once('error', reject);
  });
  em.on('error', () => undefined);
  return { bus, close: onCleanup(() => bus.disconnect()) };
}

/** The a{ss} the daemon would deliver for device `n`: udev's keys + ACTION, SEQNUM, HMD_SEQUENCE (16). */
export function deliveredProps(n: number, seq: number): Record<string, string> {
  return { ...usbDevice(n), ACTION: 'add', SEQNUM: String(1_000_000 + seq), HMD_SEQUENCE: String(seq) };
}

/** The call the daemon makes for an insert, made raw: Events.DeviceInserted(s, a{ss}) to `dest`. */
export function rawInsert(bus: MessageBus, dest: string, device: number, seq: number): Promise<unknown> {
  const props = deliveredProps(device, seq);
  const path = agentObjectPath('0'.repeat(64));
  return bus.call(new Message({ destination: dest, path, interface: EVENTS_INTERFACE, member: 'DeviceInserted', signature: 'sa{ss}', body: [props['DEVPATH'] as string, props] as never[] }));
}

/**
 * Runs `fn` with the connection's socket corked: the calls it makes leave in one writev, not one
 * write(2) each (what the daemon could do when one event goes to many containers).
 */
export function corked<T>(bus: MessageBus, fn: () => T): T {
  const stream = (bus as unknown as { _connection?: { stream?: { cork?(): void; uncork?(): void } } })._connection?.stream;
  stream?.cork?.();
  try {
    return fn();
  } finally {
    stream?.uncork?.();
  }
}

// ---------------------------------------------------------------------------------------------
// Fake containers.

export interface ReadyContainer {
  c: FakeContainer;
  /** Unique name of its bus connection (raw calls go there). */
  unique: string;
  busName: string;
}

/** Connects, registers, owns its name, serves Events; Ready is left to the caller (`ready`). */
export async function prepareContainer(address: string, quiet: boolean): Promise<ReadyContainer> {
  const c = await FakeContainer.start();
  const conn = await c.connect(address);
  const reg = await c.call('Register');
  const [status, busName] = reg['body'] as [number, string];
  if (status !== 0) throw new Error(`Register answered ${status}`);
  await c.request({ op: 'events', mode: 'ack', quiet });
  const own = await c.request({ op: 'own', name: busName });
  if (own['result'] !== 1) throw new Error(`could not own ${busName}: ${JSON.stringify(own)}`);
  return { c, unique: conn['name'] as string, busName };
}

export async function ready(rc: ReadyContainer): Promise<void> {
  const r = await rc.c.call('Ready');
  if (r['error']) throw new Error(`Ready failed: ${String(r['error'])}`);
}

/** Starts `n` Ready containers, `wave` at a time (100 node processes at once would thrash 2 cores). */
export async function readyContainers(address: string, n: number, quiet: boolean, wave = 20): Promise<ReadyContainer[]> {
  const out: ReadyContainer[] = [];
  for (let i = 0; i < n; i += wave) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(wave, n - i) }, async () => {
        const rc = await prepareContainer(address, quiet);
        await ready(rc);
        return rc;
      }),
    );
    out.push(...batch);
  }
  return out;
}

/** How many events a quiet container got, once it got at least `atLeast`; when the last came. */
export async function countAtLeast(c: FakeContainer, atLeast: number): Promise<{ count: number; t: number; seq: string | null }> {
  const r = await c.request({ op: 'count', atLeast });
  return { count: r['count'] as number, t: r['t'] as number, seq: (r['seq'] as string | null) ?? null };
}

/** Arrival time stamped by the container (container-proc.mjs adds `t` to each event line). */
export const arrival = (e: object): number => (e as { t?: number }).t ?? NaN;

// ---------------------------------------------------------------------------------------------
// Spool files, written as the helper writes them (`env -0`, dot-temp, rename).

export function spoolContent(props: Record<string, string>): string {
  return Object.entries(props)
    .map(([k, v]) => `${k}=${v}\0`)
    .join('');
}

/** Writes the temp file; `commit()` renames it into place and returns the time just before. */
export function stageSpoolFile(dir: string, seqnum: bigint, action: 'add' | 'remove', props: Record<string, string>): { commit(): number } {
  const name = spoolName(seqnum, action);
  const tmp = join(dir, `.${name}.${process.pid}`);
  writeFileSync(tmp, spoolContent({ ...props, ACTION: action, SEQNUM: seqnum.toString(), HMD_SPOOL_DIR: dir, PATH: '/usr/bin:/bin' }));
  return {
    commit: () => {
      const t = nowMs();
      renameSync(tmp, join(dir, name));
      return t;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// /proc readings.

let clkTck: number | null = null;
function ticksPerSecond(): number {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

export interface ProcSample {
  rssKiB: number;
  hwmKiB: number;
  /** utime + stime of all threads, in ms. */
  cpuMs: number;
  /** Context switches of all threads (voluntary + involuntary): wake-ups. */
  switches: number;
}

export function procSample(pid: number): ProcSample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(rest[11]) + Number(rest[12]);
  let switches = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8');
      switches += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0) + Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0);
    } catch {
      // the thread ended between listing and reading
    }
  }
  return { rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM'), cpuMs: (ticks * 1000) / ticksPerSecond(), switches };
}

// ---------------------------------------------------------------------------------------------
// CPU profiles (`--profile`): where the daemon spent its time.

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileLine {
  fn: string;
  ms: number;
  /** Share of the non-idle samples, in %. */
  share: number;
}

function frameName(n: ProfileNode): string {
  const url = n.callFrame.url.replace(`file://${REPO}/`, '');
  return `${n.callFrame.functionName || '(anonymous)'}${url === '' ? '' : ` ${url}:${n.callFrame.lineNumber + 1}`}`;
}

/**
 * Self time per function (`top` largest) and inclusive time (the function or anything it
 * called) of every function whose name is in `inclusiveOf`.
 */
export function profileSummary(file: string, top = 15, inclusiveOf: readonly string[] = []): { self: ProfileLine[]; inclusive: ProfileLine[]; busyMs: number } {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const wanted = new Set(inclusiveOf);
  let busy = 0;
  prof.samples.forEach((id, i) => {
    const dt = (prof.timeDeltas[i] ?? 0) / 1000;
    const n = byId.get(id);
    if (n === undefined || n.callFrame.functionName === '(idle)' || n.callFrame.functionName === '(program)') return;
    busy += dt;
    const name = frameName(n);
    self.set(name, (self.get(name) ?? 0) + dt);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const fn = byId.get(cur)?.callFrame.functionName ?? '';
      if (wanted.has(fn) && !seen.has(fn)) {
        seen.add(fn);
        incl.set(fn, (incl.get(fn) ?? 0) + dt);
      }
    }
  });
  const lines = (m: Map<string, number>): ProfileLine[] =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).map(([fn, ms]) => ({ fn, ms: Math.round(ms), share: busy === 0 ? 0 : Math.round((ms / busy) * 1000) / 10 }));
  return { self: lines(self).slice(0, top), inclusive: lines(incl), busyMs: Math.round(busy) };
}
