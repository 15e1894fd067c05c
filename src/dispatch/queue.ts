import { z } from 'zod';
import { CONTAINER_ID_RE, agentBusName, agentObjectPath } from '../constants.js';

/** One notification waiting for (or in) delivery to one container. */
export interface QueueItem {
  kind: 'insert' | 'remove';
  deviceId: string;
  /** udev properties (+ enrichment), without HMD_SEQUENCE/HMD_REPLAY: those are per container. */
  properties: Record<string, string>;
  replay: boolean;
  /** Assigned when first sent, kept for a resend: a redelivered event keeps its HMD_SEQUENCE. */
  seq?: number;
  /** When it was queued (ms), for the lag shown in status. */
  queuedAt: number;
}

export type OwnerState = 'unknown' | 'verifying' | 'verified' | 'absent' | 'squatted';

/**
 * The delivery state of one Ready container: an ordered queue with at most one call in flight,
 * the next HMD_SEQUENCE, and the set of devices it has acknowledged (for a resync).
 */
export class ContainerQueue {
  readonly busName: string;
  readonly path: string;
  owner: string | null = null;
  ownerState: OwnerState = 'unknown';
  /** Bumped on every owner change, so a stale verification cannot win a race. */
  ownerGeneration = 0;
  nextSeq = 1;
  items: QueueItem[] = [];
  inFlight: QueueItem | null = null;
  stalled = false;
  resync = false;
  /** A resync's summary was just built: nothing is sent until it is on disk. */
  savingResync = false;
  told = new Set<string>();
  delivered = 0;
  timeouts = 0;
  lastDeliveryAt: number | null = null;
  retryDelayMs = 0;
  retryTimer: NodeJS.Timeout | undefined;
  stallTimer: NodeJS.Timeout | undefined;
  closed = false;

  constructor(
    readonly cid: string,
    /** The connection that called Ready: a different one means a restarted agent. */
    public readyConnection: string,
  ) {
    this.busName = agentBusName(cid);
    this.path = agentObjectPath(cid);
  }

  get length(): number {
    return this.items.length + (this.inFlight ? 1 : 0);
  }

  lagMs(now: number): number {
    const oldest = this.inFlight ?? this.items[0];
    return oldest === undefined ? 0 : Math.max(0, now - oldest.queuedAt);
  }

  clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.retryTimer = undefined;
    this.stallTimer = undefined;
  }
}

// Persisted form: property maps are stored once and referenced by index, since the same
// event (or present device) sits in many containers' queues.
const itemSchema = z.tuple([z.enum(['insert', 'remove']), z.string(), z.number().int().nonnegative(), z.boolean(), z.number().int().positive().nullable()]);
const containerSchema = z.object({
  cid: z.string().regex(CONTAINER_ID_RE),
  readyConnection: z.string(),
  owner: z.string().nullable(),
  nextSeq: z.number().int().positive(),
  resync: z.boolean(),
  // What the container acknowledged, as a difference from the devices present when the state
  // was written (in steady state both lists are empty): a full list per container would make
  // every state write grow with containers × devices.
  toldExtra: z.array(z.string()),
  toldMissing: z.array(z.string()),
  items: z.array(itemSchema),
});
export const dispatchStateSchema = z.object({
  props: z.array(z.record(z.string(), z.string())),
  containers: z.array(containerSchema),
});
export type DispatchState = z.infer<typeof dispatchStateSchema>;

export function serializeQueues(queues: Iterable<ContainerQueue>, present: ReadonlySet<string>): DispatchState {
  const props: Array<Record<string, string>> = [];
  const index = new Map<Record<string, string>, number>();
  const ref = (p: Record<string, string>): number => {
    let i = index.get(p);
    if (i === undefined) {
      i = props.length;
      props.push(p);
      index.set(p, i);
    }
    return i;
  };
  const containers = [...queues].map((q) => ({
    cid: q.cid,
    readyConnection: q.readyConnection,
    owner: q.owner,
    nextSeq: q.nextSeq,
    resync: q.resync,
    toldExtra: [...q.told].filter((id) => !present.has(id)),
    toldMissing: [...present].filter((id) => !q.told.has(id)),
    items: [...(q.inFlight ? [q.inFlight] : []), ...q.items].map(
      (it) => [it.kind, it.deviceId, ref(it.properties), it.replay, it.seq ?? null] as z.infer<typeof itemSchema>,
    ),
  }));
  return { props, containers };
}

export function restoreQueue(saved: DispatchState['containers'][number], props: DispatchState['props'], now: number, present: ReadonlySet<string>): ContainerQueue {
  const q = new ContainerQueue(saved.cid, saved.readyConnection);
  q.owner = saved.owner;
  q.nextSeq = saved.nextSeq;
  q.resync = saved.resync;
  const missing = new Set(saved.toldMissing);
  q.told = new Set([...[...present].filter((id) => !missing.has(id)), ...saved.toldExtra]);
  q.items = saved.items.map(([kind, deviceId, p, replay, seq]) => ({
    kind,
    deviceId,
    properties: props[p] ?? { DEVPATH: deviceId },
    replay,
    ...(seq === null ? {} : { seq }),
    queuedAt: now,
  }));
  return q;
}

/**
 * State format 1 -> 2: format 1 kept each container's acknowledged devices as a full list
 * (`told`); format 2 keeps the difference from the devices present in the same file.
 */
export function toldAsDifference(doc: Record<string, unknown>): Record<string, unknown> {
  const table = doc['devices'] as { devices?: Array<{ id?: unknown }> } | undefined;
  const present = (table?.devices ?? []).map((d) => d.id).filter((id): id is string => typeof id === 'string');
  const presentSet = new Set(present);
  const dispatch = doc['dispatch'] as { containers?: Array<Record<string, unknown>> } | undefined;
  if (dispatch?.containers === undefined) return { ...doc, version: 2 };
  const containers = dispatch.containers.map(({ told, ...rest }) => {
    const t = new Set(Array.isArray(told) ? told.filter((id): id is string => typeof id === 'string') : []);
    return { ...rest, toldExtra: [...t].filter((id) => !presentSet.has(id)), toldMissing: present.filter((id) => !t.has(id)) };
  });
  return { ...doc, dispatch: { ...dispatch, containers }, version: 2 };
}
