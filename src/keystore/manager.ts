/**
 * StartKeystoreSave / GetKeystoreStatus for identified containers: at most one save per
 * container at a time, saves of different containers independent, and the last result of each
 * container persisted so it survives a daemon restart.
 */
import { performance } from 'node:perf_hooks';
import type { Config } from '../config/schema.js';
import { CONTAINER_ID_RE, Status } from '../constants.js';
import { ErrorCode, HmdError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { loadKey } from './key.js';
import { measureKeystore } from './measure.js';
import { CID_PLACEHOLDER, sourceDirFor, statusFile } from './paths.js';
import { runSave } from './save.js';
import { loadStatuses, saveStatuses, type KeystoreRecord } from './status-file.js';
import { KeystoreStore } from './store.js';

export interface KeystoreManagerOptions {
  config: Config['keystore'];
  /** Persist last status per container here (survives restart). */
  stateDir: string;
  logger: Logger;
  /** Test hook: delay each file read by this many ms (reads then run one at a time), to make a save slow deterministically. */
  readDelayMs?: number;
  /** Test hook: runs after an entry was `lstat`ed and before it is opened (to stage a swap). */
  beforeOpen?: (cid: string, relPath: string) => void | Promise<void>;
  /** How long stop() lets running saves finish before interrupting them. Default 1000 ms. */
  stopGraceMs?: number;
}

export interface KeystoreDescription {
  cid: string;
  status: number;
  /** End of the last successful save. */
  lastSaveAt?: string;
  /** Start of the last accepted save. */
  lastAttemptAt?: string;
  lastError?: string;
  saves: number;
  failures: number;
  /** Size and duration of the last successful save. */
  files?: number;
  dirs?: number;
  bytes?: number;
  durationMs?: number;
}

interface Running {
  abort: AbortController;
  done: Promise<void>;
}

const INTERRUPTED = 'interrupted: the daemon stopped during the save';

export class KeystoreManager {
  private readonly records = new Map<string, KeystoreRecord>();
  /** Containers with a save being checked ('checking') or running. */
  private readonly busy = new Map<string, Running | 'checking'>();
  private readonly store: KeystoreStore;
  private readonly statusPath: string;
  private readonly log: Logger;
  private stopping = false;
  private persistQueued = false;
  private persistChain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: KeystoreManagerOptions) {
    if (!opts.config.sourceDir.includes(CID_PLACEHOLDER)) {
      throw new HmdError(ErrorCode.ConfigInvalid, `keystore.sourceDir must contain ${CID_PLACEHOLDER}: ${opts.config.sourceDir}`);
    }
    this.store = new KeystoreStore(opts.config.storeDir);
    this.statusPath = statusFile(opts.stateDir);
    // Callers may already have bound the component; binding it twice duplicates the JSON key.
    this.log = opts.logger.bindings()['component'] === undefined ? opts.logger.child({ component: 'keystore' }) : opts.logger;
  }

  async start(): Promise<void> {
    const loaded = await loadStatuses(this.statusPath);
    if (loaded.problem) this.log.warn({ problem: loaded.problem }, 'keystore status file ignored; every container starts at status 0');
    let interrupted = 0;
    for (const [cid, rec] of loaded.records) {
      if (this.records.has(cid)) continue;
      // A save that was running when the daemon died did not complete: report it as failed.
      if (rec.status === Status.EBUSY) {
        this.records.set(cid, { ...rec, status: Status.EIO, lastError: INTERRUPTED, failures: rec.failures + 1 });
        interrupted++;
      } else {
        this.records.set(cid, rec);
      }
    }
    if (interrupted > 0) this.schedulePersist();
    const temps = await this.store.cleanupTemps().catch((err: unknown) => {
      this.log.warn({ err: describeError(err) }, 'cannot clean up temp files in the keystore store');
      return 0;
    });
    this.log.debug({ containers: this.records.size, interrupted, temps }, 'keystore statuses loaded');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const running = [...this.busy.values()].filter((b): b is Running => b !== 'checking');
    if (running.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.opts.stopGraceMs ?? 1000);
      });
      await Promise.race([Promise.all(running.map((r) => r.done)), grace]);
      clearTimeout(timer);
      for (const r of running) r.abort.abort(new HmdError(ErrorCode.Internal, INTERRUPTED));
      await Promise.all(running.map((r) => r.done));
    }
    this.schedulePersist();
    await this.persistChain;
  }

  /** StartKeystoreSave: 0, EBUSY, EAGAIN or EFBIG. The save itself runs in the background. */
  async startSave(cid: string): Promise<number> {
    if (!CONTAINER_ID_RE.test(cid)) {
      this.log.error({ cid }, 'keystore save refused: not a container ID');
      return Status.EAGAIN;
    }
    if (this.stopping) return Status.EAGAIN;
    if (this.busy.has(cid)) return Status.EBUSY;
    this.busy.set(cid, 'checking'); // claimed before the first await: a concurrent call sees EBUSY
    let accepted = false;
    try {
      const sourceDir = sourceDirFor(this.opts.config.sourceDir, cid);
      const { limitBytes } = this.opts.config;
      const size = await measureKeystore(sourceDir, { limitBytes });
      if (size.overLimit) {
        this.log.warn({ cid, bytes: size.bytes, limitBytes }, `keystore save refused: more than ${limitBytes} bytes of file content`);
        return Status.EFBIG;
      }
      const key = await loadKey(this.opts.config.keyFile, { create: true });
      if (this.stopping) return Status.EAGAIN;
      this.launch(cid, sourceDir, key);
      accepted = true;
      return Status.OK;
    } catch (err) {
      this.log.error({ cid, code: (err as Partial<HmdError>).code, err: describeError(err) }, `keystore save not started: ${describeError(err)}`);
      return Status.EAGAIN;
    } finally {
      if (!accepted) this.busy.delete(cid);
    }
  }

  /** GetKeystoreStatus: 0 (last save completed, or none), EBUSY (running) or EIO (last save failed). */
  getStatus(cid: string): number {
    const b = this.busy.get(cid);
    if (b !== undefined && b !== 'checking') return Status.EBUSY;
    return this.records.get(cid)?.status ?? Status.OK;
  }

  describe(): KeystoreDescription[] {
    return [...this.records.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([cid, r]) => ({ cid, ...r, status: this.getStatus(cid) }));
  }

  private launch(cid: string, sourceDir: string, key: Buffer): void {
    const abort = new AbortController();
    const t0 = performance.now();
    const before = this.records.get(cid) ?? { status: Status.OK, saves: 0, failures: 0 };
    this.records.set(cid, { ...before, status: Status.EBUSY, lastAttemptAt: new Date().toISOString() });
    this.schedulePersist();
    const { beforeOpen } = this.opts;
    const done = runSave({
      cid,
      sourceDir,
      store: this.store,
      key,
      limitBytes: this.opts.config.limitBytes,
      logger: this.log,
      signal: abort.signal,
      readDelayMs: this.opts.readDelayMs,
      beforeOpen: beforeOpen && ((rel) => beforeOpen(cid, rel)),
    }).then(
      (res) => {
        const durationMs = Math.round((performance.now() - t0) * 1000) / 1000;
        const { lastError: _dropped, ...rest } = this.records.get(cid) ?? before;
        this.records.set(cid, { ...rest, ...res, status: Status.OK, lastSaveAt: new Date().toISOString(), durationMs, saves: rest.saves + 1 });
        this.log.info({ cid, ...res, durationMs }, 'keystore saved');
      },
      (err: unknown) => {
        const message = abort.signal.aborted ? INTERRUPTED : describeError(err);
        const rec = this.records.get(cid) ?? before;
        this.records.set(cid, { ...rec, status: Status.EIO, lastError: message, failures: rec.failures + 1 });
        const details = err instanceof HmdError ? { code: err.code, ...err.details } : {};
        this.log.error({ cid, ...details }, `keystore save failed: ${message}`);
      },
    );
    const settled = done.finally(() => {
      this.busy.delete(cid);
      this.schedulePersist();
    });
    this.busy.set(cid, { abort, done: settled });
  }

  /** Writes the statuses soon; writes never overlap and a burst of changes makes one write. */
  private schedulePersist(): void {
    if (this.persistQueued) return;
    this.persistQueued = true;
    this.persistChain = this.persistChain.then(async () => {
      this.persistQueued = false;
      try {
        await saveStatuses(this.statusPath, this.records);
      } catch (err) {
        this.log.error({ err: describeError(err), file: this.statusPath }, 'cannot persist keystore statuses');
      }
    });
  }
}
