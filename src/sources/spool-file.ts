/**
 * One spool file (DESIGN A3): its name, `<SEQNUM zero-padded to 20 digits>-<ACTION>`, and its
 * content, the helper's `env -0` output. Reading never blocks and never follows a link: the
 * spool is input, and a FIFO or a device node dropped into it must not stall or poke anything.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { DEVICE_ACTIONS, type DeviceAction, type DeviceEvent } from '../devices/types.js';
import { describeError } from '../errors.js';
import { LIMITS, U64_MAX, entriesToRecord, parseEventRecord, parseNulRecords } from './properties.js';

const NAME_RE = /^([0-9]{20})-([a-z]+)$/;
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW | constants.O_NOCTTY;

export interface SpoolName {
  seqnum: bigint;
  action: DeviceAction;
}

/** The SEQNUM and ACTION a helper-written name carries, or null for any other name. */
export function parseSpoolName(name: string): SpoolName | null {
  const m = NAME_RE.exec(name);
  if (m === null) return null;
  const [, digits = '', action = ''] = m;
  const seqnum = BigInt(digits);
  if (seqnum > U64_MAX || !(DEVICE_ACTIONS as readonly string[]).includes(action)) return null;
  return { seqnum, action: action as DeviceAction };
}

export function spoolName(seqnum: bigint, action: DeviceAction): string {
  return `${seqnum.toString().padStart(20, '0')}-${action}`;
}

export type SpoolRead =
  | { kind: 'event'; event: DeviceEvent }
  | { kind: 'bad'; reason: string }
  /** Vanished between listing and reading (released, or removed by someone): nothing to do. */
  | { kind: 'gone' }
  /** A passing resource shortage (file descriptors, memory): left in place for the next rescan. */
  | { kind: 'retry'; reason: string };

const TRANSIENT = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN', 'EINTR', 'EBUSY']);

function fileKind(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/** One reusable read buffer: reading is synchronous, so it is never shared by two reads. */
const scratch = Buffer.allocUnsafe(LIMITS.fileBytes + 1);

/**
 * Reads and validates `<dir>/<name>`; `name` must have passed parseSpoolName.
 *
 * Synchronous on purpose: the spool is on tmpfs (/run), where lstat+open+read+close of a small
 * file costs tens of microseconds, while the same through the thread pool costs five round trips
 * (see BENCHMARKS.md). Nothing here can block: no FIFO or device is ever opened.
 */
export function readSpoolFile(dir: string, name: string, expect: SpoolName): SpoolRead {
  const path = join(dir, name);
  let pre: Stats | undefined;
  try {
    // Judge by lstat before opening: opening a device node can have effects of its own.
    pre = lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    return errnoResult(err, 'cannot stat');
  }
  if (pre === undefined) return { kind: 'gone' };
  if (!pre.isFile()) return { kind: 'bad', reason: `not a regular file: ${fileKind(pre)}` };
  if (pre.size > LIMITS.fileBytes) return { kind: 'bad', reason: `file too large: ${pre.size} bytes (limit ${LIMITS.fileBytes})` };

  let buf: Buffer;
  try {
    const fd = openSync(path, OPEN_FLAGS);
    try {
      // Swapped since lstat: judge what is open now.
      const st = fstatSync(fd);
      if (!st.isFile()) return { kind: 'bad', reason: `not a regular file: ${fileKind(st)}` };
      let got = 0;
      while (got < scratch.length) {
        const n = readSync(fd, scratch, got, scratch.length - got, got);
        if (n === 0) break;
        got += n;
      }
      if (got > LIMITS.fileBytes) return { kind: 'bad', reason: `file too large: over ${LIMITS.fileBytes} bytes` };
      buf = scratch.subarray(0, got);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    return errnoResult(err, 'cannot read');
  }

  let event: DeviceEvent;
  try {
    event = parseEventRecord(entriesToRecord(parseNulRecords(buf)), 'spool');
  } catch (err) {
    return { kind: 'bad', reason: describeError(err) };
  }
  if (event.seqnum !== expect.seqnum || event.action !== expect.action) {
    return {
      kind: 'bad',
      reason: `file name says SEQNUM ${expect.seqnum} ACTION ${expect.action}, content says SEQNUM ${event.seqnum} ACTION ${event.action}`,
    };
  }
  return { kind: 'event', event: { ...event, spoolFile: name } };
}

function errnoResult(err: unknown, what: string): SpoolRead {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return { kind: 'gone' };
  if (code !== undefined && TRANSIENT.has(code)) return { kind: 'retry', reason: `${what}: ${describeError(err)}` };
  if (code === 'ELOOP') return { kind: 'bad', reason: 'not a regular file: a symbolic link' };
  if (code === 'ENXIO') return { kind: 'bad', reason: 'not a regular file: a socket or device' };
  return { kind: 'bad', reason: `${what}: ${describeError(err)}` };
}
