import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { connectBus } from '../bus/connection.js';
import { loadInterface } from '../bus/introspect.js';
import { createRouter, ret } from '../bus/router.js';
import { RemoteError, type BusConnection, type BusValue, type CallHandler, type CallReply, type IncomingCall } from '../bus/types.js';
import {
  AGENT_BUS_PREFIX,
  CONTAINER_INTERFACE,
  DAEMON_BUS_NAME,
  DAEMON_OBJECT_PATH,
  ERROR_NOT_REGISTERED,
  EVENTS_INTERFACE,
  Status,
  agentObjectPath,
} from '../constants.js';
import { ErrorCode, HmdError, describeError, isHmdError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { SequenceTracker, parseNotice, type DeviceNotice, type NoticeType } from './notice.js';

/**
 * `connecting`: waiting for the daemon (at start, and after it left the bus; notifications from
 * a daemon that restored us are still served). `registered`: we own our name, Ready is on its
 * way. `ready`: notifications flow. `daemon-gone`: the bus connection is lost; final, the agent
 * is dead and a new one must be connected.
 */
export type AgentState = 'connecting' | 'registered' | 'ready' | 'daemon-gone';

export interface AgentOptions {
  /** "system" (default), "session" or a D-Bus address. */
  bus?: string;
  /**
   * Called once per new insert, in delivery order, never concurrently. The daemon gets the
   * acknowledgement when the returned promise settles, so a slow handler slows delivery to this
   * container (and only this one). A handler that throws is logged and still acknowledged: one
   * bad notification must not wedge every later one.
   */
  onInserted?: (n: DeviceNotice) => void | Promise<void>;
  /** Like onInserted, for removes (which carry the device's last known properties). */
  onRemoved?: (n: DeviceNotice) => void | Promise<void>;
  onStateChange?: (s: AgentState) => void;
  logger?: Logger;
  /** Deadline of each call to the daemon (default 10 s). */
  callTimeoutMs?: number;
  /** Aborting closes the agent, also while connectAgent() is still under way. */
  signal?: AbortSignal;
}

export interface Agent {
  /** The 64-hex container ID the daemon identified us as. */
  readonly cid: string | null;
  /** `io.veea.VeeaHub.HardwareMonitoringAgent.C_<cid>`, owned by this agent. */
  readonly busName: string | null;
  readonly state: AgentState;
  /**
   * Asks the host to save the keystore, then polls until the save ends. Resolves with the final
   * status: 0 saved, EIO the save failed, EFBIG over the size limit, EAGAIN a fault on the host,
   * ENODATA container unknown, EBUSY another save was in progress or `timeoutMs` passed.
   */
  saveKeystore(opts?: { pollMs?: number; timeoutMs?: number }): Promise<number>;
  /** GetKeystoreStatus: 0 last save completed (or none), EBUSY in progress, EIO last save failed. */
  keystoreStatus(): Promise<number>;
  /** Releases the name and leaves the bus. */
  close(): Promise<void>;
}

/** Registers with the daemon, owns the returned name, exports the Events object, calls Ready. */
export async function connectAgent(opts: AgentOptions = {}): Promise<Agent> {
  const agent = new ContainerAgent(opts);
  await agent.start();
  return agent;
}

const AGENT_NAME_RE = new RegExp(`^${AGENT_BUS_PREFIX.replace(/\./g, '\\.')}([0-9a-f]{64})$`);
const registerReply = z.tuple([z.number().int(), z.string()]);
const statusReply = z.tuple([z.number().int()]);
/** Waits between attempts to re-register with a daemon that just came back. */
const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000];

class ContainerAgent implements Agent {
  cid: string | null = null;
  busName: string | null = null;
  state: AgentState = 'connecting';
  private conn: BusConnection | null = null;
  private router: CallHandler | null = null;
  /** Unique name of the daemon we last registered with. */
  private daemonOwner: string | null = null;
  private readonly tracker = new SequenceTracker();
  /** Serialises notification handlers: acknowledgements go out in delivery order. */
  private chain: Promise<void> = Promise.resolve();
  private resync: Promise<void> | null = null;
  private resyncAgain = false;
  private readonly stop = new AbortController();
  /** Stopped: bus lost or close() called; nothing new starts. */
  private closed = false;
  /** close() has run (it still owes the connection a close after a loss). */
  private disposed = false;
  private unsubscribe: (() => void) | null = null;
  private readonly logger: Logger;
  private readonly events = loadInterface(EVENTS_INTERFACE);

  constructor(private readonly opts: AgentOptions) {
    this.logger = opts.logger ?? createLogger({ level: 'warn', toStderr: true, name: 'hmd-client' });
  }

  async start(): Promise<void> {
    const { signal } = this.opts;
    if (signal?.aborted) throw new HmdError(ErrorCode.BusLost, 'aborted before the agent started');
    signal?.addEventListener('abort', () => void this.close(), { once: true });
    this.opts.onStateChange?.(this.state);
    const conn = await connectBus({ bus: this.opts.bus ?? 'system', logger: this.logger });
    if (this.closed) {
      conn.close();
      throw this.stop.signal.reason as Error;
    }
    this.conn = conn;
    conn.onLost((reason) => this.lost(reason));
    conn.serve((call) => (this.router === null ? undefined : this.router(call)));
    try {
      // Subscribe before asking who the daemon is, so no restart can slip between the two.
      this.unsubscribe = await this.guard(
        conn.onNameOwnerChanged((name, _old, owner) => {
          if (name === DAEMON_BUS_NAME) this.daemonChanged(owner);
        }),
      );
      await this.register();
    } catch (err) {
      this.shutdown(new HmdError(ErrorCode.BusLost, 'the agent did not start'));
      conn.close();
      throw err;
    }
  }

  async saveKeystore(o: { pollMs?: number; timeoutMs?: number } = {}): Promise<number> {
    const pollMs = o.pollMs ?? 500;
    const deadline = Date.now() + (o.timeoutMs ?? 60_000);
    const started = await this.statusCall('StartKeystoreSave');
    if (started !== Status.OK) return started;
    for (;;) {
      const status = await this.statusCall('GetKeystoreStatus');
      if (status !== Status.EBUSY || Date.now() + pollMs > deadline) return status;
      await this.sleep(pollMs);
    }
  }

  keystoreStatus(): Promise<number> {
    return this.statusCall('GetKeystoreStatus');
  }

  async close(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const conn = this.conn;
    const name = this.busName;
    const live = !this.closed;
    this.shutdown(new HmdError(ErrorCode.BusLost, 'the agent was closed'));
    if (conn !== null && name !== null && live) {
      try {
        // Say goodbye explicitly: the daemon sees the name go before the connection does.
        await conn.releaseName(name);
      } catch (err) {
        this.logger.debug({ err: describeError(err) }, 'could not release the agent name');
      }
    }
    conn?.close();
  }

  private shutdown(reason: HmdError): void {
    this.closed = true;
    this.unsubscribe?.();
    this.stop.abort(reason);
  }

  private lost(reason: string): void {
    if (this.closed) return;
    this.logger.error({ reason }, 'lost the bus connection: the agent has stopped');
    this.shutdown(new HmdError(ErrorCode.BusLost, `lost the bus connection: ${reason}`));
    this.setState('daemon-gone');
  }

  private setState(s: AgentState): void {
    if (this.state === s) return;
    this.state = s;
    try {
      this.opts.onStateChange?.(s);
    } catch (err) {
      this.logger.error({ err: describeError(err) }, 'onStateChange threw');
    }
  }

  /** Register → own the name → export Events → Ready (DESIGN A1/A2). */
  private async register(): Promise<void> {
    const conn = this.requireConn();
    const owner = await this.guard(conn.getNameOwner(DAEMON_BUS_NAME));
    if (owner === null) throw new HmdError(ErrorCode.DaemonNotRunning, `${DAEMON_BUS_NAME} is not on the bus: is veea-hmd running on the host?`);
    // Recorded first: a restart that happens while we register then triggers one more round.
    this.daemonOwner = owner;
    const [status, busName] = registerReply.parse(await this.callDaemon('Register'));
    if (status === Status.ENODATA) {
      throw new HmdError(ErrorCode.NotAContainer, 'this process is not in a container the daemon recognises (Register answered ENODATA)', { details: { status } });
    }
    const cid = AGENT_NAME_RE.exec(busName)?.[1];
    if (status !== Status.OK || cid === undefined) {
      throw new HmdError(ErrorCode.Internal, `Register answered (${status}, ${JSON.stringify(busName)})`, { details: { status, busName } });
    }
    if (this.busName !== null && this.busName !== busName) await this.guard(conn.releaseName(this.busName)).catch(() => undefined);
    this.router = createRouter([{ path: agentObjectPath(cid), interfaces: [{ def: this.events, impl: this.eventsImpl() }] }]);
    const owned = await this.guard(conn.requestName(busName, { doNotQueue: true }));
    if (owned === 'exists') {
      throw new HmdError(ErrorCode.NameTaken, `${busName} is owned by another process of this container: run one agent per container`, { details: { busName } });
    }
    this.cid = cid;
    this.busName = busName;
    this.setState('registered');
    await this.callDaemon('Ready');
    this.logger.info({ busName, daemon: owner }, 'registered and ready');
    this.setState('ready');
  }

  private daemonChanged(owner: string): void {
    if (this.closed) return;
    if (owner === '') {
      // Keep the name and the Events object: a daemon restored from its state file delivers to
      // them again without asking us anything.
      this.logger.warn('the daemon left the bus; waiting for it to come back');
      this.daemonOwner = null;
      this.setState('connecting');
    } else if (owner !== this.daemonOwner) {
      this.logger.info({ daemon: owner }, 'the daemon is back; registering again');
      this.scheduleResync();
    }
  }

  private scheduleResync(): void {
    if (this.resync !== null) {
      this.resyncAgain = true;
      return;
    }
    this.resync = (async () => {
      do {
        this.resyncAgain = false;
        await this.registerWithRetry();
      } while (this.resyncAgain && !this.closed);
    })().finally(() => {
      this.resync = null;
    });
  }

  private async registerWithRetry(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.register();
        return;
      } catch (err) {
        if (this.closed) return;
        const delay = RETRY_DELAYS_MS[attempt];
        const final = delay === undefined || isHmdError(err, ErrorCode.NotAContainer) || isHmdError(err, ErrorCode.NameTaken);
        this.logger[final ? 'error' : 'warn']({ err: describeError(err), attempt: attempt + 1 }, final ? 'cannot register with the restarted daemon; waiting for its next start' : 'registering again failed; retrying');
        if (final) return;
        try {
          await this.sleep(delay);
        } catch {
          return;
        }
      }
    }
  }

  private eventsImpl(): Record<string, (call: IncomingCall) => Promise<CallReply>> {
    const on = (type: NoticeType) => (call: IncomingCall) => {
      const run = this.chain.then(() => this.deliver(type, call.body));
      this.chain = run.catch(() => undefined);
      return run.then(() => ret());
    };
    return { DeviceInserted: on('DeviceInserted'), DeviceRemoved: on('DeviceRemoved') };
  }

  private async deliver(type: NoticeType, body: BusValue[]): Promise<void> {
    let notice: DeviceNotice;
    try {
      notice = parseNotice(body);
    } catch (err) {
      this.logger.warn({ err: describeError(err), type }, 'ignoring a malformed notification');
      return;
    }
    const verdict = this.tracker.accept(notice.sequence);
    const log = { type, deviceId: notice.deviceId, sequence: notice.sequence };
    if (!verdict.deliver) {
      this.logger.debug({ ...log, last: verdict.last }, 'dropping a notification already delivered');
      return;
    }
    if (verdict.note === 'gap') this.logger.warn({ ...log, expected: verdict.expected }, 'sequence gap in notifications');
    if (verdict.note === 'unsequenced') this.logger.warn(log, 'notification without HMD_SEQUENCE');
    const handler = type === 'DeviceInserted' ? this.opts.onInserted : this.opts.onRemoved;
    try {
      await handler?.(notice);
    } catch (err) {
      this.logger.error({ ...log, err: describeError(err) }, 'notification handler failed; acknowledged anyway');
    }
  }

  private async statusCall(member: 'StartKeystoreSave' | 'GetKeystoreStatus'): Promise<number> {
    const [status] = statusReply.parse(await this.callDaemon(member));
    return status;
  }

  private async callDaemon(member: string): Promise<BusValue[]> {
    const conn = this.requireConn();
    try {
      return await this.guard(conn.call(DAEMON_BUS_NAME, DAEMON_OBJECT_PATH, CONTAINER_INTERFACE, member, '', [], { timeoutMs: this.opts.callTimeoutMs ?? 10_000 }));
    } catch (err) {
      throw translate(member, err);
    }
  }

  private requireConn(): BusConnection {
    if (this.conn === null || this.closed) throw (this.stop.signal.reason as HmdError | undefined) ?? new HmdError(ErrorCode.BusLost, 'the agent is not connected');
    return this.conn;
  }

  /** A pause that ends early (rejecting) when the agent stops, leaving no timer behind. */
  private async sleep(ms: number): Promise<void> {
    try {
      await sleep(ms, undefined, { signal: this.stop.signal });
    } catch {
      throw this.stop.signal.reason as Error;
    }
  }

  /**
   * dbus-next never settles calls pending on a dead connection: everything we wait for is
   * raced against the agent stopping (bus lost or closed).
   */
  private guard<T>(p: Promise<T>): Promise<T> {
    const signal = this.stop.signal;
    if (signal.aborted) {
      p.catch(() => undefined);
      return Promise.reject(signal.reason as Error);
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      p.then(
        (v) => {
          signal.removeEventListener('abort', onAbort);
          resolve(v);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(err as Error);
        },
      );
    });
  }
}

/** D-Bus errors from the daemon's side, in terms a container developer can act on. */
function translate(member: string, err: unknown): unknown {
  if (!(err instanceof RemoteError)) return err;
  switch (err.dbusName) {
    case 'org.freedesktop.DBus.Error.ServiceUnknown':
    case 'org.freedesktop.DBus.Error.NameHasNoOwner':
      return new HmdError(ErrorCode.DaemonNotRunning, `${member}: ${DAEMON_BUS_NAME} is not on the bus: is veea-hmd running on the host?`, { cause: err });
    case 'org.freedesktop.DBus.Error.AccessDenied':
      return new HmdError(ErrorCode.AccessDenied, `${member}: the bus policy denies this call (is the veea-hmd D-Bus policy installed?)`, { cause: err });
    case ERROR_NOT_REGISTERED:
      return new HmdError(ErrorCode.NotRegistered, `${member}: the daemon does not know this connection as registered`, { cause: err });
    default:
      return new HmdError(ErrorCode.Internal, `${member} failed: ${err.message}`, { cause: err });
  }
}
