/**
 * Cost of the udev helper per event (goal: <= 3 ms). udevd waits for its RUN programs, so this
 * is time a device's event holds a udev worker. Each sample is one exec, spawn to exit, of the
 * real helper with a udev-like environment (the FTDI fixture's tty event, ~30 properties);
 * the same number of execs of /bin/true, interleaved, give the cost of spawning itself.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadFixture } from '../src/devices/fixtures.js';
import { packageRoot } from '../src/paths.js';

export interface BenchResult {
  name: string;
  p50: number;
  p99: number;
  unit: 'ms';
}

function percentile(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return Math.round((sorted[Math.max(0, i)] ?? NaN) * 1000) / 1000;
}

/** One exec, spawn to exit, in ms. */
function timeExec(file: string, env: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, [], { env, cwd: '/', stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${file} exited ${code}`))));
  });
}

export async function run(runs = 1000): Promise<BenchResult[]> {
  const helper = join(packageRoot(), 'udev-rules', 'hmd-uevent');
  const spool = mkdtempSync(join(tmpdir(), 'hmd-helper-bench-'));
  try {
    const tty = loadFixture('ftdi-ft232r').events.find((e) => e.SUBSYSTEM === 'tty');
    if (tty === undefined) throw new Error('fixture ftdi-ft232r has no tty event');
    const base: Record<string, string> = { ...tty, HMD_SPOOL_DIR: spool };
    const helperMs: number[] = [];
    const trueMs: number[] = [];
    const warmup = 20;
    for (let i = 0; i < runs + warmup; i++) {
      // Interleaved, so load on the machine affects both series alike.
      const h = await timeExec(helper, { ...base, SEQNUM: String(1_000_000 + i) });
      const t = await timeExec('/bin/true', base);
      if (i >= warmup) {
        helperMs.push(h);
        trueMs.push(t);
      }
    }
    helperMs.sort((a, b) => a - b);
    trueMs.sort((a, b) => a - b);
    const [h50, h99, t50, t99] = [percentile(helperMs, 50), percentile(helperMs, 99), percentile(trueMs, 50), percentile(trueMs, 99)];
    return [
      { name: `udev helper hmd-uevent, one event (spawn to exit, ${runs} runs)`, p50: h50, p99: h99, unit: 'ms' },
      { name: `baseline /bin/true, same spawn (${runs} runs)`, p50: t50, p99: t99, unit: 'ms' },
      { name: 'udev helper cost above the spawn itself (helper - true)', p50: Math.round((h50 - t50) * 1000) / 1000, p99: Math.round((h99 - t99) * 1000) / 1000, unit: 'ms' },
    ];
  } finally {
    rmSync(spool, { recursive: true, force: true });
  }
}
