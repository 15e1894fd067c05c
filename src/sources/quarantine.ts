/**
 * The spool's quarantine folder: files the daemon will not read are moved aside with a
 * `<name>.reason` text beside them, so an operator can see what arrived and why it was refused.
 * Bounded (oldest entries go first) so a flood cannot fill /run, and never throws: a file that
 * cannot even be moved is remembered and skipped by the caller.
 *
 * Names are handled as raw bytes: a file name need not be UTF-8, and decoding it would name a
 * file that does not exist.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';

export const QUARANTINE_DIR = 'quarantine';
const REASON = Buffer.from('.reason');

export type QuarantineResult = 'moved' | 'gone' | 'failed';

export interface QuarantineOptions {
  /** The spool directory; the quarantine lives in `<spoolDir>/quarantine`. */
  spoolDir: string;
  logger: Logger;
  /** Entries (a file and its reason) kept; older ones are deleted. */
  maxEntries?: number;
}

/** `<dir>/<name>` with the name's bytes kept as they are. */
function under(dir: string, name: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${dir}/`), name]);
}

export class Quarantine {
  readonly dir: string;
  private readonly maxEntries: number;
  /** Entries as last counted plus those added since; null until first counted. */
  private count: number | null = null;
  private uniq = 0;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: QuarantineOptions) {
    this.dir = join(opts.spoolDir, QUARANTINE_DIR);
    this.maxEntries = opts.maxEntries ?? 1000;
  }

  /** Moves `<spoolDir>/<name>` aside; 'failed' when it could not, 'gone' when it vanished first. */
  put(name: string | Buffer, reason: string): Promise<QuarantineResult> {
    // One at a time: choosing a free name and renaming onto it must not interleave.
    const run = this.chain.then(() => this.putNow(typeof name === 'string' ? Buffer.from(name) : name, reason));
    this.chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async putNow(name: Buffer, reason: string): Promise<QuarantineResult> {
    const log = this.opts.logger;
    const file = name.toString('utf8'); // for log lines only
    const source = under(this.opts.spoolDir, name);
    try {
      await this.ensureDir();
      const target = await this.freeName(name);
      // The reason first: whoever finds a quarantined file finds why it is there.
      const reasonFile = under(this.dir, Buffer.concat([target, REASON]));
      try {
        await writeFile(reasonFile, `${reason}\n`, { mode: 0o600, flag: 'wx' });
      } catch (err) {
        log.warn({ file, err: describeError(err) }, 'cannot write quarantine reason');
      }
      try {
        await rename(source, under(this.dir, target));
      } catch (err) {
        await unlink(reasonFile).catch(() => undefined);
        throw err;
      }
      log.warn({ file, quarantined: target.toString('utf8'), reason }, 'spool file quarantined');
      this.count = this.count === null ? null : this.count + 1;
      await this.prune();
      return 'moved';
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !(await exists(source))) return 'gone';
      log.error({ file, reason, err: describeError(err) }, 'cannot quarantine spool file; it will be skipped');
      return 'failed';
    }
  }

  private async ensureDir(): Promise<void> {
    try {
      const st = await lstat(this.dir);
      if (st.isDirectory()) return;
      // Something else took the folder's name (it came in as a spool file): it goes.
      await rm(this.dir, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    // Not recursive: a vanished spool folder is the spool source's to notice and recreate.
    await mkdir(this.dir, { mode: 0o700 });
  }

  /** `name`, or `name.1`, `name.2`…, such that neither it nor its `.reason` exists yet. */
  private async freeName(name: Buffer): Promise<Buffer> {
    // Leave room for the suffixes within NAME_MAX (255 bytes); a hash keeps long names apart.
    const stem =
      name.length <= 200
        ? name
        : Buffer.from(`${name.toString('utf8').slice(0, 40)}~${createHash('sha256').update(name).digest('hex').slice(0, 16)}`);
    for (let i = 0; i < 1000; i++) {
      const candidate = i === 0 ? stem : Buffer.concat([stem, Buffer.from(`.${i}`)]);
      if (!(await exists(under(this.dir, candidate))) && !(await exists(under(this.dir, Buffer.concat([candidate, REASON]))))) {
        return candidate;
      }
    }
    return Buffer.concat([stem, Buffer.from(`.${Date.now()}-${process.pid}-${++this.uniq}`)]);
  }

  private async prune(): Promise<void> {
    try {
      await this.pruneIfNeeded();
    } catch (err) {
      this.opts.logger.warn({ err: describeError(err) }, 'cannot prune the quarantine');
    }
  }

  private async pruneIfNeeded(): Promise<void> {
    // Counting lstat()s every entry: do it only once per tenth of the limit, not per file.
    if (this.count !== null && this.count <= this.maxEntries + Math.ceil(this.maxEntries / 10)) return;
    // latin1 maps bytes to characters one to one: any name survives the round trip.
    const names = (await readdir(this.dir, { encoding: 'buffer' })).map((b) => b.toString('latin1'));
    const present = new Set(names);
    const suffix = REASON.toString('latin1');
    const groups = new Map<string, string[]>();
    for (const n of names) {
      const stem = n.slice(0, -suffix.length);
      const base = n.endsWith(suffix) && present.has(stem) ? stem : n;
      const g = groups.get(base);
      if (g === undefined) groups.set(base, [n]);
      else g.push(n);
    }
    this.count = groups.size;
    if (groups.size <= this.maxEntries) return;
    const path = (n: string): Buffer => under(this.dir, Buffer.from(n, 'latin1'));
    const aged = await Promise.all([...groups].map(async ([base, members]) => ({ members, mtime: await mtimeOf(path(base)) })));
    aged.sort((a, b) => a.mtime - b.mtime);
    const excess = aged.slice(0, aged.length - this.maxEntries);
    for (const g of excess) {
      for (const m of g.members) await rm(path(m), { recursive: true, force: true });
    }
    this.count = aged.length - excess.length;
    this.opts.logger.warn({ deleted: excess.length, kept: this.count }, 'quarantine full: oldest entries deleted');
  }
}

async function exists(path: Buffer): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function mtimeOf(path: Buffer): Promise<number> {
  try {
    return (await lstat(path)).mtimeMs;
  } catch {
    return 0;
  }
}
