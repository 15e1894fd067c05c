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
import { ErrorCode, HmdError, errnoCode } from '../errors.js';
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
  /** Test hook: wait this long before reading each file (files are then read one at a time). */
  readDelayMs?: number;
  /** Test hook: runs after an entry was `lstat`ed and before it is opened (to stage a swap). */
  beforeOpen?: (relPath: string) => void | Promise<void>;
  signal?: AbortSignal;
  logger?: Logger;
}

const SLASH = Buffer.from('/');
const READ_CHUNK = 64 * 1024;
const FILE_CONCURRENCY = 8;

export function rejectedEntry(rel: Buffer, reason: string): HmdError {
  const entry = rel.toString('utf8');
  return new HmdError(ErrorCode.KeystoreHostile, `keystore entry ${displayPath(rel)} rejected: ${reason}`, { details: { entry, reason } });
}

export async function takeSnapshot(root: string, opts: SnapshotOptions): Promise<Snapshot> {
  const walker = new SnapshotWalker(opts);
  const rootDir = await openSourceRoot(root);
  try {
    const entries = await walker.walkDir(rootDir, Buffer.alloc(0), 1);
    return { entries, bytes: walker.bytes };
  } finally {
    await rootDir.close();
  }
}

/** What the first look at an entry found: a file already read, or a directory still to walk. */
type Found = { kind: 'file'; entry: SnapshotEntry } | { kind: 'dir'; path: Buffer; rel: Buffer; st: BigIntStats } | undefined;

class SnapshotWalker {
  bytes = 0;
  private count = 0;
  private readonly maxEntries: number;
  private readonly maxDepth: number;
  /** Files are looked at and read a few at a time (the walk is I/O-bound); directories one by one. */
  private readonly limiter: Limiter;

  constructor(private readonly opts: SnapshotOptions) {
    // With the delay hook, one file at a time: a save of N files then takes N delays, as tests expect.
    this.limiter = new Limiter(opts.readDelayMs ? 1 : FILE_CONCURRENCY);
    this.maxEntries = opts.maxEntries ?? WALK_LIMITS.maxEntries;
    this.maxDepth = opts.maxDepth ?? WALK_LIMITS.maxDepth;
  }

  /** The entries of `dir` (whose entries are `depth` components deep) and below, parents first. */
  async walkDir(dir: FileHandle, prefix: Buffer, depth: number): Promise<SnapshotEntry[]> {
    const names = await listDir(dir, this.maxEntries - this.count);
    const relOf = (name: Buffer): Buffer => (prefix.length > 0 ? Buffer.concat([prefix, SLASH, name]) : name);
    const first = names[0];
    if (first && depth > this.maxDepth) throw rejectedEntry(relOf(first), `nested more than ${this.maxDepth} levels deep`);
    this.count += names.length;
    const over = names[names.length - (this.count - this.maxEntries)];
    if (this.count > this.maxEntries && over) throw rejectedEntry(relOf(over), `the keystore holds more than ${this.maxEntries} entries`);

    // Every task settles before we return or throw: the tasks use `dir` by its fd number, which
    // must not be closed (and reused by another open) under them.
    const found = await allOrFirstError(names.map((name) => this.limiter.run(() => this.look(dir, name, relOf(name)))));
    const out: SnapshotEntry[] = [];
    for (const f of found) {
      if (f?.kind === 'file') out.push(f.entry);
      if (f?.kind !== 'dir') continue;
      this.opts.signal?.throwIfAborted();
      await this.opts.beforeOpen?.(f.rel.toString('utf8'));
      out.push(...(await this.takeDir(f.path, f.rel, f.st, depth)));
    }
    return out;
  }

  /** `lstat`s one entry, refuses what is not a plain directory or file, and reads a file. */
  private async look(dir: FileHandle, name: Buffer, rel: Buffer): Promise<Found> {
    this.opts.signal?.throwIfAborted();
    const path = childPath(dir, name);
    const st = await lstatBig(path).catch(vanishedOr);
    if (!st) return this.vanished(rel);
    const kind = classify(st);
    if (typeof kind === 'object') throw rejectedEntry(rel, kind.reject);
    if (kind === 'dir') return { kind, path, rel, st };
    checkLinks(rel, st);
    await this.opts.beforeOpen?.(rel.toString('utf8'));
    const entry = await this.takeFile(path, rel, st);
    return entry && { kind, entry };
  }

  private async takeDir(path: Buffer, rel: Buffer, seen: BigIntStats, depth: number): Promise<SnapshotEntry[]> {
    let fh: FileHandle;
    try {
      fh = await open(path, DIR_FLAGS);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return this.vanished(rel) ?? [];
      throw rejectedEntry(rel, `was replaced during the save and is no longer a directory (${errnoCode(err) ?? 'open failed'})`);
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (!sameObject(seen, st)) throw rejectedEntry(rel, 'was replaced during the save');
      return [{ kind: 'dir', path: rel, mode: permBits(st.mode) }, ...(await this.walkDir(fh, rel, depth + 1))];
    } finally {
      await fh.close();
    }
  }

  private async takeFile(path: Buffer, rel: Buffer, seen: BigIntStats): Promise<SnapshotEntry | undefined> {
    let pathFd: FileHandle;
    try {
      pathFd = await open(path, PATH_FLAGS);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return this.vanished(rel);
      throw rejectedEntry(rel, `cannot be opened (${errnoCode(err) ?? 'open failed'})`);
    }
    let fh: FileHandle;
    let st: BigIntStats;
    try {
      st = await pathFd.stat({ bigint: true });
      verifySame(rel, seen, st);
      // Reopening through the O_PATH descriptor opens exactly the object just verified.
      fh = await open(fdPath(pathFd), REOPEN_READ_FLAGS);
    } finally {
      await pathFd.close();
    }
    try {
      const data = await this.readCounted(fh, rel, Number(st.size));
      return { kind: 'file', path: rel, mode: permBits(st.mode), data };
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
      // One byte beyond the allowance: reading it proves the keystore outgrew the limit.
      const room = limitBytes - this.bytes + 1;
      const want = chunks.length === 0 ? sizeHint + 1 : READ_CHUNK;
      const buf = Buffer.allocUnsafe(Math.max(1, Math.min(READ_CHUNK, room, want)));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      this.bytes += bytesRead;
      if (this.bytes > limitBytes) {
        throw new HmdError(
          ErrorCode.KeystoreTooBig,
          `keystore grew past ${limitBytes} bytes during the save (while reading ${displayPath(rel)})`,
          { details: { entry: rel.toString('utf8'), reason: 'grew past the limit' } },
        );
      }
      chunks.push(buf.subarray(0, bytesRead));
      // A regular file reads short only at its end: no extra read to learn that.
      if (bytesRead < buf.length) break;
    }
    return Buffer.concat(chunks);
  }

  private vanished(rel: Buffer): undefined {
    this.opts.logger?.debug({ entry: rel.toString('utf8') }, 'keystore entry vanished during the save; skipped');
    return undefined;
  }
}

/** Waits for every promise; then throws the first rejection in list order, if any. */
async function allOrFirstError<T>(promises: Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

/** A counting semaphore: at most `max` tasks at once. */
class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
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
