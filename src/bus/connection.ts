import { Message, MessageType, MessageFlag, sessionBus, systemBus, type MessageBus } from '@jellybrick/dbus-next';
import { HmdError, ErrorCode, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  RemoteError,
  type BusConnection,
  type BusValue,
  type CallHandler,
  type CallOptions,
  type Credentials,
  type IncomingCall,
  type RequestNameResult,
} from './types.js';

const DBUS_NAME = 'org.freedesktop.DBus';
const DBUS_PATH = '/org/freedesktop/DBus';

/** Everything `bus:` options accept: "system", "session" or a D-Bus address. */
export function resolveBusAddress(bus: string): { kind: 'system' | 'session' | 'address'; address?: string } {
  if (bus === 'system') return { kind: 'system' };
  if (bus === 'session') return { kind: 'session' };
  if (/^[a-z]+:/.test(bus)) return { kind: 'address', address: bus };
  throw new HmdError(ErrorCode.InvalidArgs, `--bus must be "system", "session" or a D-Bus address like unix:path=/run/dbus/system_bus_socket, not "${bus}"`);
}

export interface ConnectOptions {
  bus: string;
  logger: Logger;
  /** How long to wait for the bus to answer Hello. */
  connectTimeoutMs?: number;
  /** Period of the liveness probe to the bus itself (0 = off). */
  watchdogMs?: number;
}

/**
 * Opens a connection and resolves once the bus has assigned our unique name.
 * dbus-next reports a dead socket only through its internal stream, so we listen there and run
 * a cheap liveness probe against the bus daemon: a lost bus is noticed within seconds.
 */
export async function connectBus(opts: ConnectOptions): Promise<BusConnection> {
  const where = resolveBusAddress(opts.bus);
  let bus: MessageBus;
  try {
    bus =
      where.kind === 'system'
        ? systemBus()
        : where.kind === 'session'
          ? sessionBus()
          : sessionBus({ busAddress: where.address as string });
  } catch (err) {
    throw new HmdError(ErrorCode.BusUnavailable, `cannot connect to the ${opts.bus} bus: ${describeError(err)}`, { cause: err });
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new HmdError(ErrorCode.BusUnavailable, `the ${opts.bus} bus did not answer within ${opts.connectTimeoutMs ?? 5000} ms`));
    }, opts.connectTimeoutMs ?? 5000);
    const onConnect = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: unknown): void => {
      cleanup();
      reject(new HmdError(ErrorCode.BusUnavailable, `cannot connect to the ${opts.bus} bus: ${describeError(err)}`, { cause: err }));
    };
    // MessageBus re-emits its stream's errors but does not declare the event in its types.
    const emitter = bus as unknown as { once(ev: string, fn: AnyListener): void; off(ev: string, fn: AnyListener): void };
    const cleanup = (): void => {
      clearTimeout(timer);
      emitter.off('connect', onConnect);
      emitter.off('error', onError);
    };
    emitter.once('connect', onConnect);
    emitter.once('error', onError);
  });
  return new DbusNextConnection(bus, opts.logger.child({ bus: bus.name }), opts.watchdogMs ?? 2000);
}

type AnyListener = (...args: unknown[]) => void;

class DbusNextConnection implements BusConnection {
  readonly uniqueName: string;
  private pending = 0;
  private lost = false;
  private closed = false;
  private readonly lostListeners: Array<(reason: string) => void> = [];
  private readonly nocListeners = new Set<(name: string, oldOwner: string, newOwner: string) => void>();
  private nocMatch: Promise<void> | null = null;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    private readonly bus: MessageBus,
    private readonly logger: Logger,
    watchdogMs: number,
  ) {
    this.uniqueName = bus.name ?? '';
    // Without an 'error' listener a send on a dead stream would crash the process.
    (bus as unknown as { on(ev: string, fn: AnyListener): void }).on('error', (err: unknown) => this.markLost(`bus error: ${describeError(err)}`));
    const conn = (bus as unknown as { _connection?: { on(ev: string, fn: AnyListener): void; stream?: { on(ev: string, fn: AnyListener): void } } })._connection;
    conn?.on('end', () => this.markLost('the bus closed the connection'));
    conn?.stream?.on('close', () => this.markLost('the bus socket closed'));
    bus.on('message', (msg: Message) => {
      if (msg.type === MessageType.SIGNAL && msg.sender === DBUS_NAME && msg.member === 'NameOwnerChanged' && msg.interface === DBUS_NAME) {
        const [name, oldOwner, newOwner] = msg.body as [string, string, string];
        for (const cb of this.nocListeners) cb(name, oldOwner, newOwner);
      }
    });
    if (watchdogMs > 0) {
      this.watchdog = setInterval(() => void this.probe(watchdogMs), watchdogMs);
      this.watchdog.unref();
    }
  }

  private async probe(timeoutMs: number): Promise<void> {
    if (this.lost || this.closed) return;
    try {
      await this.call(DBUS_NAME, DBUS_PATH, 'org.freedesktop.DBus.Peer', 'Ping', '', [], { timeoutMs: Math.max(timeoutMs, 2000) });
    } catch (err) {
      if (!this.closed) this.markLost(`the bus does not answer: ${describeError(err)}`);
    }
  }

  private markLost(reason: string): void {
    if (this.lost || this.closed) return;
    this.lost = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.logger.debug({ reason }, 'bus connection lost');
    for (const cb of this.lostListeners) cb(reason);
  }

  onLost(cb: (reason: string) => void): void {
    this.lostListeners.push(cb);
  }

  pendingCalls(): number {
    return this.pending;
  }

  call(dest: string, path: string, iface: string, member: string, signature: string, body: BusValue[], opts: CallOptions = {}): Promise<BusValue[]> {
    if (this.lost || this.closed) return Promise.reject(new HmdError(ErrorCode.BusLost, 'not connected to the bus'));
    const msg = new Message({ destination: dest, path, interface: iface, member, signature, body: body as never[] });
    // The slot on the bus is held until the peer answers or leaves, whatever our local deadline
    // says: count it the same way, so the dispatcher can keep every connection under the limit.
    this.pending++;
    const sent = this.bus.call(msg).then(
      (reply) => {
        this.pending--;
        return (reply?.body ?? []) as BusValue[];
      },
      (err: unknown) => {
        this.pending--;
        const e = err as { type?: string; text?: string };
        if (typeof e.type === 'string') throw new RemoteError(e.type, e.text ?? '');
        throw err;
      },
    );
    if (opts.timeoutMs === undefined) return sent;
    return new Promise<BusValue[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new HmdError(ErrorCode.Timeout, `${member} on ${dest} got no reply within ${opts.timeoutMs} ms`)), opts.timeoutMs);
      sent.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err as Error);
        },
      );
    });
  }

  async getNameOwner(name: string): Promise<string | null> {
    try {
      const [owner] = await this.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, 'GetNameOwner', 's', [name], { timeoutMs: 5000 });
      return typeof owner === 'string' ? owner : null;
    } catch (err) {
      if (err instanceof RemoteError && err.dbusName === 'org.freedesktop.DBus.Error.NameHasNoOwner') return null;
      throw err;
    }
  }

  async getCredentials(uniqueName: string): Promise<Credentials> {
    const [creds] = await this.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, 'GetConnectionCredentials', 's', [uniqueName], { timeoutMs: 5000 });
    const dict = creds as Record<string, { value: unknown } | undefined>;
    const pid = dict['ProcessID']?.value;
    const uid = dict['UnixUserID']?.value;
    if (typeof pid !== 'number' || typeof uid !== 'number') {
      throw new HmdError(ErrorCode.NotAContainer, `the bus reported no process/user for ${uniqueName}`);
    }
    return { pid, uid };
  }

  async requestName(name: string, o: { doNotQueue?: boolean; allowReplacement?: boolean; replaceExisting?: boolean } = {}): Promise<RequestNameResult> {
    const flags = (o.allowReplacement ? 1 : 0) | (o.replaceExisting ? 2 : 0) | (o.doNotQueue ? 4 : 0);
    const [code] = await this.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, 'RequestName', 'su', [name, flags], { timeoutMs: 5000 });
    switch (code) {
      case 1:
        return 'primary';
      case 2:
        return 'queued';
      case 3:
        return 'exists';
      case 4:
        return 'already';
      default:
        throw new HmdError(ErrorCode.Internal, `RequestName answered ${String(code)}`);
    }
  }

  async releaseName(name: string): Promise<void> {
    await this.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, 'ReleaseName', 's', [name], { timeoutMs: 5000 });
  }

  async onSignal(iface: string, member: string, cb: (body: BusValue[], sender: string) => void): Promise<() => void> {
    const listener = (msg: Message): void => {
      if (msg.type === MessageType.SIGNAL && msg.interface === iface && msg.member === member) cb((msg.body ?? []) as BusValue[], msg.sender ?? '');
    };
    this.bus.on('message', listener);
    return () => {
      this.bus.off('message', listener);
    };
  }

  async onNameOwnerChanged(cb: (name: string, oldOwner: string, newOwner: string) => void): Promise<() => void> {
    this.nocListeners.add(cb);
    // One match rule per connection, added once: subscribe cycles never leak rules on the bus.
    this.nocMatch ??= this.call(DBUS_NAME, DBUS_PATH, DBUS_NAME, 'AddMatch', 's', [
      `type='signal',sender='${DBUS_NAME}',interface='${DBUS_NAME}',member='NameOwnerChanged',path='${DBUS_PATH}'`,
    ]).then(
      () => undefined,
      (err: unknown) => this.logger.error({ err: describeError(err) }, 'cannot subscribe to NameOwnerChanged'),
    );
    await this.nocMatch;
    return () => {
      this.nocListeners.delete(cb);
    };
  }

  serve(handler: CallHandler): void {
    this.bus.addMethodHandler((msg: Message) => {
      if (msg.type !== MessageType.METHOD_CALL) return false;
      const call: IncomingCall = {
        sender: msg.sender ?? '',
        path: msg.path ?? '/',
        iface: msg.interface,
        member: msg.member ?? '',
        signature: msg.signature ?? '',
        body: (msg.body ?? []) as BusValue[],
      };
      const noReply = (msg.flags & MessageFlag.NO_REPLY_EXPECTED) !== 0;
      const respond = (reply: Awaited<ReturnType<CallHandler>>): void => {
        if (noReply || this.lost || this.closed) return;
        if (reply === undefined) {
          this.bus.send(Message.newError(msg, 'org.freedesktop.DBus.Error.UnknownObject', `no object at ${call.path}`));
        } else if (reply.kind === 'error') {
          this.bus.send(Message.newError(msg, reply.name, reply.message));
        } else {
          this.bus.send(Message.newMethodReturn(msg, reply.signature, reply.body as never[]));
        }
      };
      let result: ReturnType<CallHandler>;
      try {
        result = handler(call);
      } catch (err) {
        this.logger.error({ err: describeError(err), member: call.member }, 'method handler threw');
        respond({ kind: 'error', name: 'org.freedesktop.DBus.Error.Failed', message: 'internal error' });
        return true;
      }
      if (result instanceof Promise) {
        result.then(respond, (err: unknown) => {
          this.logger.error({ err: describeError(err), member: call.member }, 'method handler failed');
          respond({ kind: 'error', name: 'org.freedesktop.DBus.Error.Failed', message: 'internal error' });
        });
      } else {
        respond(result);
      }
      return true;
    });
  }

  /** Sends a signal from this connection (used by the Admin Monitor stream). */
  emitSignal(path: string, iface: string, member: string, signature: string, body: BusValue[], destination?: string): void {
    if (this.lost || this.closed) return;
    const msg = Message.newSignal(path, iface, member, signature, body as never[]);
    if (destination !== undefined) msg.destination = destination;
    this.bus.send(msg);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    try {
      this.bus.disconnect();
    } catch {
      // already gone
    }
  }
}
