/**
 * Live events from `udevadm monitor --udev --property` (config `devices.source: "udevadm"`):
 * an alternative to the spool for hosts where the rules cannot be installed. Its output is
 * blocks of `UDEV  [time] action devpath (subsystem)`, then `KEY=VALUE` lines, then a blank
 * line. Each block gets the same validation as a spool file. The child is restarted with
 * backoff if it dies; a missing udevadm is logged once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { DeviceEvent } from '../devices/types.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { LIMITS, entriesToRecord, parseEventRecord } from './properties.js';

export interface UdevadmMonitorOptions {
  logger: Logger;
  onEvents: (events: DeviceEvent[]) => void;
  command?: string;
  args?: readonly string[];
  /** First restart delay; doubles up to maxBackoffMs, back to the first after a stable run. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

const HEADER_RE = /^UDEV\s+\[[^\]]*\]\s+(\S+)\s+(\S+)\s+\((.*)\)\s*$/;
const STABLE_MS = 10_000;

/** Incremental parser of monitor output; feed it chunks, it returns the complete blocks' events. */
export class MonitorParser {
  private partial = '';
  private block: Array<[string, string]> | null = null;
  private blockBytes = 0;
  private blockError: string | null = null;

  constructor(private readonly onInvalid: (reason: string) => void) {}

  push(chunk: string): DeviceEvent[] {
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    if (this.partial.length > LIMITS.fileBytes) {
      this.partial = '';
      this.fail('line longer than the event size limit');
    }
    const out: DeviceEvent[] = [];
    for (const line of lines) {
      const e = this.line(line);
      if (e !== null) out.push(e);
    }
    return out;
  }

  private line(line: string): DeviceEvent | null {
    if (line === '') return this.finish();
    if (this.block === null) {
      // Banner lines ("monitor will print…") and KERNEL blocks are not ours: skip to a header.
      if (HEADER_RE.test(line)) {
        this.block = [];
        this.blockBytes = 0;
        this.blockError = null;
      }
      return null;
    }
    if (this.blockError !== null) return null;
    this.blockBytes += line.length + 1;
    if (this.blockBytes > LIMITS.fileBytes) return this.fail(`event larger than ${LIMITS.fileBytes} bytes`);
    const eq = line.indexOf('=');
    if (eq <= 0) return this.fail(`line is not KEY=VALUE: ${JSON.stringify(line.slice(0, 40))}`);
    this.block.push([line.slice(0, eq), line.slice(eq + 1)]);
    return null;
  }

  private finish(): DeviceEvent | null {
    const block = this.block;
    const err = this.blockError;
    this.block = null;
    if (block === null) return null;
    if (err !== null) {
      this.onInvalid(err);
      return null;
    }
    try {
      return parseEventRecord(entriesToRecord(block), 'udevadm');
    } catch (e) {
      this.onInvalid(describeError(e));
      return null;
    }
  }

  private fail(reason: string): null {
    if (this.block !== null) this.blockError ??= reason;
    else this.onInvalid(reason);
    return null;
  }
}

export class UdevadmMonitorSource {
  private child: ChildProcess | null = null;
  private stopped = true;
  private restartTimer: NodeJS.Timeout | null = null;
  private delay: number;
  private missingLogged = false;

  constructor(private readonly opts: UdevadmMonitorOptions) {
    this.delay = opts.backoffMs ?? 500;
  }

  start(): Promise<void> {
    if (!this.stopped) return Promise.resolve();
    this.stopped = false;
    this.spawnChild();
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => child.kill('SIGKILL'), 2000);
      child.once('close', () => {
        clearTimeout(force);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  private spawnChild(): void {
    const log = this.opts.logger;
    const command = this.opts.command ?? 'udevadm';
    const args = this.opts.args ?? ['monitor', '--udev', '--property'];
    const started = Date.now();
    const parser = new MonitorParser((reason) => log.warn({ reason }, 'invalid udevadm monitor event dropped'));
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;

    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      const events = parser.push(chunk);
      if (events.length === 0 || this.stopped) return;
      try {
        this.opts.onEvents(events);
      } catch (err) {
        log.error({ err: describeError(err) }, 'udevadm event handler failed');
      }
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => log.debug({ stderr: chunk.slice(0, 500) }, 'udevadm monitor said'));

    let ended = false;
    const onEnded = (why: Record<string, unknown>): void => {
      if (ended) return;
      ended = true;
      if (this.child === child) this.child = null;
      if (this.stopped) return;
      if (Date.now() - started > STABLE_MS) this.delay = this.opts.backoffMs ?? 500;
      if (!this.missingLogged) log.warn({ ...why, restartInMs: this.delay }, 'udevadm monitor ended; restarting');
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (!this.stopped) this.spawnChild();
      }, this.delay);
      this.restartTimer.unref();
      this.delay = Math.min(this.delay * 2, this.opts.maxBackoffMs ?? 30_000);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        if (!this.missingLogged) log.warn({ command }, 'udevadm not found: no live events from udevadm monitor');
        this.missingLogged = true;
      } else {
        log.warn({ err: describeError(err) }, 'udevadm monitor failed');
      }
      // A child that never started gets no reliable 'close'.
      if (child.pid === undefined) onEnded({ err: describeError(err) });
    });
    child.on('spawn', () => {
      this.missingLogged = false; // if it vanishes again, say so again (once)
    });
    child.on('close', (code, signal) => onEnded({ code, signal }));
  }
}
