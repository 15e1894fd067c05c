import { mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic.js';
import { toldAsDifference } from '../dispatch/queue.js';
import { HmdError, ErrorCode, describeError } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * The state file's format version. A newer daemon reads every older version through
 * MIGRATIONS (each step turns version n into n+1); an older daemon refuses a newer file rather
 * than misreading it (it is moved aside and the daemon starts empty, logging why).
 */
export const STATE_VERSION = 2;

type Doc = Record<string, unknown>;
export type Migrations = Record<number, (doc: Doc) => Doc>;
/** One step per format change, from the version it reads. */
const MIGRATIONS: Migrations = {
  1: toldAsDifference,
};

export function migrateState(doc: Doc, migrations: Migrations = MIGRATIONS, target = STATE_VERSION): Doc {
  let cur = doc;
  for (let v = Number(cur['version']); v < target; v = Number(cur['version'])) {
    const step = migrations[v];
    if (step === undefined) throw new Error(`no migration from state version ${v}`);
    cur = step(cur);
  }
  return cur;
}

export interface StateStoreOptions {
  dir: string;
  logger: Logger;
  /** Builds the document to persist (called at flush time, so it is always current). */
  collect: () => Record<string, unknown>;
  /** Coalescing window: changes within it share one write and one fsync. */
  flushDelayMs?: number;
  /** Longest a progress-only change (see `markProgress`) waits for a write. */
  progressDelayMs?: number;
  file?: string;
}

/**
 * The daemon's durable state, in one file so the device table and the delivery queues are
 * always consistent with each other. Writes are batched off the delivery path: components
 * mark the state dirty and go on; `afterDurable` callbacks (e.g. deleting spool files) run
 * once a write that covers their change has reached the disk.
 */
export class StateStore {
  private readonly path: string;
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  /** When the scheduled write is due (performance.now()), so a sooner need can advance it. */
  private timerDue = 0;
  private flushing = false;
  private waiting: Array<() => void> = [];
  private failing = false;
  /** The most urgent need that arrived while a write was under way. */
  private pendingDelayMs = Infinity;
  private stopped = false;
  private inFlight: Promise<void> | null = null;
  /** How long the last write took: the next one waits at least twice that, so saving a large
   * state during a burst takes at most about a third of the time. */
  private lastWriteMs = 0;

  constructor(private readonly opts: StateStoreOptions) {
    this.path = join(opts.dir, opts.file ?? 'state.json');
  }

  /** Reads the saved state; null when there is none. A corrupt file is moved aside, not fatal. */
  load(): Record<string, unknown> | null {
    mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new HmdError(ErrorCode.StateCorrupt, `cannot read ${this.path}: ${describeError(err)}`, { cause: err });
    }
    try {
      const doc = JSON.parse(text) as unknown;
      if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error('not an object');
      const version = (doc as { version?: unknown }).version;
      if (typeof version !== 'number' || !Number.isInteger(version) || version < 1 || version > STATE_VERSION) {
        throw new Error(`unsupported state version ${String(version)} (this daemon reads 1 to ${STATE_VERSION})`);
      }
      if (version < STATE_VERSION) this.opts.logger.info({ from: version, to: STATE_VERSION }, 'migrating saved state');
      return migrateState(doc as Doc);
    } catch (err) {
      const aside = `${this.path}.corrupt-${Date.now()}`;
      try {
        renameSync(this.path, aside);
      } catch {
        // leave it where it is
      }
      this.opts.logger.error({ file: this.path, movedTo: aside, err: describeError(err) }, 'saved state is unreadable; starting from an empty state');
      return null;
    }
  }

  markDirty(): void {
    if (this.stopped) return;
    this.dirty = true;
    this.schedule(this.opts.flushDelayMs ?? 10);
  }

  /**
   * A change that may reach the disk late: losing it in a crash costs a redelivery, never an
   * event (e.g. an acknowledgement: the event is sent again with its HMD_SEQUENCE). Such
   * changes are batched for up to `progressDelayMs`, so a burst of acknowledgements does not
   * rewrite the state file every few milliseconds.
   */
  markProgress(): void {
    if (this.stopped) return;
    this.dirty = true;
    this.schedule(this.opts.progressDelayMs ?? 1000);
  }

  /** Runs `cb` after the next write that includes every change made so far. */
  afterDurable(cb: () => void): void {
    this.waiting.push(cb);
    this.markDirty();
  }

  private schedule(wantMs: number): void {
    // While a write is under way, the next one is scheduled when it ends (and it reads the
    // dirty flag then); a failing disk is retried once a second whatever the need.
    if (this.flushing) {
      this.pendingDelayMs = Math.min(this.pendingDelayMs, wantMs);
      return;
    }
    const delay = this.failing ? 1000 : Math.max(wantMs, 2 * this.lastWriteMs);
    const due = performance.now() + delay;
    if (this.timer !== undefined) {
      if (this.timerDue <= due) return;
      clearTimeout(this.timer);
    }
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, delay);
  }

  /**
   * Writes now if anything changed. The document is built synchronously (a consistent
   * snapshot); the write and its fsyncs run off the event loop, so deliveries go on meanwhile.
   */
  async flush(): Promise<void> {
    if (!this.dirty || this.flushing) return this.inFlight ?? undefined;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.flushing = true;
    this.dirty = false;
    const callbacks = this.waiting;
    this.waiting = [];
    this.inFlight = this.write(callbacks);
    await this.inFlight;
  }

  private async write(callbacks: Array<() => void>): Promise<void> {
    const began = performance.now();
    try {
      const doc = { version: STATE_VERSION, savedAt: new Date().toISOString(), ...this.opts.collect() };
      await writeFileAtomic(this.path, Buffer.from(JSON.stringify(doc)));
      this.lastWriteMs = performance.now() - began;
      if (this.failing) this.opts.logger.info({ file: this.path }, 'state is being saved again');
      this.failing = false;
    } catch (err) {
      // Disk full or read-only: keep everything in memory, keep the spool files, try again.
      if (!this.failing) this.opts.logger.error({ file: this.path, err: describeError(err) }, 'cannot save state; will retry');
      this.failing = true;
      this.dirty = true;
      this.waiting = callbacks.concat(this.waiting);
      this.flushing = false;
      this.inFlight = null;
      this.schedule(1000);
      return;
    }
    this.flushing = false;
    this.inFlight = null;
    for (const cb of callbacks) {
      try {
        cb();
      } catch (err) {
        this.opts.logger.error({ err: describeError(err) }, 'after-save callback failed');
      }
    }
    const need = this.pendingDelayMs;
    this.pendingDelayMs = Infinity;
    if (this.dirty) this.schedule(need === Infinity ? (this.opts.flushDelayMs ?? 10) : need);
  }

  /** Final write at shutdown (waits for a write under way first). */
  async stop(): Promise<void> {
    await this.inFlight;
    await this.flush();
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  get healthy(): boolean {
    return !this.failing;
  }
}
