/** Crash-safe file replacement: temp file, fsync, rename, fsync of the directory. */
import { randomBytes } from 'node:crypto';
import { constants as C, type PathLike } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Makes the directory's entries (a rename, a link) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, C.O_RDONLY | C.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A fresh temp name beside `path`, hidden and recognisable so leftovers can be cleaned up. */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
}

export const TEMP_RE = /^\..+\.tmp-[0-9a-f]{12}$/;

/**
 * Creates `path` (it must not exist; links are not followed), writes `data` with `mode` and
 * fsyncs it. On failure the partial file is removed.
 */
export async function writeNewFileSynced(path: PathLike, data: Uint8Array, mode: number, extraFlags = 0): Promise<void> {
  const fh = await open(path, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW | extraFlags, mode);
  try {
    await fh.chmod(mode); // the umask may have narrowed or (in odd setups) not applied
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(path).catch(() => undefined);
    throw err;
  }
  await fh.close();
}

/** Writes `data` to a new temp file beside `path` (exclusive create, given mode) and fsyncs it. */
export async function writeTemp(path: string, data: Uint8Array, mode: number): Promise<string> {
  const tmp = tempNameFor(path);
  await writeNewFileSynced(tmp, data, mode);
  return tmp;
}

/** Replaces `path` with `data` so that a crash leaves either the old or the new file, whole. */
export async function writeFileAtomic(path: string, data: Uint8Array, mode = 0o600): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = await writeTemp(path, data, mode);
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(path));
}
