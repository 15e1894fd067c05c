/**
 * Restore: open the newest saved copy of a container, fall back to the previous one when the
 * newest fails authentication, and write it into a directory (write-tree.ts).
 */
import { ErrorCode, HmdError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseSnapshot, type Snapshot } from './format.js';
import { loadKey } from './key.js';
import { assertContainerId, storeFiles } from './paths.js';
import { unseal } from './seal.js';
import { KeystoreStore, type CopyName } from './store.js';
import { writeSnapshotTo, type WriteResult } from './write-tree.js';

export interface OpenedCopy {
  copy: CopyName;
  file: string;
  snapshot: Snapshot;
}

const LABEL: Record<CopyName, string> = { current: 'newest copy', previous: 'previous copy' };

/** The last good saved snapshot of `cid`; throws KEYSTORE_NOT_FOUND or KEYSTORE_AUTH. */
export async function openSaved(store: KeystoreStore, cid: string, key: Buffer, logger: Logger): Promise<OpenedCopy> {
  assertContainerId(cid);
  const files = storeFiles(store.dir, cid);
  const failures: string[] = [];
  for (const copy of ['current', 'previous'] as const) {
    const blob = await store.read(cid, copy);
    if (!blob) continue;
    try {
      return { copy, file: files[copy], snapshot: parseSnapshot(unseal(blob, key, cid)) };
    } catch (err) {
      const why = describeError(err);
      failures.push(`${LABEL[copy]} ${files[copy]}: ${why}`);
      logger.warn({ cid, file: files[copy], err: why }, `saved keystore ${LABEL[copy]} is unusable`);
    }
  }
  if (failures.length === 0) {
    throw new HmdError(ErrorCode.KeystoreNotFound, `no saved keystore for container ${cid} in ${store.dir}`, { details: { cid } });
  }
  throw new HmdError(ErrorCode.KeystoreAuth, `cannot restore the keystore of container ${cid}: no saved copy passes authentication (${failures.join('; ')})`, {
    details: { cid },
  });
}

export interface RestoreOptions {
  storeDir: string;
  keyFile: string;
  cid: string;
  toDir: string;
  logger: Logger;
}

export interface RestoreResult extends WriteResult {
  copy: CopyName;
  file: string;
}

export async function restoreKeystore(opts: RestoreOptions): Promise<RestoreResult> {
  const key = await loadKey(opts.keyFile, { create: false });
  const opened = await openSaved(new KeystoreStore(opts.storeDir), opts.cid, key, opts.logger);
  if (opened.copy === 'previous') {
    opts.logger.warn({ cid: opts.cid, file: opened.file }, 'restoring the previous saved copy: the newest one is missing or fails authentication');
  }
  const written = await writeSnapshotTo(opts.toDir, opened.snapshot);
  return { ...written, copy: opened.copy, file: opened.file };
}
