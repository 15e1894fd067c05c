/**
 * The spool source (DESIGN A3, Part B): the primary way events come in. udev's helper drops one
 * file per event into the spool directory; this reads each new file once, validates it, emits
 * the events in SEQNUM order, and deletes a file only when the daemon says the state covering it
 * is durable (`release`), so nothing is lost while the daemon is down or crashes.
 *
 * New names come from a directory watch (fs.watch by default: see BENCHMARKS.md) and a periodic
 * rescan catches whatever a watch can miss. Whatever is in the folder, the daemon does not crash:
 * anything unreadable goes to the quarantine with its reason.
 */
import { lstat, mkdir, readdir, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { DeviceEvent } from '../devices/types.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { watchDir, type DirWatch, type WatcherKind } from './dir-watch.js';
import { QUARANTINE_DIR, Quarantine } from './quarantine.js';
import { parseSpoolName, readSpoolFile, type SpoolName } from './spool-file.js';

export interface SpoolSourceOptions {
  dir: string;
  logger: Logger;
  /** Called with each batch, sorted by SEQNUM. Must not throw (it is caught and logged). */
  onEvents: (events: DeviceEvent[]) => void;
  /** Safety-net rescan period. */
  rescanMs?: number;
  watcher?: WatcherKind;
  /** A dot-file (the helper's temp name) older than this is a crashed helper's leftover. */
  staleTempMs?: number;
  /** Most events per onEvents call (a large backlog comes in several, still in order); 128. */
  batchMax?: number;
  quarantineMax?: number;
  /** Told of every file moved to the quarantine (for metrics). */
  onQuarantine?: (name: string, reason: string) => void;
  now?: () => number;
}

const READ_CONCURRENCY = 16;
const MAX_SKIPPED = 10_000;

export class SpoolSource {
  private readonly log: Logger;
  private readonly quarantine: Quarantine;
  /** Emitted and not yet released: never emitted again by this instance. */
  private readonly inFlight = new Set<string>();
  /** Could not even be quarantined: skipped from now on (bounded). */
  private readonly skipped = new Set<string>();
  /** Names the watcher announced since the last pass. */
  private readonly announced = new Set<string>();
  private fullScanWanted = false;
  private kickQueued = false;
  private running: Promise<void> | null = null;
  private again = false;
  private watch: DirWatch | null = null;
  private watchedIno: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = true;

  constructor(private readonly opts: SpoolSourceOptions) {
    this.log = opts.logger;
    this.quarantine = new Quarantine({ spoolDir: opts.dir, logger: opts.logger, maxEntries: opts.quarantineMax ?? 1000 });
  }

  /** Files emitted and waiting for `release`. */
  get pendingCount(): number {
    return this.inFlight.size;
  }

  /** Creates the folder if needed, starts watching, then emits the backlog (in SEQNUM order). */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    await this.ensureDir();
    await this.rewatch();
    await this.rescan();
    this.timer = setInterval(() => void this.rescan(), this.opts.rescanMs ?? 1000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.closeWatch();
    await this.running;
  }

  /** Reads the whole folder now (also what the periodic timer does). */
  rescan(): Promise<void> {
    this.fullScanWanted = true;
    return this.drain();
  }

  /** Deletes spool files whose events the daemon's durable state now covers. */
  async release(files: readonly string[]): Promise<void> {
    await forEachLimit(files, READ_CONCURRENCY, async (file) => {
      const name = basename(file);
      if (parseSpoolName(name) === null) return; // only ever delete what the helper wrote
      try {
        await unlink(join(this.opts.dir, name));
        this.inFlight.delete(name);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.inFlight.delete(name);
        // Kept in flight so it is not delivered twice; a restart re-reads it and the table drops it.
        else this.log.warn({ file: name, err: describeError(err) }, 'cannot delete released spool file');
      }
    });
  }

  private kick(): void {
    if (this.kickQueued || this.stopped) return;
    this.kickQueued = true;
    // setImmediate, not at once: a burst of renames is read as one sorted batch.
    setImmediate(() => {
      this.kickQueued = false;
      void this.drain();
    });
  }

  /** Runs passes one at a time until nothing is left to look at. */
  private drain(): Promise<void> {
    if (this.running !== null) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.pass();
        } while (!this.stopped && (this.again || this.fullScanWanted || this.announced.size > 0));
      } catch (err) {
        this.log.error({ err: describeError(err) }, 'spool pass failed; the next rescan retries');
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  private async pass(): Promise<void> {
    if (this.stopped) return;
    const full = this.fullScanWanted;
    let names: string[];
    const bad: Array<{ name: string | Buffer; reason: string }> = [];
    if (full) {
      this.fullScanWanted = false;
      this.announced.clear();
      const listed = await this.listDir();
      names = listed.names;
      for (const raw of listed.undecodable) {
        if (!this.skipped.has(rawKey(raw))) bad.push({ name: raw, reason: 'file name is not valid UTF-8' });
      }
    } else {
      names = [...this.announced];
      this.announced.clear();
    }

    const candidates: Array<{ name: string; parsed: SpoolName }> = [];
    for (const name of names) {
      if (name === QUARANTINE_DIR || this.inFlight.has(name) || this.skipped.has(name)) continue;
      if (name.startsWith('.')) {
        if (full) await this.checkTemp(name, bad);
        continue;
      }
      const parsed = parseSpoolName(name);
      if (parsed === null) bad.push({ name, reason: 'file name is not <SEQNUM, 20 digits>-<ACTION>' });
      else candidates.push({ name, parsed });
    }
    candidates.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

    const batchMax = this.opts.batchMax ?? 128;
    for (let i = 0; i < candidates.length && !this.stopped; i += batchMax) {
      // Reads are synchronous (spool-file.ts): let other I/O in between two batches.
      if (i > 0) await new Promise((resolve) => setImmediate(resolve));
      const chunk = candidates.slice(i, i + batchMax);
      const events: DeviceEvent[] = [];
      for (const { name, parsed } of chunk) {
        const r = readSpoolFile(this.opts.dir, name, parsed);
        if (r.kind === 'event') events.push(r.event);
        else if (r.kind === 'bad') bad.push({ name, reason: r.reason });
        else if (r.kind === 'retry') this.log.warn({ file: name, reason: r.reason }, 'spool file not readable now; retried on the next rescan');
      }
      this.emit(events);
    }
    // After the good events went out: quarantining must not delay a delivery.
    for (const { name, reason } of bad) {
      if (this.stopped) break;
      const result = await this.quarantine.put(name, reason);
      if (result === 'failed') this.skip(typeof name === 'string' ? name : rawKey(name));
      else if (result === 'moved') this.notifyQuarantine(name.toString(), reason);
    }
  }

  private emit(events: DeviceEvent[]): void {
    if (events.length === 0 || this.stopped) return;
    events.sort((a, b) => (a.seqnum === b.seqnum ? 0 : (a.seqnum ?? 0n) < (b.seqnum ?? 0n) ? -1 : 1));
    for (const e of events) if (e.spoolFile !== undefined) this.inFlight.add(e.spoolFile);
    try {
      this.opts.onEvents(events);
    } catch (err) {
      this.log.error({ err: describeError(err), events: events.length }, 'spool event handler failed');
    }
  }

  private async checkTemp(name: string, bad: Array<{ name: string | Buffer; reason: string }>): Promise<void> {
    const limit = this.opts.staleTempMs ?? 60_000;
    try {
      const st = await lstat(join(this.opts.dir, name));
      const age = (this.opts.now ?? Date.now)() - st.mtimeMs;
      if (age > limit) bad.push({ name, reason: `temporary file left over (${Math.round(age / 1000)} s old): its writer died` });
    } catch {
      // renamed into place or removed meanwhile
    }
  }

  /**
   * readdir, recreating the folder (and the watch) if it vanished or was replaced. Names are read
   * as bytes: one that is no UTF-8 would otherwise come back as a name no file has.
   */
  private async listDir(): Promise<{ names: string[]; undecodable: Buffer[] }> {
    let ino: number | null = null;
    try {
      ino = (await stat(this.opts.dir)).ino;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.log.warn({ dir: this.opts.dir }, 'spool directory vanished: recreating it');
      await this.ensureDir();
    }
    if (ino === null || ino !== this.watchedIno || this.watch === null) await this.rewatch();
    const names: string[] = [];
    const undecodable: Buffer[] = [];
    for (const raw of await readdir(this.opts.dir, { encoding: 'buffer' })) {
      const name = raw.toString('utf8');
      if (Buffer.from(name).equals(raw)) names.push(name);
      else undecodable.push(raw);
    }
    return { names, undecodable };
  }

  private async ensureDir(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
  }

  private async rewatch(): Promise<void> {
    await this.closeWatch();
    if (this.stopped) return;
    try {
      this.watchedIno = (await stat(this.opts.dir)).ino;
      const watch = await watchDir(this.opts.dir, this.opts.watcher ?? 'fswatch', {
        onName: (name) => {
          // No name, or one decoded with U+FFFD (not UTF-8): only a full listing sees the real one.
          // The folder's own name: the folder itself was removed or replaced.
          if (name === null || name.includes('\uFFFD') || name === basename(this.opts.dir)) this.fullScanWanted = true;
          else if (!name.startsWith('.')) this.announced.add(name);
          else return; // temp files: the rename into place announces the real name
          this.kick();
        },
        onError: (err) => {
          this.log.warn({ err: describeError(err) }, 'spool watch failed; rescanning');
          void this.closeWatch().then(() => this.rescan());
        },
      });
      // stop() or another rewatch may have run while chokidar got ready: keep one watch only.
      if (this.stopped || this.watch !== null) await watch.close();
      else this.watch = watch;
    } catch (err) {
      // The periodic rescan still delivers, only slower; it retries the watch each time.
      this.log.warn({ dir: this.opts.dir, err: describeError(err) }, 'cannot watch spool directory');
    }
  }

  private async closeWatch(): Promise<void> {
    const w = this.watch;
    this.watch = null;
    if (w !== null) await w.close();
  }

  private notifyQuarantine(name: string, reason: string): void {
    try {
      this.opts.onQuarantine?.(name, reason);
    } catch (err) {
      this.log.warn({ err: describeError(err) }, 'quarantine listener failed');
    }
  }

  private skip(name: string): void {
    this.skipped.add(name);
    if (this.skipped.size > MAX_SKIPPED) {
      const oldest = this.skipped.values().next();
      if (oldest.done !== true) this.skipped.delete(oldest.value);
    }
  }
}

/** A key for a name that is no UTF-8: NUL-led, so it never equals a real (string) name. */
function rawKey(raw: Buffer): string {
  return `\0${raw.toString('latin1')}`;
}

async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
