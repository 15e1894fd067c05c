/**
 * `make bench`: runs every benchmark in turn, prints a table and one verdict per goal, and
 * appends the run (date, machine, versions, table, verdicts) to BENCHMARKS.md.
 *
 *   tsx bench/run.ts [--only NAME[,NAME]] [--quick] [--no-write] [--profile]
 *                    [--daemon-node-args "FLAGS"]
 *
 * Nothing here is a test: a goal that is not met is reported, never an exit code. The exit code
 * is non-zero only when a benchmark crashed (or the run was interrupted).
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../test/e2e/support/dbus.js';
import * as baseline from './baseline.bench.js';
import * as latency from './e2e-latency.bench.js';
import * as helper from './helper.bench.js';
import * as keystore from './keystore.bench.js';
import * as scale from './scale.bench.js';
import * as spoolWatch from './spool-watch.bench.js';
import * as throughput from './throughput.bench.js';
import { cleanupAll, daemonWarnings, profileSummary, type BenchContext, type Row } from './support.js';

interface Bench {
  name: string;
  title: string;
  /** Benchmarks whose figures this one compares with (run first, even under --only). */
  needs?: string[];
  run(ctx: BenchContext): Promise<Row[]>;
}

const BENCHES: Bench[] = [
  { name: 'baseline', title: 'Baseline: raw dbus-next', run: (ctx) => baseline.run(ctx) },
  { name: 'helper', title: 'udev helper', run: (ctx) => helper.run(ctx.quick ? 200 : 1000) },
  { name: 'latency', title: 'End-to-end latency', run: (ctx) => latency.run(ctx) },
  { name: 'throughput', title: 'Throughput', needs: ['baseline'], run: (ctx) => throughput.run(ctx) },
  { name: 'scale', title: 'Scale', run: (ctx) => scale.run(ctx) },
  { name: 'keystore', title: 'Keystore', run: (ctx) => keystore.run(ctx.quick ? 10 : 30) },
  { name: 'spool-watch', title: 'Spool watch', run: () => spoolWatch.run() },
];

interface Verdict {
  met: boolean | null;
  figure: string;
}

interface Goal {
  bench: string;
  text: string;
  check(rows: Row[], ctx: BenchContext): Verdict | null;
}

const byKey = (rows: Row[], key: string): Row | undefined => rows.find((r) => r.key === key);
const byName = (rows: Row[], ...parts: string[]): Row | undefined => rows.find((r) => parts.every((p) => r.name.includes(p)));
const fmt = (x: number | undefined, unit: string): string => (x === undefined || Number.isNaN(x) ? '?' : `${x} ${unit}`);

function atMost(row: Row | undefined, field: 'p50' | 'p99' | 'max' | 'value', limit: number): Verdict | null {
  const x = row?.[field];
  if (row === undefined || x === undefined || Number.isNaN(x)) return null;
  return { met: x <= limit, figure: `${field === 'value' ? '' : `${field} `}${fmt(x, row.unit)}` };
}

const GOALS: Goal[] = [
  { bench: 'latency', text: 'spool file → ack p50 ≤ 2 ms at 10 containers', check: (r) => atMost(byKey(r, 'latency.10.each'), 'p50', 2) },
  { bench: 'latency', text: 'spool file → ack p99 ≤ 10 ms at 10 containers', check: (r) => atMost(byKey(r, 'latency.10.each'), 'p99', 10) },
  { bench: 'latency', text: 'last ack of an event p99 ≤ 50 ms at 100 containers', check: (r) => atMost(byKey(r, 'latency.100.last'), 'p99', 50) },
  {
    bench: 'throughput',
    text: 'deliveries/s ≥ 0.8 × raw pipelined calls/s',
    check: (r) => {
      const row = byKey(r, 'throughput.ratio');
      return row?.value === undefined ? null : { met: row.value >= 0.8, figure: `${row.value} ×` };
    },
  },
  { bench: 'scale', text: 'replay of 1000 devices on Ready ≤ 200 ms (p99)', check: (r) => atMost(byKey(r, 'scale.replay'), 'p99', 200) },
  {
    bench: 'scale',
    text: 'daemon RSS ≤ 80 MB at 100 containers × 1000 devices (settled, end of the idle time)',
    check: (r) => {
      const settled = byKey(r, 'scale.rssSettled')?.value;
      if (settled === undefined || Number.isNaN(settled)) return null;
      return { met: settled <= 80, figure: `${settled} MB; ${fmt(byKey(r, 'scale.rss')?.max, 'MB')} at most while idle, peak ${fmt(byKey(r, 'scale.hwm')?.value, 'MB')}` };
    },
  },
  {
    bench: 'scale',
    text: 'idle CPU ≈ 0 (below 0.5 % of one core)',
    check: (r, ctx) => (ctx.profileDir !== null ? { met: null, figure: 'not comparable under --profile' } : atMost(byKey(r, 'scale.idleCpu'), 'value', 0.5)),
  },
  { bench: 'keystore', text: 'keystore save 128 KiB / 100 files ≤ 50 ms (p99)', check: (r) => atMost(byName(r, 'keystore save'), 'p99', 50) },
  { bench: 'helper', text: 'udev helper ≤ 3 ms per event above the spawn itself (p99)', check: (r) => atMost(byName(r, 'helper - true'), 'p99', 3) },
  { bench: 'spool-watch', text: 'spool file → event p99 ≤ 5 ms (fs.watch, the daemon’s watcher)', check: (r) => atMost(byName(r, 'spool fswatch', 'one at a time'), 'p99', 5) },
];

// ---------------------------------------------------------------------------------------------

interface Options {
  only: string[] | null;
  quick: boolean;
  write: boolean;
  profile: boolean;
  daemonNodeArgs: string[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { only: null, quick: false, write: true, profile: false, daemonNodeArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const value = (): string => {
      const eq = a.indexOf('=');
      if (eq >= 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--no-write') o.write = false;
    else if (a === '--profile') o.profile = true;
    else if (a.startsWith('--only')) o.only = value().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a.startsWith('--daemon-node-args')) o.daemonNodeArgs = value().split(/\s+/).filter(Boolean);
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`usage: tsx bench/run.ts [--only ${BENCHES.map((b) => b.name).join(',')}] [--quick] [--no-write] [--profile] [--daemon-node-args "FLAGS"]\n`);
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  for (const n of o.only ?? []) if (!BENCHES.some((b) => b.name === n)) throw new Error(`no benchmark named "${n}" (have: ${BENCHES.map((b) => b.name).join(', ')})`);
  return o;
}

function selected(o: Options): Bench[] {
  if (o.only === null) return BENCHES;
  const want = new Set(o.only);
  for (const b of BENCHES) if (want.has(b.name)) for (const n of b.needs ?? []) want.add(n);
  return BENCHES.filter((b) => want.has(b.name));
}

const sh = (cmd: string, args: string[]): string => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '?';
  }
};

function installedVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

function machine(): string[] {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? '?';
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
  const deps = { ...pkg['dependencies'], ...pkg['optionalDependencies'] };
  const dirty = sh('git', ['-C', REPO, 'status', '--porcelain', '--', 'src', 'udev-rules']) === '' ? '' : ' + uncommitted changes in src/ or udev-rules/';
  return [
    `- kernel ${release()}, ${cpu}, ${sh('nproc', [])} CPUs, ${(memKiB / 1024 / 1024).toFixed(1)} GiB memory`,
    `- node ${process.version}, ${sh('dbus-daemon', ['--version']).split('\n')[0] ?? '?'}`,
    `- packages: ${Object.keys(deps)
      .sort()
      .map((n) => `${n} ${installedVersion(n)}`)
      .join(', ')}; veea-hmd ${(pkg as unknown as { version: string }).version} at ${sh('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'])}${dirty}`,
  ];
}

const cell = (x: number | undefined): string => (x === undefined ? '' : Number.isNaN(x) ? '?' : String(x));

function table(results: Array<{ bench: Bench; rows: Row[] }>): string {
  const lines = ['| benchmark | measure | n | p50 | p99 | max | value | unit |', '|---|---|--:|--:|--:|--:|--:|---|'];
  for (const { bench, rows } of results) {
    for (const r of rows) lines.push(`| ${bench.name} | ${r.name} | ${cell(r.n)} | ${cell(r.p50)} | ${cell(r.p99)} | ${cell(r.max)} | ${cell(r.value)} | ${r.unit} |`);
  }
  return lines.join('\n');
}

const HEADER = `# Benchmarks\n\nRun with \`make bench\`; each run appends a dated section below.\n\n## Runs\n`;

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  const lock = join(tmpdir(), 'hmd-bench.lock');
  if (existsSync(lock)) {
    const pid = Number(readFileSync(lock, 'utf8'));
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = true;
    } catch {
      // stale lock
    }
    if (alive) throw new Error(`another benchmark run is going on (pid ${pid}): two runs would measure each other`);
  }
  writeFileSync(lock, String(process.pid));

  const profileDir = o.profile ? mkdtempSync(join(tmpdir(), 'hmd-bench-prof-')) : null;
  const ctx: BenchContext = { quick: o.quick, profileDir, daemonNodeArgs: o.daemonNodeArgs, baseline: {}, log: (m) => process.stdout.write(`${m}\n`) };
  const interrupted = async (signal: string): Promise<void> => {
    process.stdout.write(`\n${signal}: cleaning up\n`);
    await cleanupAll();
    rmSync(lock, { force: true });
    process.exit(130);
  };
  process.once('SIGINT', () => void interrupted('SIGINT'));
  process.once('SIGTERM', () => void interrupted('SIGTERM'));

  const busy = sh('pgrep', ['-f', 'vitest']);
  const notes: string[] = [];
  if (busy !== '?' && busy !== '') notes.push('vitest was running during this run: figures are disturbed');
  const load0 = loadavg()[0] ?? 0;
  const started = new Date();
  const results: Array<{ bench: Bench; rows: Row[] }> = [];
  const crashed: Array<{ bench: Bench; error: string }> = [];
  const profiles: string[] = [];
  try {
    for (const bench of selected(o)) {
      const t0 = Date.now();
      process.stdout.write(`\n== ${bench.name}: ${bench.title} (load ${loadavg()[0]?.toFixed(2)})\n`);
      daemonWarnings.length = 0;
      try {
        const rows = await bench.run(ctx);
        results.push({ bench, rows });
        for (const r of rows) process.stdout.write(`  ${r.name}: ${r.value !== undefined ? `${r.value}` : `p50 ${r.p50} p99 ${r.p99}${r.max === undefined ? '' : ` max ${r.max}`}`} ${r.unit}\n`);
      } catch (err) {
        const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
        crashed.push({ bench, error: error.split('\n')[0] ?? error });
        process.stdout.write(`  CRASHED: ${error}\n`);
      } finally {
        await cleanupAll();
      }
      if (daemonWarnings.length > 0) {
        const distinct = [...new Set(daemonWarnings)];
        const line = `${bench.name}: the daemon logged ${daemonWarnings.length} warnings/errors (${distinct.slice(0, 5).join('; ')})`;
        notes.push(line);
        process.stdout.write(`  ${line}\n`);
      }
      if (profileDir !== null) {
        for (const f of readdirSync(profileDir).filter((n) => n.endsWith('.cpuprofile') && !profiles.includes(n))) {
          profiles.push(f);
          const s = profileSummary(join(profileDir, f), 12, ['flush', 'write', 'collect', 'serialize', 'send', 'marshall', 'drain', 'handle', 'publish']);
          const text = [`${bench.name} daemon profile ${join(profileDir, f)} (busy ${s.busyMs} ms): self time`, ...s.self.map((l) => `    ${l.share}% ${l.ms} ms ${l.fn}`), `  inclusive: ${s.inclusive.map((l) => `${l.fn} ${l.share}%`).join(', ')}`].join('\n');
          notes.push(text);
          process.stdout.write(`  ${text}\n`);
        }
      }
      process.stdout.write(`  (${Math.round((Date.now() - t0) / 1000)} s)\n`);
    }
  } finally {
    await cleanupAll();
    rmSync(lock, { force: true });
  }

  const allRows = results.flatMap((r) => r.rows);
  const ran = new Set(results.map((r) => r.bench.name));
  const verdicts = GOALS.filter((g) => selected(o).some((b) => b.name === g.bench)).map((g) => {
    const v = ran.has(g.bench) ? g.check(allRows, ctx) : null;
    const word = v === null ? 'not measured' : v.met === null ? `n/a (${v.figure})` : v.met ? `met (${v.figure})` : `NOT met (${v.figure})`;
    return `${word} — ${g.text}`;
  });

  const mode = [o.quick ? 'quick' : 'full', o.only ? `only ${o.only.join(',')}` : 'all benchmarks', profileDir ? 'profiled (figures inflated)' : '', o.daemonNodeArgs.length ? `daemon node flags: ${o.daemonNodeArgs.join(' ')}` : '']
    .filter(Boolean)
    .join(', ');
  const section = [
    `### ${started.toISOString().replace('T', ' ').slice(0, 16)} UTC — ${mode}`,
    '',
    ...machine(),
    `- load average (1 min) ${load0.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end; ${Math.round((Date.now() - started.getTime()) / 1000)} s`,
    '',
    table(results),
    '',
    'Goals:',
    '',
    ...verdicts.map((v) => `- ${v}`),
    ...(crashed.length > 0 ? ['', 'Crashed:', '', ...crashed.map((c) => `- ${c.bench.name}: ${c.error}`)] : []),
    ...(notes.length > 0 ? ['', 'Notes:', '', ...notes.map((n) => `- ${n.replace(/\n/g, '\n  ')}`)] : []),
    '',
  ].join('\n');

  process.stdout.write(`\n${table(results)}\n\nGoals:\n${verdicts.map((v) => `  ${v}`).join('\n')}\n`);
  if (crashed.length > 0) process.stdout.write(`\nCrashed: ${crashed.map((c) => c.bench.name).join(', ')}\n`);
  if (o.write) {
    const file = join(REPO, 'BENCHMARKS.md');
    if (!existsSync(file)) writeFileSync(file, HEADER);
    appendFileSync(file, `\n${section}`);
    process.stdout.write(`\nappended to ${file}\n`);
  }
  return crashed.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    await cleanupAll();
    process.exit(2);
  },
);
