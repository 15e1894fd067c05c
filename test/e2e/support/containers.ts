import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO } from './dbus.js';
import { forOtherUids } from './repo-view.js';

export type CgroupFlavour = 'v1' | 'v2' | 'v2-cgroupfs' | 'v1-parent' | 'v2-parent-slice';

const V1_ROOT = '/sys/fs/cgroup/pids';
const V2_ROOT = '/sys/fs/cgroup/unified';

export const newContainerId = (): string => randomBytes(32).toString('hex');

/** Where a flavour puts a Docker container, as /proc/PID/cgroup will show it. */
export function cgroupDir(flavour: CgroupFlavour, cid: string): string {
  switch (flavour) {
    case 'v1':
      return join(V1_ROOT, 'docker', cid);
    case 'v2':
      return join(V2_ROOT, 'system.slice', `docker-${cid}.scope`);
    case 'v2-cgroupfs':
      return join(V2_ROOT, 'docker', cid);
    // Docker's --cgroup-parent (daemon config identity.dockerCgroupParents = TEST_CGROUP_PARENTS).
    case 'v1-parent':
      return join(V1_ROOT, 'hmd-test-apps', cid);
    case 'v2-parent-slice':
      return join(V2_ROOT, 'hmd-test.slice', `docker-${cid}.scope`);
  }
}

/** The cgroup parents of the '-parent' flavours, as /proc/PID/cgroup shows them. */
export const TEST_CGROUP_PARENTS = ['/hmd-test-apps', '/hmd-test.slice'];

/** Removes the parents' folders once no container is left in them. */
export function removeTestCgroupParents(): void {
  for (const dir of [join(V1_ROOT, 'hmd-test-apps'), join(V2_ROOT, 'hmd-test.slice')]) {
    try {
      rmdirSync(dir);
    } catch {
      // absent, or still in use by a container being torn down: a later run removes it
    }
  }
}

const live = new Set<FakeContainer>();

export interface ContainerEvent {
  type: 'event';
  member: 'DeviceInserted' | 'DeviceRemoved';
  path: string;
  sender: string;
  deviceId: string;
  properties: Record<string, string>;
}

/**
 * A process that looks like a Docker container to the daemon: moved into a docker cgroup
 * before it runs anything, optionally dropped to another uid, driven over stdin/stdout.
 * `cid: null` makes a host process (no container cgroup).
 */
export class FakeContainer {
  readonly events: ContainerEvent[] = [];
  private readonly waiters = new Map<number, (v: Record<string, unknown>) => void>();
  private nextId = 1;
  private eventWaiters: Array<() => void> = [];
  pid = 0;
  private constructor(
    readonly cid: string | null,
    readonly dir: string | null,
    readonly proc: ChildProcess,
  ) {}

  static async start(opts: { flavour?: CgroupFlavour; cid?: string | null; uid?: number; command?: string[] } = {}): Promise<FakeContainer> {
    const cid = opts.cid === undefined ? newContainerId() : opts.cid;
    const dir = cid === null ? null : cgroupDir(opts.flavour ?? 'v1', cid);
    if (dir !== null && !existsSync(dir)) mkdirSync(dir, { recursive: true });
    const command = opts.command ?? [process.execPath, join(REPO, 'test/e2e/support/container-proc.mjs')];
    // Another uid may not reach the checkout where it is: give it paths it can reach.
    const inner = opts.uid === undefined ? command : command.map(forOtherUids);
    const drop = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups'];
    // The shell joins the cgroup first, then execs: the process never runs outside it.
    const script = dir === null ? 'exec "$@"' : `echo $$ > '${dir}/cgroup.procs' && exec "$@"`;
    const proc = spawn('sh', ['-c', script, 'sh', ...drop, ...inner], { stdio: ['pipe', 'pipe', 'pipe'], cwd: opts.uid === undefined ? REPO : forOtherUids(REPO) });
    const c = new FakeContainer(cid, dir, proc);
    c.pid = proc.pid ?? 0;
    live.add(c);
    proc.stderr?.on('data', (d: Buffer) => {
      if (process.env['HMD_TEST_VERBOSE']) process.stderr.write(`[container ${cid?.slice(0, 8)}] ${d.toString()}`);
    });
    const started = new Promise<void>((res, rej) => {
      proc.once('exit', (code) => rej(new Error(`fake container exited early (${code})`)));
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return;
        }
        if (msg['type'] === 'DeviceInserted' || msg['type'] === 'DeviceRemoved') {
          // `hmd agent` output: {"type","deviceId","properties"}.
          c.events.push({ type: 'event', member: msg['type'], path: '', sender: '', deviceId: msg['deviceId'] as string, properties: msg['properties'] as Record<string, string> });
          for (const w of c.eventWaiters.splice(0)) w();
        } else if (msg['type'] === 'started') {
          c.pid = msg['pid'] as number;
          res();
        } else if (msg['type'] === 'reply') {
          c.waiters.get(msg['id'] as number)?.(msg);
          c.waiters.delete(msg['id'] as number);
        } else if (msg['type'] === 'event') {
          c.events.push(msg as unknown as ContainerEvent);
          for (const w of c.eventWaiters.splice(0)) w();
        } else {
          c.onLine?.(msg);
        }
      });
    });
    if (opts.command === undefined) await started;
    else started.catch(() => undefined);
    return c;
  }

  /** For commands whose stdout is not the JSON protocol (e.g. `hmd agent`). */
  onLine?: (msg: Record<string, unknown>) => void;

  request(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((res, rej) => {
      this.waiters.set(id, res);
      this.proc.stdin?.write(`${JSON.stringify({ ...cmd, id })}\n`, (e) => e && rej(e));
    });
  }

  connect(address: string): Promise<Record<string, unknown>> {
    return this.request({ op: 'connect', address });
  }

  call(member: string, signature = '', body: unknown[] = [], extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.request({ op: 'call', member, signature, body, ...extra });
  }

  /** Register, own the returned name, serve Events, call Ready: what a well-behaved agent does. */
  async becomeReady(address: string, mode: 'ack' | 'hang' = 'ack'): Promise<string> {
    await this.connect(address);
    const reg = await this.call('Register');
    const [status, name] = reg['body'] as [number, string];
    if (status !== 0) throw new Error(`Register answered ${status}`);
    await this.request({ op: 'events', mode });
    const own = await this.request({ op: 'own', name });
    if (own['result'] !== 1) throw new Error(`could not own ${name}: ${JSON.stringify(own)}`);
    const ready = await this.call('Ready');
    if (ready['error']) throw new Error(`Ready failed: ${String(ready['error'])}`);
    return name;
  }

  async waitForEvents(n: number, timeoutMs = 15_000): Promise<ContainerEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`container ${this.cid?.slice(0, 12)} got ${this.events.length} of ${n} events`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, Math.min(left, 500));
        this.eventWaiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
    return this.events;
  }

  /** Runs the real `hmd agent` (the contract's container side) in a fake container. */
  static agent(address: string, opts: { flavour?: CgroupFlavour; cid?: string; uid?: number } = {}): Promise<FakeContainer> {
    return FakeContainer.start({ ...opts, command: [process.execPath, join(REPO, 'dist/main.js'), 'agent', '--bus', address] });
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  cgroupText(): string {
    return readFileSync(`/proc/${this.pid}/cgroup`, 'utf8');
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const gone = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill(signal);
      await gone;
    }
    // The shell exec'd into the process, so once it is gone the cgroup is empty.
    if (this.dir !== null) {
      for (let i = 0; i < 50; i++) {
        try {
          rmdirSync(this.dir);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
    live.delete(this);
  }
}

/** Kills every fake container still alive (afterAll / afterEach of every e2e suite). */
export async function killAllContainers(): Promise<void> {
  await Promise.all([...live].map((c) => c.kill()));
}
