import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ContainerEvent } from '../../e2e/support/containers.js';

const seqOf = (e: ContainerEvent): number => Number(e.properties['HMD_SEQUENCE']);

/**
 * What a container holds under DESIGN A2's at-least-once rule: sequences 1, 2, 3… in order,
 * where a repeat carries an HMD_SEQUENCE already seen and is the same notification as the
 * first delivery with that number. Throws (with what went wrong) on anything else.
 */
export function uniqueInOrder(events: readonly ContainerEvent[], who = 'container'): ContainerEvent[] {
  const out: ContainerEvent[] = [];
  for (const [i, e] of events.entries()) {
    const seq = seqOf(e);
    if (!Number.isInteger(seq) || seq < 1) throw new Error(`${who}: event #${i} has HMD_SEQUENCE ${e.properties['HMD_SEQUENCE']}`);
    if (seq <= out.length) {
      const first = out[seq - 1] as ContainerEvent;
      if (first.member !== e.member || first.deviceId !== e.deviceId) {
        throw new Error(`${who}: HMD_SEQUENCE ${seq} repeated as ${e.member} ${e.deviceId}, first seen as ${first.member} ${first.deviceId}`);
      }
      continue;
    }
    if (seq !== out.length + 1) throw new Error(`${who}: HMD_SEQUENCE jumps from ${out.length} to ${seq} (event #${i})`);
    out.push(e);
  }
  return out;
}

/** Exactly once: no repeats at all, sequences 1..n. */
export function exactlyOnce(events: readonly ContainerEvent[], who = 'container'): ContainerEvent[] {
  const seqs = events.map(seqOf);
  const bad = seqs.findIndex((s, i) => s !== i + 1);
  if (bad >= 0) throw new Error(`${who}: event #${bad} has HMD_SEQUENCE ${seqs[bad]}, expected ${bad + 1}`);
  return [...events];
}

export const pairs = (events: readonly ContainerEvent[]): string[] => events.map((e) => `${e.member === 'DeviceInserted' ? '+' : '-'}${e.deviceId}`);

/**
 * Milliseconds of CLOCK_MONOTONIC, the clock the peers stamp arrivals with: shared by every
 * process of the host, unlike a wall clock that can be stepped between two process starts.
 */
export const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/** When the peer got the call (monotonicMs; container-proc stamps `t`); throws if it does not. */
export function arrival(e: ContainerEvent): number {
  const t = (e as ContainerEvent & { t?: unknown }).t;
  if (typeof t !== 'number') throw new Error('container-proc.mjs does not stamp events with `t`');
  return t;
}

/** The p-th percentile (0..100) by nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

/**
 * Writes one event exactly as udev-rules/hmd-uevent does (env -0 records, dot-name, rename)
 * and returns the moment (monotonicMs) of the rename, when the event became visible: latency probes need
 * that instant, which a forked helper's exit only tells late and under load, later still.
 */
export function writeSpoolEvent(dir: string, action: string, props: Record<string, string>, seqnum: bigint): number {
  const name = `${seqnum.toString().padStart(20, '0')}-${action}`;
  const record = Object.entries({ ...props, ACTION: action, SEQNUM: seqnum.toString() })
    .map(([k, v]) => `${k}=${v}\0`)
    .join('');
  const tmp = join(dir, `.${name}.${process.pid}`);
  writeFileSync(tmp, record, { mode: 0o600 });
  const t = monotonicMs();
  renameSync(tmp, join(dir, name));
  return t;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
