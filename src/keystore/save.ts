/** One keystore save: safe snapshot, serialize, seal, store atomically. */
import type { Logger } from '../log.js';
import { serializeSnapshot } from './format.js';
import { seal, unseal } from './seal.js';
import { takeSnapshot, type SnapshotOptions } from './snapshot.js';
import type { KeystoreStore } from './store.js';

export interface SaveJob {
  cid: string;
  sourceDir: string;
  store: KeystoreStore;
  key: Buffer;
  limitBytes: number;
  logger: Logger;
  signal?: AbortSignal;
  readDelayMs?: number;
  beforeOpen?: SnapshotOptions['beforeOpen'];
}

export interface SaveResult {
  files: number;
  dirs: number;
  bytes: number;
}

export async function runSave(job: SaveJob): Promise<SaveResult> {
  const snap = await takeSnapshot(job.sourceDir, {
    limitBytes: job.limitBytes,
    readDelayMs: job.readDelayMs,
    beforeOpen: job.beforeOpen,
    signal: job.signal,
    logger: job.logger,
  });
  const blob = seal(serializeSnapshot(snap), job.key, job.cid);
  job.signal?.throwIfAborted();
  const rotate = await currentCopyIsGood(job);
  await job.store.write(job.cid, blob, { rotate });
  const files = snap.entries.filter((e) => e.kind === 'file').length;
  return { files, dirs: snap.entries.length - files, bytes: snap.bytes };
}

/** Only a copy that still authenticates may become the previous copy; a damaged one is replaced. */
async function currentCopyIsGood(job: SaveJob): Promise<boolean> {
  const blob = await job.store.read(job.cid, 'current');
  if (!blob) return false;
  try {
    unseal(blob, job.key, job.cid);
    return true;
  } catch {
    job.logger.warn({ cid: job.cid }, 'newest saved keystore copy fails authentication; it is replaced and the previous copy is kept');
    return false;
  }
}
