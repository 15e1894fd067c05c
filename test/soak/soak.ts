/**
 * Soak: hours of random plug/unplug of the recorded fixture devices while containers come and
 * go, against a real daemon on a private bus. Not part of the test suite (it runs for as long
 * as asked). Every report line gives the daemon's RSS, open fds and bus match rules; at the end
 * each surviving container's view of the devices must equal the daemon's table.
 *
 *   npx tsx test/soak/soak.ts [--minutes N] [--seed S] [--report-every SECONDS]
 *
 * Needs what the e2e tests need (root, dbus-daemon, `make build`). Exits 1 on a delivery error
 * (order, gap, repeat, wrong final view) or when fds or match rules grew; RSS is reported.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { replayFixture } from '../../src/cli/replay.js';
import { listFixtures } from '../../src/devices/fixtures.js';
import { FakeContainer, killAllContainers, type ContainerEvent } from '../e2e/support/containers.js';
import { cleanupDirs, daemonDirs, getStatus, rootClient, startDaemon, unitEnvironment } from '../e2e/support/daemon.js';
import { e2eBlocker, startPrivateBus } from '../e2e/support/dbus.js';
import { seededRng } from '../reliability/support/rng.js';

const { values: args } = parseArgs({
  options: { minutes: { type: 'string', default: '60' }, seed: { type: 'string' }, 'report-every': { type: 'string', default: '60' } },
});
const minutes = Number(args.minutes);
const reportEveryMs = Number(args['report-every']) * 1000;
const seed = args.seed !== undefined ? Number(args.seed) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const blocker = e2eBlocker();
if (blocker !== null || !(minutes > 0) || !(reportEveryMs > 0)) {
  process.stderr.write(blocker !== null ? `soak: cannot run here: ${blocker}\n` : 'usage: npx tsx test/soak/soak.ts [--minutes N] [--seed S] [--report-every SECONDS]\n');
  process.exit(2);
}
const rng = seededRng(seed);
const log = (line: string): void => void process.stdout.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Root may ask the bus for its match rules (org.freedesktop.DBus.Debug.Stats). */
const STATS_POLICY = `<policy user="root"><allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/></policy>`;
const bus = await startPrivateBus({ extraConfig: STATS_POLICY });
const dirs = daemonDirs({ delivery: { timeoutMs: 2000 } });
// As the unit runs it (node and malloc settings), so that the RSS figures mean something.
const daemon = await startDaemon(bus, dirs, { env: unitEnvironment() });
const root = await rootClient(bus);
const pid = daemon.proc.pid as number;
log(`seed ${seed}, ${minutes} min, daemon pid ${pid}, fixtures: ${listFixtures().join(' ')}`);

// ---- containers and what each has been told ------------------------------------------------

type Kind = 'prompt' | 'slow' | 'agent' | 'hung';
interface Tracked {
  c: FakeContainer;
  kind: Kind;
  lastSeq: number;
  /** Devices it was told about and not told gone: its view of the table. */
  view: Set<string>;
}
const live: Tracked[] = [];
let started = 0;
let stopped = 0;
const errors: string[] = [];

async function addContainer(): Promise<void> {
  // Hung ones stall delivery to themselves only; at most two at a time, for the stall paths.
  const kind: Kind = rng.pick(live.filter((t) => t.kind === 'hung').length < 2 ? ['prompt', 'prompt', 'slow', 'agent', 'hung'] : ['prompt', 'slow', 'agent']);
  const c = kind === 'agent' ? await FakeContainer.agent(bus.address) : await FakeContainer.start();
  if (kind !== 'agent') {
    await c.becomeReady(bus.address, kind === 'hung' ? 'hang' : 'ack');
    if (kind === 'slow') await c.request({ op: 'events', mode: 'ack', delayMs: 20 });
  }
  live.push({ c, kind, lastSeq: 0, view: new Set() });
  started++;
}

async function removeContainer(): Promise<void> {
  const t = live.splice(rng.int(0, live.length - 1), 1)[0];
  if (t === undefined) return;
  absorb(t);
  // SIGKILL (a crash), or SIGTERM / end of input (a clean stop, the agent releases its name).
  if (rng.bool() || t.kind === 'agent') await t.c.kill(rng.bool() ? 'SIGKILL' : 'SIGTERM');
  else {
    t.c.proc.stdin?.end();
    await t.c.kill();
  }
  stopped++;
}

/** Checks and applies the container's new notifications, then forgets them (bounded memory). */
function absorb(t: Tracked): void {
  for (const e of t.c.events.splice(0) as ContainerEvent[]) {
    const seq = Number(e.properties['HMD_SEQUENCE']);
    if (seq !== t.lastSeq + 1) errors.push(`${t.kind} container ${t.c.cid?.slice(0, 12)}: HMD_SEQUENCE ${seq} after ${t.lastSeq}`);
    t.lastSeq = seq;
    if (e.member === 'DeviceInserted') t.view.add(e.deviceId);
    else if (!t.view.delete(e.deviceId)) errors.push(`${t.kind} container ${t.c.cid?.slice(0, 12)}: removal of ${e.deviceId}, never inserted`);
  }
}

// ---- measurements ---------------------------------------------------------------------------

interface Sample {
  min: number;
  rssMb: number;
  fds: number;
  matchRules: number;
  containers: number;
  devices: number;
  delivered: number;
  pool: number;
}
const samples: Sample[] = [];
const t0 = Date.now();

async function daemonMatchRules(): Promise<number> {
  const [rules] = (await root.call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.Debug.Stats', 'GetAllMatchRules', '', [], { timeoutMs: 10_000 })) as [Record<string, string[]>];
  let n = 0;
  for (const [name, list] of Object.entries(rules)) {
    const [owner] = await root.call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetConnectionUnixProcessID', 's', [name], { timeoutMs: 10_000 }).catch(() => [0]);
    if (owner === pid) n += list.length;
  }
  return n;
}

async function sample(): Promise<Sample> {
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  const st = (await getStatus(root)) as unknown as { containers: unknown[]; devices: unknown[]; metrics: Record<string, number>; delivery?: { connections: number } };
  const s: Sample = {
    min: Math.round((Date.now() - t0) / 6000) / 10,
    rssMb: Math.round(Number(rss) / 102.4) / 10,
    fds: readdirSync(`/proc/${pid}/fd`).length,
    matchRules: await daemonMatchRules().catch(() => -1),
    containers: st.containers.length,
    devices: st.devices.length,
    delivered: st.metrics['delivered'] ?? 0,
    pool: st.delivery?.connections ?? 0,
  };
  samples.push(s);
  log(`t=${s.min} min  RSS ${s.rssMb} MB  fds ${s.fds}  match rules ${s.matchRules}  pool ${s.pool}  containers ${s.containers}  devices ${s.devices}  delivered ${s.delivered}  errors ${errors.length}`);
  return s;
}

// ---- the load -------------------------------------------------------------------------------

const plugged = new Set<string>();
let plugs = 0;
let stopping = false;
process.once('SIGINT', () => {
  log('SIGINT: finishing');
  stopping = true;
});

async function plugLoop(): Promise<void> {
  const fixtures = listFixtures();
  while (!stopping && Date.now() - t0 < minutes * 60_000) {
    const f = rng.pick(fixtures);
    const remove = plugged.has(f);
    await replayFixture({ fixture: f, remove, spoolDir: dirs.spoolDir });
    if (remove) plugged.delete(f);
    else plugged.add(f);
    plugs++;
    await sleep(rng.int(50, 600));
  }
}

async function churnLoop(): Promise<void> {
  while (!stopping && Date.now() - t0 < minutes * 60_000) {
    if (live.length < 2 || (live.length < 10 && rng.bool(0.55))) await addContainer();
    else await removeContainer();
    await sleep(rng.int(1000, 8000));
  }
}

let exitCode = 0;
try {
  for (let i = 0; i < 4; i++) await addContainer();
  await sample();
  const load = Promise.all([plugLoop(), churnLoop()]);
  let nextReport = Date.now() + reportEveryMs;
  let done = false;
  void load.finally(() => (done = true));
  while (!done) {
    await sleep(1000);
    for (const t of live) absorb(t);
    if (Date.now() >= nextReport) {
      await sample();
      nextReport += reportEveryMs;
    }
  }
  await load;

  // Quiesce, then every responsive container's view must be the daemon's table.
  const table = async (): Promise<string[]> => (await getStatus(root)).devices.map((d) => d.id).sort();
  let mismatched: Tracked[] = [];
  for (let i = 0; i < 30; i++) {
    await sleep(1000);
    for (const t of live) absorb(t);
    const want = (await table()).join('\n');
    mismatched = live.filter((t) => t.kind !== 'hung' && [...t.view].sort().join('\n') !== want);
    if (mismatched.length === 0) break;
  }
  for (const t of mismatched) errors.push(`${t.kind} container ${t.c.cid?.slice(0, 12)}: its view (${t.view.size} devices) differs from the daemon's table`);
  const last = await sample();
  const first = samples[0] as Sample;
  const half = samples[Math.floor(samples.length / 2)] as Sample;
  const maxRss = Math.max(...samples.map((x) => x.rssMb));
  log(`done: ${plugs} plugs/unplugs, ${last.delivered} notifications delivered, containers started ${started} / stopped ${stopped}`);
  // The first minutes are warm-up (JIT, heap sizing): the second half is what shows a leak.
  const perHour = last.min >= 30 ? `, ${(((last.rssMb - half.rssMb) * 60) / (last.min - half.min)).toFixed(1)} MB/h` : '';
  log(`RSS ${first.rssMb} -> ${last.rssMb} MB (max ${maxRss}); second half ${half.rssMb} -> ${last.rssMb} MB${perHour}`);
  log(`fds ${first.fds} -> ${last.fds}, match rules ${first.matchRules} -> ${last.matchRules}, delivery connections ${first.pool} -> ${last.pool}`);
  // Each extra delivery connection (hung containers) holds one socket and its own match rule.
  const fdLeak = last.fds - first.fds > 4 + 2 * (last.pool - first.pool);
  const ruleLeak = last.matchRules - first.matchRules > 2 + (last.pool - first.pool);
  if (errors.length > 0) log(`DELIVERY ERRORS (${errors.length}):\n  ${errors.slice(0, 20).join('\n  ')}`);
  if (fdLeak) log('LEAK: the daemon holds more file descriptors than at the start');
  if (ruleLeak) log('LEAK: the daemon holds more bus match rules than at the start');
  log(errors.length === 0 && !fdLeak && !ruleLeak ? 'verdict: no delivery error, no fd or match-rule growth' : 'verdict: FAILED');
  exitCode = errors.length === 0 && !fdLeak && !ruleLeak ? 0 : 1;
} catch (err) {
  log(`soak aborted: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  exitCode = 1;
} finally {
  await killAllContainers();
  root.close();
  await daemon.stop();
  await bus.stop();
  cleanupDirs(dirs);
}
process.exit(exitCode);
