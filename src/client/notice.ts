import { z } from 'zod';
import { HMD_REPLAY, HMD_SEQUENCE } from '../constants.js';
import { ErrorCode, HmdError } from '../errors.js';

export type NoticeType = 'DeviceInserted' | 'DeviceRemoved';

/** One insert or remove as the daemon delivered it to this container (DESIGN A2). */
export interface DeviceNotice {
  /** The device's udev DEVPATH: the same string in the insert and the matching remove. */
  deviceId: string;
  /** The udev properties as received, including the daemon's HMD_SEQUENCE / HMD_REPLAY. */
  properties: Record<string, string>;
  /** HMD_SEQUENCE: 1 for the first notification after Ready, +1 for each next one (0 if absent). */
  sequence: number;
  /** HMD_REPLAY="1": the insert replays a device that was already present at Ready. */
  replay: boolean;
}

const bodySchema = z.tuple([z.string().min(1), z.record(z.string(), z.string())]);

/** Validates the body of a DeviceInserted/DeviceRemoved call (`sa{ss}`) and reads HMD_ keys. */
export function parseNotice(body: unknown[]): DeviceNotice {
  const parsed = bodySchema.safeParse(body);
  if (!parsed.success) {
    throw new HmdError(ErrorCode.InvalidArgs, `malformed notification: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  }
  const [deviceId, properties] = parsed.data;
  const seq = properties[HMD_SEQUENCE];
  return {
    deviceId,
    properties,
    sequence: seq !== undefined && /^[1-9][0-9]{0,15}$/.test(seq) ? Number(seq) : 0,
    replay: properties[HMD_REPLAY] === '1',
  };
}

export type SequenceVerdict =
  | { deliver: true; note?: 'restart' | 'gap' | 'unsequenced'; expected?: number }
  | { deliver: false; note: 'duplicate'; last: number };

/**
 * Drops notifications the container already has. Across a daemon crash delivery is at least
 * once and a repeat keeps its HMD_SEQUENCE, so anything at or below the last sequence seen is a
 * repeat. Sequence 1 always opens a new run: the daemon sends it only as the first notification
 * after a fresh Ready (a restarted daemon that lost us, or our own re-registration), so keying
 * on it needs no guess about which daemon answered our Ready, nor a race with that reply.
 * Call in delivery order.
 */
export class SequenceTracker {
  private last = 0;

  get lastSeen(): number {
    return this.last;
  }

  accept(sequence: number): SequenceVerdict {
    if (sequence === 0) return { deliver: true, note: 'unsequenced' };
    if (sequence === 1 && this.last >= 1) {
      this.last = 1;
      return { deliver: true, note: 'restart' };
    }
    if (sequence <= this.last) return { deliver: false, note: 'duplicate', last: this.last };
    const expected = this.last + 1;
    this.last = sequence;
    // The daemon promises no gaps; one here is worth a warning, never a reason to drop.
    return expected > 1 && sequence !== expected ? { deliver: true, note: 'gap', expected } : { deliver: true };
  }
}
