/**
 * The safe snapshot of a container's keystore directory. Everything in it is hostile input to a
 * root process, so each entry is:
 *
 *  1. `lstat`ed through its opened parent (`/proc/self/fd/<dirfd>/<name>`, see safe-fs.ts);
 *  2. refused unless it is a directory or a regular file with a single link (symlinks, FIFOs,
 *     sockets and device nodes are refused, as is a hard link that may point at a host file);
 *  3. opened through the same parent without following links: directories with
 *     O_DIRECTORY|O_NOFOLLOW|O_NONBLOCK, files first as O_PATH|O_NOFOLLOW (which opens no device
 *     driver and waits on no FIFO) and, once verified, reopened for reading via that descriptor;
 *  4. checked with `fstat` to be the very object `lstat` saw, so a swap in between is caught;
 *  5. read with a running byte count, so growth past the limit fails the save.
 *
 * A refused entry fails the whole save with an error naming the entry and the reason; it is
 * never skipped and never read. Only entries that vanish mid-walk are skipped (nothing to read).
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, HmdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Snapshot, SnapshotEntry } from './format.js';
import { WALK_LIMITS, openSourceRoot } from './measure.js';
import {
  DIR_FLAGS,
  PATH_FLAGS,
  REOPEN_READ_FLAGS,
  childPath,
  classify,
  displayPath,
  errnoCode,
  fdPath,
  listDir,
  lstatBig,
  permBits,
  sameObject,
} from './safe-fs.js';

export interface SnapshotOptions {
  limitBytes: number;
  maxEntries?: number;
  maxDepth?: number;
  /** Test hook: wait this long before reading each file. */
  readDelayMs?: number;
  /** Test hook: runs after an entry was `lstat`ed and before it is opened (to stage a swap). */
  beforeOpen?: (relPath: string) => void | Promise<void>;
  signal?: AbortSignal;
  logger?: Logger;
}

const SLASH = Buffer.from('/');
const READ_CHUNK = 64 * 1024;

export function rejectedEntry(rel: Buffer, reason: string): HmdError {
  const entry = rel.toString('utf8');
  return new HmdError(ErrorCode.KeystoreHostile, `keystore entry ${displayPath(rel)} rejected: ${reason}`, { details: { entry, reason } });
}

export async function takeSnapshot(root: string, opts: SnapshotOptions): Promise<Snapshot> {
  const walker = new SnapshotWalker(opts);
  const rootDir = await openSourceRoot(root);
  try {
    await walker.walkDir(rootDir, Buffer.alloc(0), 1);
  } finally {
    await rootDir.close();
  }
  return { entries: walker.entries, bytes: walker.bytes };
}

class SnapshotWalker {
  readonly entries: SnapshotEntry[] = [];
  bytes = 0;
  private count = 0;
  private readonly maxEntries: number;
  private readonly maxDepth: number;

  constructor(private readonly opts: SnapshotOptions) {
    this.maxEntries = opts.maxEntries ?? WALK_LIMITS.maxEntries;
    this.maxDepth = opts.maxDepth ?? WALK_LIMITS.maxDepth;
  }

  /** Takes every entry of `dir`, whose entries are `depth` components deep. */
  async walkDir(dir: FileHandle, prefix: Buffer, depth: number): Promise<void> {
    for (const name of await listDir(dir)) {
      this.opts.signal?.throwIfAborted();
      const rel = prefix.length > 0 ? Buffer.concat([prefix, SLASH, name]) : name;
      if (++this.count > this.maxEntries) throw rejectedEntry(rel, `the keystore holds more than ${this.maxEntries} entries`);
      if (depth > this.maxDepth) throw rejectedEntry(rel, `nested more than ${this.maxDepth} levels deep`);
      const path = childPath(dir, name);
      const st = await lstatBig(path).catch(vanishedOr);
      if (!st) {
        this.vanished(rel);
        continue;
      }
      const kind = classify(st);
      if (typeof kind === 'object') throw rejectedEntry(rel, kind.reject);
      if (kind === 'file') checkLinks(rel, st);
      await this.opts.beforeOpen?.(rel.toString('utf8'));
      if (kind === 'dir') await this.takeDir(path, rel, st, depth);
      else await this.takeFile(path, rel, st);
    }
  }

  private async takeDir(path: Buffer, rel: Buffer, seen: BigIntStats, depth: number): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await open(path, DIR_FLAGS);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return this.vanished(rel);
      throw rejectedEntry(rel, `was replaced during the save and is no longer a directory (${errnoCode(err) ?? 'open failed'})`);
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (!sameObject(seen, st)) throw rejectedEntry(rel, 'was replaced during the save');
      this.entries.push({ kind: 'dir', path: rel, mode: permBits(st.mode) });
      await this.walkDir(fh, rel, depth + 1);
    } finally {
      await fh.close();
    }
  }

  private async takeFile(path: Buffer, rel: Buffer, seen: BigIntStats): Promise<void> {
    let pathFd: FileHandle;
    try {
      pathFd = await open(path, PATH_FLAGS);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return this.vanished(rel);
      throw rejectedEntry(rel, `cannot be opened (${errnoCode(err) ?? 'open failed'})`);
    }
    let fh: FileHandle;
    try {
      verifySame(rel, seen, await pathFd.stat({ bigint: true }));
      fh = await open(fdPath(pathFd), REOPEN_READ_FLAGS);
    } finally {
      await pathFd.close();
    }
    try {
      const st = await fh.stat({ bigint: true });
      verifySame(rel, seen, st);
      const data = await this.readCounted(fh, rel, Number(st.size));
      this.entries.push({ kind: 'file', path: rel, mode: permBits(st.mode), data });
    } finally {
      await fh.close();
    }
  }

  /** Reads to end of file, whatever size `fstat` claimed, failing once the total passes the limit. */
  private async readCounted(fh: FileHandle, rel: Buffer, sizeHint: number): Promise<Buffer> {
    const { limitBytes, readDelayMs, signal } = this.opts;
    if (readDelayMs) await sleep(readDelayMs, undefined, signal ? { signal } : undefined);
    const chunks: Buffer[] = [];
    while (true) {
      signal?.throwIfAborted();
      // One byte beyond the allowance: reading it proves the file outgrew the limit.
      const room = limitBytes - this.bytes + 1;
      const buf = Buffer.allocUnsafe(Math.max(1, Math.min(READ_CHUNK, room, chunks.length === 0 ? sizeHint + 1 : READ_CHUNK)));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      this.bytes += bytesRead;
      if (this.bytes > limitBytes) {
        throw new HmdError(
          ErrorCode.KeystoreTooBig,
          `keystore grew past ${limitBytes} bytes during the save (while reading ${displayPath(rel)})`,
          { details: { entry: rel.toString('utf8'), reason: 'grew past the limit' } },
        );
      }
      chunks.push(buf.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks);
  }

  private vanished(rel: Buffer): void {
    this.opts.logger?.debug({ entry: rel.toString('utf8') }, 'keystore entry vanished during the save; skipped');
  }
}

function vanishedOr(err: unknown): undefined {
  if (errnoCode(err) === 'ENOENT') return undefined;
  throw err;
}

function checkLinks(rel: Buffer, st: BigIntStats): void {
  if (st.nlink > 1n) throw rejectedEntry(rel, `has ${st.nlink} hard links (it could be a link to a file outside the keystore)`);
}

/** The opened object must be the regular file `lstat` saw, still with a single link. */
function verifySame(rel: Buffer, seen: BigIntStats, now: BigIntStats): void {
  if (!sameObject(seen, now)) {
    const kind = classify(now);
    const what = typeof kind === 'object' ? ` (now it ${kind.reject})` : '';
    throw rejectedEntry(rel, `was replaced during the save${what}`);
  }
  checkLinks(rel, now);
}
