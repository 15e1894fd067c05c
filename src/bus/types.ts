/**
 * The small interfaces the rest of the daemon sees instead of dbus-next. Only `bus/` imports
 * dbus-next; unit tests implement these with fakes, e2e tests run the real thing against a
 * private dbus-daemon.
 */

/** A D-Bus value as dbus-next marshals it: strings, numbers, arrays, objects (a{sv} etc.). */
export type BusValue = unknown;

export interface IncomingCall {
  /** Unique name (":1.42") of the caller, as stamped by the bus. */
  sender: string;
  path: string;
  iface: string | undefined;
  member: string;
  /** The call's body signature ("" when none). */
  signature: string;
  body: BusValue[];
}

export type CallReply =
  | { kind: 'return'; signature: string; body: BusValue[] }
  | { kind: 'error'; name: string; message: string };

/** Handles a method call addressed to this connection; `undefined` = not mine (UnknownObject). */
export type CallHandler = (call: IncomingCall) => Promise<CallReply> | CallReply | undefined;

export interface Credentials {
  pid: number;
  uid: number;
}

export interface CallOptions {
  /** Local deadline; the promise rejects with HmdError TIMEOUT. The bus slot is not freed by it. */
  timeoutMs?: number;
}

/** Thrown (as the rejection) when the peer answered a call with a D-Bus error. */
export class RemoteError extends Error {
  readonly dbusName: string;
  constructor(dbusName: string, message: string) {
    super(message ? `${dbusName}: ${message}` : dbusName);
    this.name = 'RemoteError';
    this.dbusName = dbusName;
  }
}

export type RequestNameResult = 'primary' | 'queued' | 'exists' | 'already';

export interface BusConnection {
  /** This connection's unique name (":1.7"). */
  readonly uniqueName: string;
  /** Calls a method and resolves with the reply body; rejects with RemoteError or HmdError. */
  call(dest: string, path: string, iface: string, member: string, signature: string, body: BusValue[], opts?: CallOptions): Promise<BusValue[]>;
  /** Current unique-name owner of a well-known name, or null when it has none. */
  getNameOwner(name: string): Promise<string | null>;
  /** PID and UID of a connection, from the bus (GetConnectionCredentials). */
  getCredentials(uniqueName: string): Promise<Credentials>;
  requestName(name: string, opts?: { doNotQueue?: boolean; allowReplacement?: boolean; replaceExisting?: boolean }): Promise<RequestNameResult>;
  releaseName(name: string): Promise<void>;
  /** Subscribes to org.freedesktop.DBus NameOwnerChanged; resolves (with the unsubscribe
   * function) once the match rule is in place on the bus. */
  onNameOwnerChanged(cb: (name: string, oldOwner: string, newOwner: string) => void): Promise<() => void>;
  /** Listens for signals of one interface member addressed to us (unicast needs no match rule). */
  onSignal(iface: string, member: string, cb: (body: BusValue[], sender: string) => void): Promise<() => void>;
  /** Sends a signal from this connection: broadcast, or unicast to `destination`. */
  emitSignal(path: string, iface: string, member: string, signature: string, body: BusValue[], destination?: string): void;
  /** Serves incoming method calls (one handler; calls it returns undefined for get UnknownObject). */
  serve(handler: CallHandler): void;
  /** Called once when the connection to the bus is gone (dbus-daemon died, socket closed). */
  onLost(cb: (reason: string) => void): void;
  /** Unanswered outgoing calls (each holds one of the bus's per-connection reply slots). */
  pendingCalls(): number;
  close(): void;
}

/** Opens connections to the configured bus (the dispatcher keeps a small pool of them). */
export type BusFactory = () => Promise<BusConnection>;
