/**
 * Spool latency: from the helper's rename into place to the SpoolSource's onEvents callback
 * (goal: p99 <= 5 ms), for the two ways of watching the folder, fs.watch (inotify) and chokidar 5.
 * Both keep the same periodic rescan, set long here so that only the watch is measured.
 *
 * - "one at a time": each file renamed, then awaited; released at once (normal operation).
 * - "1000 pending": the same with 1000 unreleased files in the folder (the daemon down a while,
 *   or the state writer behind): chokidar re-reads the folder on each event.
 * - "burst": 500 renames back to back from another thread, latency of each (they come out in
 *   sorted batches, so the first ones wait for the batch).
 */
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { silentLogger } from '../src/log.js';
import type { WatcherKind } from '../src/sources/dir-watch.js';
import { SpoolSource } from '../src/sources/spool.js';
import { spoolName } from '../src/sources/spool-file.js';

export interface BenchResult {
  name: string;
  p50: number;
  p99: number;
  unit: 'ms';
}

const SAMPLES = 500;
const WARMUP = 20;

function percentile(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return Math.round((sorted[Math.max(0, i)] ?? NaN) * 1000) / 1000;
}

function content(seq: number): string {
  const p: Record<string, string> = {
    ACTION: 'add',
    DEVPATH: `/devices/pci0000:00/0000:00:14.0/usb1/1-${seq}`,
    SUBSYSTEM: 'usb',
    DEVTYPE: 'usb_device',
    SEQNUM: String(seq),
    ID_VENDOR_ID: '0403',
    ID_MODEL_ID: '6001',
    ID_SERIAL: 'FTDI_FT232R_USB_UART_EU14D7QR',
  };
  return Object.entries(p).map(([k, v]) => `${k}=${v}\0`).join('');
}

interface Harness {
  dir: string;
  src: SpoolSource;
  /** Resolves when the event of `name` reached onEvents; the latency since `t0`. */
  expect(name: string, t0: number): Promise<number>;
}

/** Measured files are released as soon as they arrive; any others stay in the folder. */
async function harness(kind: WatcherKind): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), `hmd-spool-bench-${kind}-`));
  const waiting = new Map<string, { t0: number; resolve: (ms: number) => void }>();
  const src: SpoolSource = new SpoolSource({
    dir,
    logger: silentLogger(),
    watcher: kind,
    rescanMs: 60_000,
    onEvents: (events) => {
      const now = performance.now();
      const done: string[] = [];
      for (const e of events) {
        const w = e.spoolFile === undefined ? undefined : waiting.get(e.spoolFile);
        if (w === undefined || e.spoolFile === undefined) continue;
        waiting.delete(e.spoolFile);
        done.push(e.spoolFile);
        w.resolve(now - w.t0);
      }
      void src.release(done);
    },
  });
  return {
    dir,
    src,
    expect: (name, t0) => new Promise((resolve) => waiting.set(name, { t0, resolve })),
  };
}

function writeTemp(dir: string, seq: number): { tmp: string; final: string; name: string } {
  const name = spoolName(BigInt(seq), 'add');
  const tmp = join(dir, `.${name}.tmp`);
  writeFileSync(tmp, content(seq));
  return { tmp, final: join(dir, name), name };
}

async function oneAtATime(kind: WatcherKind, pending: number): Promise<number[]> {
  const h = await harness(kind);
  let seq = 1;
  // Files of an earlier run, read at start and never released: they stay in the folder.
  for (let i = 0; i < pending; i++) {
    const f = writeTemp(h.dir, seq++);
    renameSync(f.tmp, f.final);
  }
  const samples: number[] = [];
  try {
    await h.src.start();
    for (let i = 0; i < SAMPLES + WARMUP; i++) {
      const f = writeTemp(h.dir, seq++);
      const t0 = performance.now();
      const got = h.expect(f.name, t0);
      renameSync(f.tmp, f.final);
      const ms = await got;
      if (i >= WARMUP) samples.push(ms);
      await new Promise((r) => setTimeout(r, 1));
    }
  } finally {
    await h.src.stop();
    rmSync(h.dir, { recursive: true, force: true });
  }
  return samples;
}

/** Renames in another thread, as udev's helpers do from other processes, timing each one. */
const RENAMER = `
const { parentPort, workerData } = require('node:worker_threads');
const { renameSync } = require('node:fs');
const { performance } = require('node:perf_hooks');
const at = [];
for (const [tmp, final] of workerData) { at.push(performance.timeOrigin + performance.now()); renameSync(tmp, final); }
parentPort.postMessage(at);
`;

async function burst(kind: WatcherKind): Promise<number[]> {
  const h = await harness(kind);
  try {
    await h.src.start();
    const files = Array.from({ length: SAMPLES }, (_, i) => writeTemp(h.dir, i + 1));
    // Absolute times on both sides: the worker's clock origin is not ours.
    const arrived = files.map((f) => h.expect(f.name, -performance.timeOrigin));
    const worker = new Worker(RENAMER, { eval: true, workerData: files.map((f) => [f.tmp, f.final]) });
    const renamedAt = await new Promise<number[]>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    const absolute = await Promise.all(arrived);
    // chokidar sets up a watch per new file, asynchronously; closing it in the middle of that
    // leaves one fs.watch handle open for good (chokidar 5.0.0), so let it settle first.
    await new Promise((r) => setTimeout(r, 500));
    return absolute.map((at, i) => at - (renamedAt[i] ?? NaN));
  } finally {
    await h.src.stop();
    rmSync(h.dir, { recursive: true, force: true });
  }
}

function summary(name: string, samples: number[]): BenchResult {
  const s = [...samples].sort((a, b) => a - b);
  return { name, p50: percentile(s, 50), p99: percentile(s, 99), unit: 'ms' };
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  for (const kind of ['fswatch', 'chokidar'] as const) {
    out.push(summary(`spool ${kind}: rename -> onEvents, one at a time`, await oneAtATime(kind, 0)));
    out.push(summary(`spool ${kind}: rename -> onEvents, 1000 files pending`, await oneAtATime(kind, 1000)));
    out.push(summary(`spool ${kind}: rename -> onEvents, burst of ${SAMPLES}`, await burst(kind)));
  }
  return out;
}
