/**
 * The table of present devices, keyed by DEVPATH (DESIGN A2, Part B). It turns validated events
 * into insert/remove notifications: insert is idempotent, a remove carries the last properties
 * known, `change`-like events update silently, and out-of-order events are dropped per device by
 * SEQNUM within one boot, with tombstones so a late `add` cannot bring back a removed device.
 */
import { z } from 'zod';
import { ErrorCode, HmdError } from '../errors.js';
import type { Logger } from '../log.js';
import { devpathSchema, propertiesSchema, seqnumSchema } from '../sources/properties.js';
import { isDeviceOfInterest } from './filter.js';
import type { DeviceEvent, DeviceNotification, DeviceRecord } from './types.js';

export const TABLE_STATE_VERSION = 1;
const DEFAULT_MAX_TOMBSTONES = 10_000;

export interface DeviceTableOptions {
  subsystems: readonly string[];
  /** /proc/sys/kernel/random/boot_id: SEQNUMs restart at boot, so they mean nothing across one. */
  bootId: string;
  logger: Logger;
  maxTombstones?: number;
}

interface Entry {
  properties: Record<string, string>;
  /** SEQNUM of the last event applied to the device; null when only coldplug has seen it. */
  seqnum: bigint | null;
}

const stateSchema = z.object({
  version: z.literal(TABLE_STATE_VERSION),
  bootId: z.string().min(1).max(200),
  devices: z.array(
    z.object({ id: devpathSchema, properties: propertiesSchema, seqnum: seqnumSchema.nullable() }),
  ),
  tombstones: z.array(z.object({ id: devpathSchema, seqnum: seqnumSchema })),
});

export type DeviceTableState = z.input<typeof stateSchema>;

export class DeviceTable {
  private readonly devices = new Map<string, Entry>();
  /** Last SEQNUM of removed devices, oldest first (a Map keeps insertion order: an LRU). */
  private readonly tombstones = new Map<string, bigint>();
  private readonly maxTombstones: number;

  /** Reloadable (SIGHUP): which subsystems new devices are reported for. */
  private subsystems: readonly string[];

  constructor(private readonly opts: DeviceTableOptions) {
    this.subsystems = opts.subsystems;
    this.maxTombstones = opts.maxTombstones ?? DEFAULT_MAX_TOMBSTONES;
  }

  /** A reload changes what is reported from now on; devices already known stay known. */
  setSubsystems(subsystems: readonly string[]): void {
    this.subsystems = [...subsystems];
  }

  get size(): number {
    return this.devices.size;
  }

  get bootId(): string {
    return this.opts.bootId;
  }

  /**
   * The present devices. A device's property map is replaced on every update, never changed in
   * place, so the stored maps are handed out as they are (no copy per device per call: replays,
   * resyncs and every state write list the table); callers must not change them.
   */
  list(): DeviceRecord[] {
    return [...this.devices].map(([id, e]) => ({ id, properties: e.properties }));
  }

  get(id: string): DeviceRecord | undefined {
    const e = this.devices.get(id);
    return e === undefined ? undefined : { id, properties: e.properties };
  }

  /** Applies one live event; returns what to fan out, or null when nothing changes for containers. */
  apply(e: DeviceEvent): DeviceNotification | null {
    const log = this.opts.logger;
    const known = this.devices.get(e.devpath);
    // A known device stays of interest until it is removed, whatever its later events say.
    if (known === undefined && !isDeviceOfInterest(e.properties, this.subsystems)) return null;

    const moved = e.action === 'move' ? e.properties['DEVPATH_OLD'] : undefined;
    const subject = moved !== undefined && this.devices.has(moved) ? moved : e.devpath;
    if (this.isStale(subject, e.seqnum)) {
      log.debug({ devpath: e.devpath, action: e.action, seqnum: String(e.seqnum) }, 'stale event ignored');
      return null;
    }
    const properties = { ...e.properties };

    switch (e.action) {
      case 'add':
        if (known !== undefined) {
          this.update(known, properties, e.seqnum);
          return null;
        }
        this.devices.set(e.devpath, { properties, seqnum: e.seqnum });
        this.tombstones.delete(e.devpath);
        return { kind: 'insert', deviceId: e.devpath, properties: { ...properties } };

      case 'remove': {
        const seqnum = e.seqnum ?? known?.seqnum ?? null;
        if (seqnum !== null) this.bury(e.devpath, seqnum);
        if (known === undefined) return null;
        this.devices.delete(e.devpath);
        // sysfs is gone by now: what the device was comes from what we knew (DESIGN A2).
        return { kind: 'remove', deviceId: e.devpath, properties: { ...known.properties, ...properties } };
      }

      case 'move': {
        const prev = moved === undefined ? undefined : this.devices.get(moved);
        if (moved !== undefined && prev !== undefined) {
          this.devices.delete(moved);
          if (e.seqnum !== null) this.bury(moved, e.seqnum);
          this.devices.set(e.devpath, { properties, seqnum: e.seqnum ?? prev.seqnum });
          this.tombstones.delete(e.devpath);
        } else if (known !== undefined) {
          this.update(known, properties, e.seqnum);
        }
        return null;
      }

      default:
        // change, bind, unbind, online, offline: same device, new properties.
        if (known !== undefined) this.update(known, properties, e.seqnum);
        else log.debug({ devpath: e.devpath, action: e.action }, 'event for a device not in the table ignored');
        return null;
    }
  }

  /**
   * Aligns the table with what is really present (coldplug): vanished devices are removed with
   * their last properties, new ones inserted, known ones refreshed silently. Removes come first,
   * children before parents; inserts parents first (DEVPATH order).
   */
  reconcile(present: readonly DeviceRecord[]): DeviceNotification[] {
    const now = new Map<string, DeviceRecord>();
    for (const r of present) if (isDeviceOfInterest(r.properties, this.subsystems)) now.set(r.id, r);

    const notes: DeviceNotification[] = [];
    const gone = [...this.devices.keys()].filter((id) => !now.has(id)).sort().reverse();
    for (const id of gone) {
      const entry = this.devices.get(id);
      if (entry === undefined) continue;
      this.devices.delete(id);
      if (entry.seqnum !== null) this.bury(id, entry.seqnum);
      const properties: Record<string, string> = { ...entry.properties, ACTION: 'remove' };
      delete properties['SEQNUM']; // no live event behind it
      notes.push({ kind: 'remove', deviceId: id, properties });
    }
    for (const id of [...now.keys()].sort()) {
      const record = now.get(id);
      if (record === undefined) continue;
      const known = this.devices.get(id);
      if (known !== undefined) {
        known.properties = { ...record.properties };
        continue;
      }
      this.devices.set(id, { properties: { ...record.properties }, seqnum: null });
      this.tombstones.delete(id);
      notes.push({ kind: 'insert', deviceId: id, properties: { ...record.properties } });
    }
    return notes;
  }

  serialize(): DeviceTableState {
    return {
      version: TABLE_STATE_VERSION,
      bootId: this.opts.bootId,
      devices: [...this.devices].map(([id, e]) => ({
        id,
        properties: e.properties,
        seqnum: e.seqnum === null ? null : e.seqnum.toString(),
      })),
      tombstones: [...this.tombstones].map(([id, seqnum]) => ({ id, seqnum: seqnum.toString() })),
    };
  }

  /**
   * Rebuilds a table from `serialize()` output. SEQNUMs of another boot are dropped (devices are
   * kept: reconcile decides about them). Anything malformed throws STATE_CORRUPT.
   */
  static restore(json: unknown, opts: DeviceTableOptions): DeviceTable {
    const version = typeof json === 'object' && json !== null ? (json as { version?: unknown }).version : undefined;
    if (version !== TABLE_STATE_VERSION) {
      throw new HmdError(ErrorCode.StateCorrupt, `device table state: unknown version ${JSON.stringify(version) ?? 'undefined'}`);
    }
    const res = stateSchema.safeParse(json);
    if (!res.success) {
      const why = res.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
      throw new HmdError(ErrorCode.StateCorrupt, `device table state: ${why}`);
    }
    const state = res.data;
    const sameBoot = state.bootId === opts.bootId;
    if (!sameBoot) opts.logger.info({ saved: state.bootId, now: opts.bootId }, 'device table saved in another boot: its SEQNUMs dropped');
    const table = new DeviceTable(opts);
    for (const d of state.devices) {
      if (table.devices.has(d.id)) throw new HmdError(ErrorCode.StateCorrupt, `device table state: device ${d.id} twice`);
      table.devices.set(d.id, { properties: d.properties, seqnum: sameBoot ? d.seqnum : null });
    }
    if (sameBoot) for (const t of state.tombstones) table.bury(t.id, t.seqnum);
    return table;
  }

  private isStale(devpath: string, seqnum: bigint | null): boolean {
    if (seqnum === null) return false;
    const last = this.devices.get(devpath)?.seqnum ?? this.tombstones.get(devpath) ?? null;
    return last !== null && seqnum <= last;
  }

  private update(entry: Entry, properties: Record<string, string>, seqnum: bigint | null): void {
    // udev sends a device's whole property set with every event: replace, do not merge.
    entry.properties = properties;
    if (seqnum !== null) entry.seqnum = seqnum;
  }

  private bury(devpath: string, seqnum: bigint): void {
    this.tombstones.delete(devpath);
    this.tombstones.set(devpath, seqnum);
    while (this.tombstones.size > this.maxTombstones) {
      const oldest = this.tombstones.keys().next();
      if (oldest.done === true) break;
      this.tombstones.delete(oldest.value);
    }
  }
}
