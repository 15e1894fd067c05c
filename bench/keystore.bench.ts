/**
 * Keystore save latency as a container sees it: StartKeystoreSave until GetKeystoreStatus
 * answers 0, for 128 KiB spread over 100 files (goal: p50 <= 50 ms).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseConfig } from '../src/config/load.js';
import { Status } from '../src/constants.js';
import { silentLogger } from '../src/log.js';
import { KeystoreManager } from '../src/keystore/manager.js';

export interface BenchResult {
  name: string;
  p50: number;
  p99: number;
  unit: 'ms';
}

const CID = 'c'.repeat(64);
const TOTAL_BYTES = 128 * 1024;
const FILES = 100;

function percentile(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return Math.round((sorted[Math.max(0, i)] ?? NaN) * 100) / 100;
}

// Polls like a container would, every millisecond; a setImmediate spin would steal the CPU the save needs.
const tick = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 1));

export async function run(runs = 30): Promise<BenchResult[]> {
  const root = mkdtempSync(join(tmpdir(), 'hmd-ks-bench-'));
  try {
    const config = parseConfig({
      keystore: { sourceDir: join(root, 'src', '{cid}'), storeDir: join(root, 'store'), keyFile: join(root, 'key'), limitBytes: TOTAL_BYTES },
    }).keystore;
    const src = join(root, 'src', CID);
    // 100 files in 10 directories, exactly 128 KiB in total.
    for (let i = 0; i < FILES; i++) {
      const dir = join(src, `d${i % 10}`);
      mkdirSync(dir, { recursive: true });
      const size = Math.floor(TOTAL_BYTES / FILES) + (i < TOTAL_BYTES % FILES ? 1 : 0);
      writeFileSync(join(dir, `f${i}`), randomBytes(size));
    }
    const m = new KeystoreManager({ config, stateDir: join(root, 'state'), logger: silentLogger() });
    await m.start();
    const samples: number[] = [];
    for (let i = 0; i < runs + 3; i++) {
      const t0 = performance.now();
      if ((await m.startSave(CID)) !== Status.OK) throw new Error('save not accepted');
      while (m.getStatus(CID) === Status.EBUSY) await tick();
      const dt = performance.now() - t0;
      if (m.getStatus(CID) !== Status.OK) throw new Error('save failed');
      if (i >= 3) samples.push(dt); // the first runs warm up caches and the key file
    }
    await m.stop();
    samples.sort((a, b) => a - b);
    return [{ name: 'keystore save 128 KiB / 100 files, start -> status 0', p50: percentile(samples, 50), p99: percentile(samples, 99), unit: 'ms' }];
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
