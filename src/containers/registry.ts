import { CONTAINER_ID_RE, agentBusName } from '../constants.js';
import { ErrorCode, HmdError, describeError } from '../errors.js';
import type { Logger } from '../log.js';

export type ContainerState = 'registered' | 'ready';

export interface ContainerEntry {
  cid: string;
  busName: string;
  state: ContainerState;
  /** Unique names seen from this container (Register or Ready), while they are on the bus. */
  connections: Set<string>;
  /** The connection whose Ready() is in force: the agent that owns `busName`. */
  readyConnection?: string;
  registeredAt: number;
  readyAt?: number;
}

export type RegistryEvent = 'ready' | 'unready' | 'gone';

/**
 * `fresh`: a new readiness (first Ready, Ready from another connection, the ready connection
 * was restored after a daemon restart with `restored`) vs. an idempotent repeat.
 */
export interface ReadyInfo {
  fresh: boolean;
  restored?: boolean;
}

type Listener = (entry: ContainerEntry, info?: ReadyInfo) => void;

/** Unique names that left recently, to refuse late Register/Ready from them (see below). */
const DEPARTED_LIMIT = 4096;

/**
 * The registration state machine: registered → ready → gone. One entry per container, however
 * many of its processes talk to us; the entry lives while at least one of its connections is on
 * the bus, so a container that comes back after all its connections left starts afresh.
 *
 * Events:
 * - `ready` on every Ready() (with `fresh`) and on restoreReady();
 * - `unready` when the ready connection left but other connections of the container remain
 *   (the entry falls back to `registered`; the agent must call Ready() again);
 * - `gone` when the container's last connection left and the entry is forgotten.
 *
 * Entries handed out are the registry's own objects: read them, do not change them.
 */
export class Registry {
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly entries = new Map<string, ContainerEntry>();
  /** Unique name → its container: a connection belongs to one process, hence one container. */
  private readonly owners = new Map<string, string>();
  /**
   * The service identifies a caller (async) before calling register()/ready(); the caller may
   * leave the bus meanwhile, and its NameOwnerChanged is then handled first. Without this memory
   * the late call would pin an entry on a name that is already gone. Unique names are never
   * reused, so remembering the last few thousand is exact for races of that size.
   */
  private readonly departed = new Set<string>();
  private readonly listeners: Record<RegistryEvent, Set<Listener>> = { ready: new Set(), unready: new Set(), gone: new Set() };

  constructor(opts: { logger: Logger; clock?: () => number }) {
    this.log = opts.logger.child({ component: 'registry' });
    this.clock = opts.clock ?? Date.now;
  }

  /**
   * Register() from an identified container; idempotent (a ready container stays ready). A
   * sender that already left the bus gets an answer built from a detached entry that is not kept.
   */
  register(cid: string, sender: string): ContainerEntry {
    checkCid(cid);
    const existing = this.entries.get(cid);
    if (this.departed.has(sender)) {
      this.log.debug({ cid, sender }, 'Register from a connection that already left; not kept');
      return existing ?? this.newEntry(cid);
    }
    const entry = existing ?? this.newEntry(cid);
    this.attach(entry, sender); // first: it throws on a conflict, before anything is stored
    if (!existing) {
      this.entries.set(cid, entry);
      this.log.info({ cid, sender }, 'container registered');
    }
    return entry;
  }

  /**
   * Ready() from an identified container. Throws HmdError NOT_REGISTERED if none of the
   * container's connections registered. `fresh` is true for the first Ready and for a Ready
   * from another connection than the recorded one (a restarted agent: replay afresh).
   */
  ready(cid: string, sender: string): { entry: ContainerEntry; fresh: boolean } {
    checkCid(cid);
    const entry = this.entries.get(cid);
    if (!entry) throw new HmdError(ErrorCode.NotRegistered, `container ${cid} called Ready() without Register()`, { details: { cid, sender } });
    if (this.departed.has(sender)) {
      throw new HmdError(ErrorCode.NotRegistered, `connection ${sender} of container ${cid} already left the bus`, { details: { cid, sender } });
    }
    this.attach(entry, sender);
    const fresh = entry.state !== 'ready' || entry.readyConnection !== sender;
    if (fresh) {
      entry.state = 'ready';
      entry.readyConnection = sender;
      entry.readyAt = this.clock();
      this.log.info({ cid, sender }, 'container ready');
    }
    this.emit('ready', entry, { fresh });
    return { entry, fresh };
  }

  /**
   * A unique name left the bus: drop it from its container. The container is forgotten when it
   * has no connection left, and then returned (so its queue can be dropped).
   */
  connectionGone(sender: string): ContainerEntry | undefined {
    this.rememberDeparted(sender);
    const cid = this.owners.get(sender);
    if (cid === undefined) return undefined;
    this.owners.delete(sender);
    const entry = this.entries.get(cid);
    if (!entry) return undefined;
    entry.connections.delete(sender);

    if (entry.connections.size === 0) {
      this.entries.delete(cid);
      this.log.info({ cid, sender }, 'container gone: its last connection left the bus');
      this.emit('gone', entry);
      return entry;
    }
    if (entry.readyConnection === sender) {
      entry.state = 'registered';
      delete entry.readyConnection;
      delete entry.readyAt;
      this.log.info({ cid, sender, remaining: entry.connections.size }, 'container no longer ready: its agent left the bus');
      this.emit('unready', entry);
    }
    return undefined;
  }

  get(cid: string): ContainerEntry | undefined {
    return this.entries.get(cid);
  }

  /** Every known container, in order of registration. */
  list(): ContainerEntry[] {
    return [...this.entries.values()];
  }

  /** The container a connection belongs to, if it has called Register or Ready. */
  containerOf(sender: string): ContainerEntry | undefined {
    const cid = this.owners.get(sender);
    return cid === undefined ? undefined : this.entries.get(cid);
  }

  /**
   * Restores a ready container after a daemon restart (the daemon has verified its owner is
   * still on the bus). Emits `ready` with `{ fresh: false, restored: true }`: deliveries resume
   * where they stopped instead of replaying afresh.
   */
  restoreReady(cid: string, connection: string): ContainerEntry {
    checkCid(cid);
    let entry = this.entries.get(cid);
    if (entry?.state === 'ready' && entry.readyConnection === connection) return entry;
    entry ??= this.newEntry(cid);
    this.attach(entry, connection);
    this.entries.set(cid, entry);
    this.departed.delete(connection);
    entry.state = 'ready';
    entry.readyConnection = connection;
    entry.readyAt = this.clock();
    this.log.info({ cid, connection }, 'container restored as ready');
    this.emit('ready', entry, { fresh: false, restored: true });
    return entry;
  }

  /** Subscribes to an event; returns the unsubscribe function. */
  on(event: RegistryEvent, cb: Listener): () => void {
    this.listeners[event].add(cb);
    return () => {
      this.listeners[event].delete(cb);
    };
  }

  private newEntry(cid: string): ContainerEntry {
    return { cid, busName: agentBusName(cid), state: 'registered', connections: new Set(), registeredAt: this.clock() };
  }

  private attach(entry: ContainerEntry, sender: string): void {
    const owner = this.owners.get(sender);
    if (owner !== undefined && owner !== entry.cid) {
      // Identity is cached per unique name, so this means a bug in the caller, not a hostile peer.
      throw new HmdError(ErrorCode.Internal, `connection ${sender} is already attached to container ${owner}, not ${entry.cid}`);
    }
    this.owners.set(sender, entry.cid);
    entry.connections.add(sender);
  }

  private rememberDeparted(sender: string): void {
    this.departed.add(sender);
    for (const oldest of this.departed) {
      if (this.departed.size <= DEPARTED_LIMIT) break;
      this.departed.delete(oldest);
    }
  }

  /** A failing listener is logged and must not break the state change or the other listeners. */
  private emit(event: RegistryEvent, entry: ContainerEntry, info?: ReadyInfo): void {
    for (const cb of [...this.listeners[event]]) {
      try {
        cb(entry, info);
      } catch (err) {
        this.log.error({ event, cid: entry.cid, err: describeError(err) }, 'registry listener failed');
      }
    }
  }
}

function checkCid(cid: string): void {
  if (!CONTAINER_ID_RE.test(cid)) throw new HmdError(ErrorCode.InvalidArgs, `not a 64-hex container ID: ${JSON.stringify(cid.slice(0, 80))}`);
}
