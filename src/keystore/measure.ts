/**
 * The quick size check behind `EFBIG`: an `lstat` walk that opens no file (only directories,
 * with O_DIRECTORY|O_NOFOLLOW|O_NONBLOCK, which cannot block), so a FIFO or device node in the
 * keystore cannot delay the answer. It stops as soon as the limit is passed. Anything odd it
 * meets is left for the snapshot, which refuses it and fails the save.
 */
import type { FileHandle } from 'node:fs/promises';
import { ErrorCode, HmdError, describeError, errnoCode } from '../errors.js';
import { childPath, listDir, lstatBig, openDir } from './safe-fs.js';

/** Bounds on the untrusted tree; the snapshot enforces them, the measure just stops at them. */
export const WALK_LIMITS = { maxEntries: 4096, maxDepth: 16 } as const;

export interface MeasureOptions {
  limitBytes: number;
  maxEntries?: number;
  maxDepth?: number;
}

export interface Measurement {
  /** Bytes of regular-file content seen (stops growing once past the limit). */
  bytes: number;
  overLimit: boolean;
}

/** Opens the keystore directory itself; its absence or oddity is a source fault (EAGAIN). */
export async function openSourceRoot(root: string): Promise<FileHandle> {
  try {
    return await openDir(root);
  } catch (err) {
    const code = errnoCode(err);
    const why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'ELOOP'
          ? 'is a symbolic link'
          : code === 'ENOTDIR'
            ? 'is not a directory'
            : `cannot be opened (${describeError(err)})`;
    throw new HmdError(ErrorCode.KeystoreSource, `keystore directory ${root} ${why}`, { cause: err, details: { dir: root } });
  }
}

export async function measureKeystore(root: string, opts: MeasureOptions): Promise<Measurement> {
  const maxEntries = opts.maxEntries ?? WALK_LIMITS.maxEntries;
  const maxDepth = opts.maxDepth ?? WALK_LIMITS.maxDepth;
  let bytes = 0;
  let entries = 0;
  const done = (): boolean => bytes > opts.limitBytes || entries >= maxEntries;

  const walk = async (dir: FileHandle, depth: number): Promise<void> => {
    for (const name of await listDir(dir, maxEntries - entries)) {
      if (done()) return;
      entries++;
      const path = childPath(dir, name);
      const st = await lstatBig(path).catch(() => undefined); // vanished meanwhile
      if (st?.isFile()) bytes += Number(st.size);
      if (!st?.isDirectory() || depth >= maxDepth) continue;
      const sub = await openDir(path).catch(() => undefined); // swapped meanwhile
      if (!sub) continue;
      try {
        await walk(sub, depth + 1);
      } finally {
        await sub.close();
      }
    }
  };

  const rootDir = await openSourceRoot(root);
  try {
    await walk(rootDir, 1);
  } catch (err) {
    throw new HmdError(ErrorCode.KeystoreSource, `cannot read keystore directory ${root}: ${describeError(err)}`, { cause: err });
  } finally {
    await rootDir.close();
  }
  return { bytes, overLimit: bytes > opts.limitBytes };
}
