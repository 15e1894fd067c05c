import { EVENTS_INTERFACE, HMD_REPLAY, HMD_SEQUENCE } from '../constants.js';
import { describeError, isHmdError } from '../errors.js';
import type { Logger } from '../log.js';
import { RemoteError, type BusConnection } from '../bus/types.js';
import type { DeviceNotification, DeviceRecord } from '../devices/types.js';
import type { DeliveryPool } from './pool.js';
import { ContainerQueue, restoreQueue, serializeQueues, type DispatchState, type QueueItem } from './queue.js';
import type { Metrics } from '../daemon/metrics.js';

/** Errors after which the container did not get the event: send it again once it can. */
const NOT_DELIVERED = new Set([
  'org.freedesktop.DBus.Error.NoReply',
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
  'org.freedesktop.DBus.Error.Disconnected',
  'org.freedesktop.DBus.Error.UnknownObject',
  'org.freedesktop.DBus.Error.UnknownInterface',
  'org.freedesktop.DBus.Error.UnknownMethod',
  'org.freedesktop.DBus.Error.AccessDenied',
  'org.freedesktop.DBus.Error.LimitsExceeded',
]);

export interface DispatcherOptions {
  logger: Logger;
  /** The daemon's main connection: name owner look-ups. */
  bus: Pick<BusConnection, 'getNameOwner'>;
  pool: Pick<DeliveryPool, 'acquire'>;
  /** Which container a connection belongs to (null: none/unknown). */
  containerOf: (uniqueName: string) => Promise<string | null>;
  /** The devices present now, for replays and resyncs. */
  devices: { list(): DeviceRecord[] };
  timeoutMs: number;
  /** Events kept for a stalled container before it is switched to resync. */
  queueLimit: number;
  metrics: Metrics;
  /** A change that must reach the disk soon: a queue added, dropped or grown. */
  onDirty: () => void;
  /**
   * Delivery progress (a sequence number handed out, an acknowledgement): it may reach the disk
   * late, since after a crash the same queue hands out the same numbers to the same events, and
   * an event whose ack was not saved is sent again with its HMD_SEQUENCE.
   */
  onProgress: () => void;
  /** Runs `cb` once everything changed so far is on disk. */
  afterDurable: (cb: () => void) => void;
  /** For `hmd monitor`: the event is built only when someone is watching. */
  onMonitor?: (event: () => Record<string, unknown>) => void;
  clock?: () => number;
}

/**
 * Fans every insert/remove out to every Ready container: one ordered queue per container, at
 * most one call in flight each, a deadline per call, owner verified before sending. A slow,
 * hung, squatted or vanished container only ever affects its own queue.
 */
export class Dispatcher {
  private readonly queues = new Map<string, ContainerQueue>();
  private readonly byBusName = new Map<string, ContainerQueue>();
  private readonly waitingForSlot = new Set<ContainerQueue>();
  /** Last properties of devices gone from the table, for removes sent by a resync. */
  private readonly graveyard = new Map<string, Record<string, string>>();
  private readonly now: () => number;

  constructor(private readonly opts: DispatcherOptions) {
    this.now = opts.clock ?? Date.now;
  }

  /** SIGHUP: new deadlines and limits apply to the next calls; queues are kept. */
  configure(o: { timeoutMs: number; queueLimit: number }): void {
    this.opts.timeoutMs = o.timeoutMs;
    this.opts.queueLimit = o.queueLimit;
  }

  /** Ready(): a fresh container (or a restarted agent) gets a replay, then live events. */
  ready(cid: string, connection: string, fresh: boolean): void {
    const existing = this.queues.get(cid);
    if (existing && !fresh) return;
    if (existing) this.drop(cid, 'agent restarted; replaying afresh');
    const q = new ContainerQueue(cid, connection);
    const t = this.now();
    // Snapshot and subscription happen in one synchronous step: an event racing with Ready is
    // either in the table (and so in the replay) or published after, never both, never neither.
    for (const d of this.opts.devices.list()) q.items.push({ kind: 'insert', deviceId: d.id, properties: d.properties, replay: true, queuedAt: t });
    this.add(q);
    this.opts.logger.info({ cid, connection, replay: q.items.length }, 'container ready');
    this.pump(q);
  }

  private add(q: ContainerQueue): void {
    this.queues.set(q.cid, q);
    this.byBusName.set(q.busName, q);
    this.opts.onDirty();
  }

  /** The container left (every connection gone) or restarted: forget its queue. */
  drop(cid: string, reason: string): void {
    const q = this.queues.get(cid);
    if (!q) return;
    q.closed = true;
    q.clearTimers();
    this.queues.delete(cid);
    this.byBusName.delete(q.busName);
    this.waitingForSlot.delete(q);
    this.opts.logger.info({ cid, reason, dropped: q.length }, 'container dropped');
    this.opts.onDirty();
  }

  publish(n: DeviceNotification): void {
    if (n.kind === 'remove') {
      this.graveyard.set(n.deviceId, n.properties);
      if (this.graveyard.size > 4096) this.graveyard.delete(this.graveyard.keys().next().value as string);
    } else {
      this.graveyard.delete(n.deviceId);
    }
    const t = this.now();
    for (const q of this.queues.values()) {
      if (q.resync) continue;
      // A container that keeps up is never cut off by a burst; one that stopped answering (or
      // whose agent name has no rightful owner) is switched to a resync once its backlog passes
      // the limit, instead of growing forever.
      const unserved = q.stalled || q.ownerState === 'absent' || q.ownerState === 'squatted';
      const limit = unserved ? this.opts.queueLimit : this.opts.queueLimit * 16;
      if (q.items.length >= limit) {
        q.items = [];
        q.resync = true;
        this.opts.metrics.inc('resyncs');
        this.opts.logger.warn({ cid: q.cid, limit, stalled: q.stalled }, 'queue overflow: container will be resynchronised when it answers');
        continue;
      }
      q.items.push({ kind: n.kind, deviceId: n.deviceId, properties: n.properties, replay: false, queuedAt: t });
      this.pump(q);
    }
    this.opts.onDirty();
  }

  /** NameOwnerChanged for any name: only agent names concern us. */
  nameOwnerChanged(name: string, newOwner: string): void {
    const q = this.byBusName.get(name);
    if (!q) return;
    q.ownerGeneration++;
    q.owner = null;
    q.ownerState = newOwner === '' ? 'absent' : 'unknown';
    if (newOwner !== '') this.pump(q);
  }

  private async verifyOwner(q: ContainerQueue): Promise<void> {
    const gen = ++q.ownerGeneration;
    q.ownerState = 'verifying';
    let owner: string | null = null;
    let cid: string | null = null;
    try {
      owner = await this.opts.bus.getNameOwner(q.busName);
      if (owner !== null) cid = await this.opts.containerOf(owner);
    } catch (err) {
      if (gen !== q.ownerGeneration || q.closed) return;
      this.opts.logger.warn({ cid: q.cid, err: describeError(err) }, 'cannot look up the owner of the agent name; retrying');
      q.ownerState = 'unknown';
      this.retryLater(q);
      return;
    }
    if (gen !== q.ownerGeneration || q.closed) return;
    if (owner === null) {
      q.ownerState = 'absent';
      return;
    }
    if (cid !== q.cid) {
      q.ownerState = 'squatted';
      this.opts.metrics.inc('squatAttempts');
      this.opts.logger.warn({ cid: q.cid, name: q.busName, owner, ownerContainer: cid }, 'agent name owned by a connection of another container or the host: nothing is delivered to it');
      this.opts.onMonitor?.(() => ({ type: 'squat', container: q.cid, owner, ownerContainer: cid }));
      return;
    }
    q.owner = owner;
    q.ownerState = 'verified';
    this.pump(q);
  }

  private retryLater(q: ContainerQueue): void {
    if (q.retryTimer || q.closed) return;
    q.retryDelayMs = Math.min(Math.max(q.retryDelayMs * 2, 100), 5000);
    q.retryTimer = setTimeout(() => {
      q.retryTimer = undefined;
      this.pump(q);
    }, q.retryDelayMs);
    q.retryTimer.unref();
  }

  private buildResync(q: ContainerQueue): void {
    const t = this.now();
    const present = new Map(this.opts.devices.list().map((d) => [d.id, d.properties]));
    for (const id of q.told) {
      if (!present.has(id)) q.items.push({ kind: 'remove', deviceId: id, properties: this.graveyard.get(id) ?? { DEVPATH: id }, replay: false, queuedAt: t });
    }
    for (const [id, props] of present) {
      if (!q.told.has(id)) q.items.push({ kind: 'insert', deviceId: id, properties: props, replay: true, queuedAt: t });
    }
    q.resync = false;
    // The summary depends on the table of this moment: it is saved before its first item goes
    // out, so that after a crash the same HMD_SEQUENCE numbers go to the same items (a client
    // drops a number it has seen). Resyncs are rare; the wait is one state write.
    q.savingResync = true;
    this.opts.afterDurable(() => {
      q.savingResync = false;
      this.pump(q);
    });
    this.opts.logger.info({ cid: q.cid, items: q.items.length }, 'resynchronising container');
  }

  private pump(q: ContainerQueue): void {
    if (q.closed || q.inFlight !== null || q.retryTimer !== undefined || q.savingResync) return;
    if (q.items.length === 0 && !q.resync) return;
    if (q.ownerState !== 'verified' || q.owner === null) {
      if (q.ownerState === 'unknown') void this.verifyOwner(q);
      return;
    }
    // The summary is computed only now that the container answers, so it is current.
    if (q.resync && !q.stalled) {
      this.buildResync(q);
      return; // sent once the summary is saved
    }
    if (q.items.length === 0) return;
    const conn = this.opts.pool.acquire();
    if (conn === null) {
      this.waitingForSlot.add(q);
      return;
    }
    this.waitingForSlot.delete(q);
    const item = q.items.shift() as QueueItem;
    if (item.seq === undefined) {
      item.seq = q.nextSeq++;
      this.opts.onProgress();
    } else {
      this.opts.metrics.inc('redeliveries');
    }
    q.inFlight = item;
    this.send(q, conn, q.owner, item);
  }

  private send(q: ContainerQueue, conn: BusConnection, owner: string, item: QueueItem): void {
    const props: Record<string, string> = { ...item.properties, [HMD_SEQUENCE]: String(item.seq) };
    if (item.replay) props[HMD_REPLAY] = '1';
    const member = item.kind === 'insert' ? 'DeviceInserted' : 'DeviceRemoved';
    const sentAt = this.now();
    q.stallTimer = setTimeout(() => {
      q.stallTimer = undefined;
      if (q.inFlight !== item) return;
      q.stalled = true;
      q.timeouts++;
      this.opts.metrics.inc('timeouts');
      this.opts.logger.warn({ cid: q.cid, seq: item.seq, timeoutMs: this.opts.timeoutMs }, 'container did not acknowledge in time: stalled (its queue is kept; nothing else is sent to it until it answers)');
      this.opts.onMonitor?.(() => ({ type: 'stalled', container: q.cid, seq: item.seq }));
    }, this.opts.timeoutMs);
    q.stallTimer.unref();
    // No local deadline on the call itself: its bus slot stays taken until the container
    // answers or leaves, and the call stays counted against `conn` until then.
    conn.call(owner, q.path, EVENTS_INTERFACE, member, 'sa{ss}', [item.deviceId, props]).then(
      () => this.settled(q, item, null, sentAt),
      (err: unknown) => this.settled(q, item, err, sentAt),
    );
  }

  private settled(q: ContainerQueue, item: QueueItem, err: unknown, sentAt: number): void {
    if (q.stallTimer) clearTimeout(q.stallTimer);
    q.stallTimer = undefined;
    if (q.inFlight === item) q.inFlight = null;
    if (!q.closed) {
      const remote = err instanceof RemoteError ? err.dbusName : null;
      if (err !== null && (remote === null || NOT_DELIVERED.has(remote))) {
        // Not delivered: keep it first in line (same HMD_SEQUENCE) and look at the owner again.
        q.items.unshift(item);
        if (!isHmdError(err, 'BUS_LOST')) {
          this.opts.logger.info({ cid: q.cid, seq: item.seq, err: describeError(err) }, 'delivery failed; will retry');
          q.ownerState = 'unknown';
          q.owner = null;
          this.retryLater(q);
        }
      } else {
        if (remote !== null) this.opts.logger.warn({ cid: q.cid, seq: item.seq, err: remote }, 'container answered an event with an error; counted as delivered');
        this.acked(q, item, sentAt);
      }
    }
    // A reply slot was freed on some connection: let waiting containers go.
    for (const w of [...this.waitingForSlot]) {
      this.waitingForSlot.delete(w);
      this.pump(w);
      if (this.waitingForSlot.has(w)) break;
    }
  }

  private acked(q: ContainerQueue, item: QueueItem, sentAt: number): void {
    const t = this.now();
    if (q.stalled) this.opts.logger.info({ cid: q.cid }, 'container answers again');
    q.stalled = false;
    q.retryDelayMs = 0;
    q.delivered++;
    q.lastDeliveryAt = t;
    if (item.kind === 'insert') q.told.add(item.deviceId);
    else q.told.delete(item.deviceId);
    this.opts.metrics.inc('delivered');
    this.opts.metrics.observeLatency(t - item.queuedAt);
    this.opts.onMonitor?.(() => ({ type: 'delivered', container: q.cid, kind: item.kind, deviceId: item.deviceId, seq: item.seq, replay: item.replay, ms: t - sentAt }));
    // The ack of HMD_SEQUENCE 1 is saved at once: a container cannot tell a repeat of 1 after a
    // crash from the start of a fresh run (which also begins at 1), so it must not come again.
    if (item.seq === 1) this.opts.onDirty();
    else this.opts.onProgress();
    this.pump(q);
  }

  /** Retry containers waiting for a reply slot (a new pool connection opened). */
  slotsAvailable(): void {
    for (const w of [...this.waitingForSlot]) this.pump(w);
  }

  has(cid: string): boolean {
    return this.queues.has(cid);
  }

  status(cid: string): Record<string, unknown> | undefined {
    const q = this.queues.get(cid);
    if (!q) return undefined;
    return {
      queueLength: q.length,
      stalled: q.stalled,
      resync: q.resync,
      owner: q.owner,
      ownerState: q.ownerState,
      nextSequence: q.nextSeq,
      delivered: q.delivered,
      timeouts: q.timeouts,
      lagMs: q.lagMs(this.now()),
      lastDeliveryAt: q.lastDeliveryAt === null ? null : new Date(q.lastDeliveryAt).toISOString(),
    };
  }

  private presentIds(): Set<string> {
    return new Set(this.opts.devices.list().map((d) => d.id));
  }

  serialize(): DispatchState {
    return serializeQueues(this.queues.values(), this.presentIds());
  }

  /** Restores queues saved by a previous run; `keep` decides (after checking the bus) which. */
  async restore(state: DispatchState, keep: (cid: string, owner: string) => Promise<boolean>): Promise<string[]> {
    const restored: string[] = [];
    const t = this.now();
    const present = this.presentIds();
    for (const saved of state.containers) {
      // The agent that called Ready owns the name unless delivery saw another owner since.
      if (!(await keep(saved.cid, saved.owner ?? saved.readyConnection))) continue;
      const q = restoreQueue(saved, state.props, t, present);
      this.add(q);
      restored.push(q.cid);
      this.pump(q);
    }
    return restored;
  }

  stop(): void {
    for (const q of this.queues.values()) q.clearTimers();
  }
}
