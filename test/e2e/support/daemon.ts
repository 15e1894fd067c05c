import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connectBus } from '../../../src/bus/connection.js';
import type { BusConnection } from '../../../src/bus/types.js';
import { ADMIN_INTERFACE, DAEMON_BUS_NAME, DAEMON_OBJECT_PATH } from '../../../src/constants.js';
import { silentLogger } from '../../../src/log.js';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { REPO, startPrivateBus, type PrivateBus } from './dbus.js';
import { killAllContainers } from './containers.js';

export interface DaemonDirs {
  root: string;
  spoolDir: string;
  stateDir: string;
  keystoreSource: string;
  keystoreStore: string;
  keyFile: string;
  configFile: string;
}

/** A scratch tree for one daemon: spool, state, keystore folders and a config naming them. */
export function daemonDirs(config: Record<string, unknown> = {}): DaemonDirs {
  const root = mkdtempSync(join(tmpdir(), 'hmd-daemon-'));
  const d: DaemonDirs = {
    root,
    spoolDir: join(root, 'spool'),
    stateDir: join(root, 'state'),
    keystoreSource: join(root, 'keystores'),
    keystoreStore: join(root, 'state', 'keystore'),
    keyFile: join(root, 'etc', 'keystore.key'),
    configFile: join(root, 'config.json'),
  };
  mkdirSync(d.keystoreSource, { recursive: true });
  const devices = (config['devices'] as Record<string, unknown> | undefined) ?? {};
  const full = {
    ...config,
    spoolDir: d.spoolDir,
    stateDir: d.stateDir,
    keystore: { sourceDir: join(d.keystoreSource, '{cid}'), storeDir: d.keystoreStore, keyFile: d.keyFile, ...((config['keystore'] as object | undefined) ?? {}) },
    devices: { coldplug: false, enrich: false, ...devices },
  };
  writeFileSync(d.configFile, JSON.stringify(full, null, 2));
  return d;
}

/**
 * The `Environment=` of systemd/veea-hmd.service (node and malloc settings), so that the daemon
 * is measured as it runs on a hub (benchmarks, soak). `NODE_OPTIONS` of the caller's shell is not
 * passed on.
 */
export function unitEnvironment(): Record<string, string> {
  const unit = readFileSync(join(REPO, 'systemd', 'veea-hmd.service'), 'utf8');
  const env: Record<string, string> = { NODE_OPTIONS: '' };
  for (const line of unit.split('\n')) {
    const m = /^Environment=(.*)$/.exec(line.trim());
    if (!m) continue;
    for (const a of (m[1] as string).matchAll(/"([^"=]+)=([^"]*)"|([^\s"=]+)=(\S*)/g)) env[(a[1] ?? a[3]) as string] = (a[2] ?? a[4]) as string;
  }
  // A unit without its memory settings would silently measure something else.
  if (!env['NODE_OPTIONS'] || !env['MALLOC_ARENA_MAX']) throw new Error('systemd/veea-hmd.service: no NODE_OPTIONS/MALLOC_ARENA_MAX in Environment=');
  return env;
}

export class DaemonProcess {
  readonly logs: Array<Record<string, unknown>> = [];
  private exitWaiters: Array<(code: number | null) => void> = [];
  exitCode: number | null | undefined = undefined;
  constructor(
    readonly proc: ChildProcess,
    readonly dirs: DaemonDirs,
    readonly bus: PrivateBus,
  ) {
    proc.once('exit', (code, signal) => {
      this.exitCode = code ?? (signal ? -1 : null);
      for (const w of this.exitWaiters.splice(0)) w(this.exitCode);
    });
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  waitExit(timeoutMs = 10_000): Promise<number | null> {
    if (!this.running) return Promise.resolve(this.exitCode ?? null);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('daemon did not exit')), timeoutMs);
      this.exitWaiters.push((c) => {
        clearTimeout(t);
        res(c);
      });
    });
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null;
    this.proc.kill(signal);
    return this.waitExit();
  }

  logsMatching(msg: string): Array<Record<string, unknown>> {
    return this.logs.filter((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes(msg));
  }
}

export interface StartDaemonOptions {
  env?: Record<string, string>;
  /** More `hmd daemon` arguments (they win over the defaults). */
  args?: string[];
  /** Flags for node itself (e.g. --cpu-prof, which NODE_OPTIONS may not carry). */
  nodeArgs?: string[];
  /** Default debug: tests read the logs. Benchmarks use info (debug logging would be measured). */
  logLevel?: string;
  /** Which log lines to keep in `DaemonProcess.logs` (default: all). */
  keepLog?: (line: Record<string, unknown>) => boolean;
  /** Everything the daemon prints, raw (diagnosis). */
  onOutput?: (chunk: Buffer) => void;
}

/** Starts `hmd daemon` from dist/ on the private bus; resolves once it owns its name. */
export async function startDaemon(bus: PrivateBus, dirs: DaemonDirs, opts: StartDaemonOptions = {}): Promise<DaemonProcess> {
  const args = [join(REPO, 'dist/main.js'), 'daemon', '--bus', bus.address, '--config', dirs.configFile, '--log-level', opts.logLevel ?? 'debug', ...(opts.args ?? [])];
  const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  });
  const d = new DaemonProcess(proc, dirs, bus);
  let stderr = '';
  proc.stderr?.on('data', (b: Buffer) => {
    stderr += b.toString();
    opts.onOutput?.(b);
    if (process.env['HMD_TEST_VERBOSE']) process.stderr.write(b);
  });
  if (opts.onOutput) proc.stdout?.on('data', opts.onOutput);
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`daemon did not start serving: ${stderr}`)), 20_000);
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      try {
        const l = JSON.parse(line) as Record<string, unknown>;
        if (opts.keepLog?.(l) ?? true) d.logs.push(l);
        if (process.env['HMD_TEST_VERBOSE']) process.stderr.write(`${line}\n`);
        if (l['msg'] === 'serving') {
          clearTimeout(timer);
          res();
        }
      } catch {
        // not a log line
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`daemon exited ${code} before serving: ${stderr}`));
    });
  });
  return d;
}

/** A root connection to the private bus, for status queries and direct calls. */
export async function rootClient(bus: PrivateBus): Promise<BusConnection> {
  return connectBus({ bus: bus.address, logger: silentLogger(), watchdogMs: 0 });
}

export async function getStatus(client: BusConnection): Promise<{ containers: Array<Record<string, unknown>>; devices: Array<{ id: string; properties: Record<string, string> }>; metrics: Record<string, number> }> {
  const [text] = await client.call(DAEMON_BUS_NAME, DAEMON_OBJECT_PATH, ADMIN_INTERFACE, 'GetStatus', '', [], { timeoutMs: 10_000 });
  return JSON.parse(text as string);
}

export function cleanupDirs(dirs: DaemonDirs): void {
  rmSync(dirs.root, { recursive: true, force: true });
}

/** Polls until `check` returns a truthy value (behaviour with a deadline, not a timing test). */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 10_000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface DaemonSuite {
  bus: PrivateBus;
  dirs: DaemonDirs;
  daemon: DaemonProcess;
  /** A root connection, for status queries. */
  root: BusConnection;
}

/**
 * The usual e2e fixture: a private bus and one daemon for the whole file, fake containers
 * killed after each test, everything torn down after the file. Tests may replace `daemon`
 * (restart it) on the returned object.
 */
export function useDaemonSuite(opts: { config?: Record<string, unknown>; env?: Record<string, string> } = {}): DaemonSuite {
  const s = {} as DaemonSuite;
  beforeAll(async () => {
    s.bus = await startPrivateBus();
    s.dirs = daemonDirs(opts.config);
    s.daemon = await startDaemon(s.bus, s.dirs, opts.env ? { env: opts.env } : {});
    s.root = await rootClient(s.bus);
  });
  afterEach(async () => {
    await killAllContainers();
  });
  afterAll(async () => {
    s.root?.close();
    await s.daemon?.stop();
    await s.bus?.stop();
    if (s.dirs) cleanupDirs(s.dirs);
  });
  return s;
}

/**
 * For tests that each need a bus of their own (they kill and restart things): `setup` makes a
 * bus and daemon folders; everything pushed on `cleanup` runs after the test, newest first.
 */
export function usePerTestBus(): {
  setup: (config?: Record<string, unknown>) => Promise<{ bus: PrivateBus; dirs: DaemonDirs }>;
  cleanup: Array<() => Promise<void> | void>;
} {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    await killAllContainers();
    for (const f of cleanup.splice(0).reverse()) await f();
  });
  const setup = async (config: Record<string, unknown> = {}): Promise<{ bus: PrivateBus; dirs: DaemonDirs }> => {
    const bus = await startPrivateBus();
    const dirs = daemonDirs(config);
    cleanup.push(() => bus.stop(), () => cleanupDirs(dirs));
    return { bus, dirs };
  };
  return { setup, cleanup };
}
