/**
 * Random D-Bus calls to the daemon's object (and next to it), and a model of the answer each
 * must get: the bus policy's AccessDenied, one of the router's standard errors, the contract's
 * errors, or a reply of the declared shape. Values are JSON so they travel to support/peer.mjs:
 * variants as {"$v": [signature, value]}, dicts as objects, 64-bit integers as decimal strings.
 */
import { ADMIN_INTERFACE, CONTAINER_INTERFACE, DAEMON_OBJECT_PATH, ERROR_NOT_REGISTERED, EVENTS_INTERFACE, Status } from '../../../src/constants.js';
import type { Rng } from './rng.js';

const E = 'org.freedesktop.DBus.Error.';
export const ACCESS_DENIED = `${E}AccessDenied`;
const INTROSPECTABLE = 'org.freedesktop.DBus.Introspectable';
const PEER = 'org.freedesktop.DBus.Peer';
const PROPERTIES = 'org.freedesktop.DBus.Properties';

export interface FuzzCall {
  /** undefined: a call without an interface field. */
  iface: string | undefined;
  member: string;
  path: string;
  signature: string;
  body: unknown[];
}

export type CallerKind = 'container' | 'host';

export interface Caller {
  kind: CallerKind;
  root: boolean;
  /** For containers: has a Register of theirs succeeded (Ready is refused before). */
  registered: boolean;
}

/** What a call may get: a reply accepted by `reply`, or one of `errors`. */
export interface Expectation {
  reply?: (body: unknown[]) => boolean;
  errors: string[];
}

// ---- random types and values ------------------------------------------------------------

const BASIC = 'ybnqiuxtdsog';

interface TypeGen {
  sig: string;
  value: () => unknown;
}

const ident = (rng: Rng, max = 12): string => {
  const first = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_';
  let s = rng.pick([...first]);
  for (let i = rng.int(0, max); i > 0; i--) s += rng.pick([...`${first}0123456789`]);
  return s;
};

export const randomPath = (rng: Rng): string => (rng.bool(0.1) ? '/' : Array.from({ length: rng.int(1, 5) }, () => `/${ident(rng)}`).join(''));

function randomString(rng: Rng): string {
  switch (rng.int(0, 5)) {
    case 0:
      return '';
    case 1:
      return ident(rng, 40);
    case 2:
      return rng.pick([CONTAINER_INTERFACE, ADMIN_INTERFACE, INTROSPECTABLE, PEER, PROPERTIES, EVENTS_INTERFACE, 'Status', '__proto__', 'constructor', 'io.veea.VeeaHub.HardwareMonitoringAgent.C_' + 'a'.repeat(64)]);
    case 3:
      // Any code point but NUL, lone surrogates included (they go out as U+FFFD).
      return String.fromCharCode(...Array.from({ length: rng.int(1, 64) }, () => rng.int(1, 0xffff)));
    case 4:
      return '🔌日本語 ünïcödé \n\t"\'\\';
    default:
      return 'x'.repeat(rng.pick([255, 256, 4096, 70_000]));
  }
}

function basicValue(rng: Rng, t: string): unknown {
  switch (t) {
    case 'y':
      return rng.int(0, 255);
    case 'b':
      return rng.bool();
    case 'n':
      return rng.pick([-32768, 32767, 0, rng.int(-32768, 32767)]);
    case 'q':
      return rng.pick([0, 65535, rng.int(0, 65535)]);
    case 'i':
      return rng.pick([-2147483648, 2147483647, 0, -1, rng.int(-2147483648, 2147483647)]);
    case 'u':
      return rng.pick([0, 4294967295, rng.int(0, 4294967295)]);
    case 'x':
      return rng.pick(['-9223372036854775807', '9223372036854775807', '0', String(rng.int(-1e9, 1e9))]);
    case 't':
      return rng.pick(['18446744073709551615', '0', String(rng.int(0, 4294967295))]);
    case 'd':
      return rng.pick([0, -0, 1.5, -1e308, 5e-324, rng.next() * 1e6]);
    case 's':
      return randomString(rng);
    case 'o':
      return randomPath(rng);
    case 'g':
      return rng.bool(0.2) ? '' : randomSignature(rng, rng.int(1, 3));
    default:
      throw new Error(`not a basic type: ${t}`);
  }
}

/** A variant as peer.mjs revives it into a dbus-next Variant. */
const variant = (sig: string, value: unknown): { $v: [string, unknown] } => ({ $v: [sig, value] });

/** Dict key types dbus-next can marshal from an object's string keys (it parses them back). */
const DICT_KEYS = 'ynqixtbsog';

function dictKey(rng: Rng, t: string): string {
  if (t === 'b') return String(rng.bool());
  if ('sog'.includes(t)) return String(basicValue(rng, t));
  // 64-bit keys go through parseInt: keep them within a double's exact range.
  return String(t === 'x' || t === 't' ? rng.int(0, 1_000_000) : basicValue(rng, t));
}

function completeType(rng: Rng, depth: number): TypeGen {
  const r = rng.next();
  if (depth <= 0 || r < 0.55) {
    const t = rng.pick([...BASIC]);
    return { sig: t, value: () => basicValue(rng, t) };
  }
  if (r < 0.7) {
    const el = completeType(rng, depth - 1);
    // Now and then a long array of a fixed-size basic type: message size, not just shape.
    // Not of strings: 5000 strings of up to 70 000 bytes, nested, pass the bus's 32 MiB message
    // limit, and dbus-daemon then disconnects the sender (its problem, not the daemon's).
    const long = el.sig.length === 1 && !'vsog'.includes(el.sig);
    return { sig: `a${el.sig}`, value: () => Array.from({ length: long && rng.bool(0.1) ? 5000 : rng.int(0, 4) }, el.value) };
  }
  if (r < 0.8) {
    const k = rng.pick([...DICT_KEYS]);
    const v = completeType(rng, depth - 1);
    return { sig: `a{${k}${v.sig}}`, value: () => Object.fromEntries(Array.from({ length: rng.int(0, 4) }, () => [dictKey(rng, k), v.value()])) };
  }
  if (r < 0.92) {
    const fields = Array.from({ length: rng.int(1, 3) }, () => completeType(rng, depth - 1));
    return { sig: `(${fields.map((f) => f.sig).join('')})`, value: () => fields.map((f) => f.value()) };
  }
  return {
    sig: 'v',
    value: () => {
      const inner = completeType(rng, depth - 1);
      return variant(inner.sig, inner.value());
    },
  };
}

export function randomSignature(rng: Rng, types: number): string {
  return Array.from({ length: types }, () => completeType(rng, 2).sig).join('');
}

function randomArgs(rng: Rng): { signature: string; body: unknown[] } {
  const types = Array.from({ length: rng.int(1, 4) }, () => completeType(rng, 3));
  return { signature: types.map((t) => t.sig).join(''), body: types.map((t) => t.value()) };
}

// ---- random calls -----------------------------------------------------------------------

interface Method {
  iface: string;
  member: string;
  in: string;
  /** Arguments of the right signature (random where they are free). */
  args: (rng: Rng) => unknown[];
}

const METHODS: Method[] = [
  ...['Register', 'Ready', 'StartKeystoreSave', 'GetKeystoreStatus'].map((member) => ({ iface: CONTAINER_INTERFACE, member, in: '', args: () => [] })),
  ...['GetStatus', 'Subscribe', 'Unsubscribe'].map((member) => ({ iface: ADMIN_INTERFACE, member, in: '', args: () => [] })),
  { iface: INTROSPECTABLE, member: 'Introspect', in: '', args: () => [] },
  { iface: PEER, member: 'Ping', in: '', args: () => [] },
  { iface: PEER, member: 'GetMachineId', in: '', args: () => [] },
  { iface: PROPERTIES, member: 'Get', in: 'ss', args: (rng) => [basicValue(rng, 's'), basicValue(rng, 's')] },
  { iface: PROPERTIES, member: 'GetAll', in: 's', args: (rng) => [rng.bool() ? rng.pick([CONTAINER_INTERFACE, ADMIN_INTERFACE, '']) : basicValue(rng, 's')] },
  {
    iface: PROPERTIES,
    member: 'Set',
    in: 'ssv',
    args: (rng) => {
      const v = completeType(rng, 2);
      return [rng.pick([CONTAINER_INTERFACE, ADMIN_INTERFACE]), basicValue(rng, 's'), variant(v.sig, v.value())];
    },
  },
  // The agent's interface, sent to the daemon instead.
  { iface: EVENTS_INTERFACE, member: 'DeviceInserted', in: 'sa{ss}', args: (rng) => ['/devices/x', { SUBSYSTEM: basicValue(rng, 's') }] },
];

export function randomCall(rng: Rng): FuzzCall {
  const m = rng.pick(METHODS);
  let iface: string | undefined = m.iface;
  let member = m.member;
  let path = DAEMON_OBJECT_PATH;
  const r = rng.next();
  if (r < 0.1) member = ident(rng, 30); // unknown member on a known interface
  else if (r < 0.17) iface = `${ident(rng)}.${ident(rng)}`; // unknown interface
  else if (r < 0.25) iface = undefined; // no interface field
  if (rng.bool(0.15)) path = rng.pick([randomPath(rng), '/', '/io/veea/VeeaHub', `${DAEMON_OBJECT_PATH}/x`]);
  const { signature, body } = rng.bool(0.45) ? { signature: m.in, body: m.args(rng) } : randomArgs(rng);
  return { iface, member, path, signature, body };
}

// ---- the model ----------------------------------------------------------------------------

/** Paths Introspect answers for: the object and its parents. */
const INTROSPECTABLE_PATHS = new Set(['/', '/io', '/io/veea', '/io/veea/VeeaHub', DAEMON_OBJECT_PATH]);

const isStatus = (allowed: number[]) => (b: unknown[]) => b.length === 1 && allowed.includes(b[0] as number);

/** What the bus policy (dbus/…conf under system-bus defaults) lets through to the daemon. */
function busAllows(call: FuzzCall, caller: Caller): boolean {
  // An allow rule naming an interface never matches a call without one (dbus-daemon's rule).
  if (call.iface === undefined) return false;
  if ([CONTAINER_INTERFACE, INTROSPECTABLE, PEER, PROPERTIES].includes(call.iface)) return true;
  return caller.root && (call.iface === ADMIN_INTERFACE || call.iface === EVENTS_INTERFACE);
}

export function expectation(call: FuzzCall, caller: Caller): Expectation {
  if (!busAllows(call, caller)) return { errors: [ACCESS_DENIED] };
  const { iface, member, signature, path } = call;
  const here = path === DAEMON_OBJECT_PATH;
  const unknownObject = { errors: [`${E}UnknownObject`] };

  if (iface === PEER && signature === '' && member === 'Ping') return { reply: (b) => b.length === 0, errors: [] };
  if (iface === PEER && signature === '' && member === 'GetMachineId') return { reply: (b) => b.length === 1 && /^[0-9a-f]{32}$/.test(String(b[0])), errors: [`${E}FileNotFound`] };
  if (iface === INTROSPECTABLE && member === 'Introspect') {
    if (signature !== '') return { errors: [`${E}InvalidArgs`] };
    if (!INTROSPECTABLE_PATHS.has(path)) return unknownObject;
    return { reply: (b) => b.length === 1 && String(b[0]).startsWith('<!DOCTYPE node') && String(b[0]).includes('</node>'), errors: [] };
  }
  if (!here) return unknownObject;

  if (iface === PROPERTIES) {
    const known = [CONTAINER_INTERFACE, ADMIN_INTERFACE, ''];
    if (member === 'GetAll' && signature === 's') return known.includes(call.body[0] as string) ? { reply: (b) => b.length === 1, errors: [] } : { errors: [`${E}UnknownInterface`] };
    if ((member === 'Get' && signature === 'ss') || (member === 'Set' && signature === 'ssv')) return { errors: [`${E}UnknownProperty`] };
    if (['Get', 'GetAll', 'Set'].includes(member)) return { errors: [`${E}InvalidArgs`] };
    return { errors: [`${E}UnknownMethod`] };
  }
  const method = METHODS.find((m) => m.iface === iface && m.member === member && (m.iface === CONTAINER_INTERFACE || m.iface === ADMIN_INTERFACE));
  if (iface !== CONTAINER_INTERFACE && iface !== ADMIN_INTERFACE) return { errors: [`${E}UnknownInterface`] };
  if (method === undefined) return { errors: [`${E}UnknownMethod`] };
  if (signature !== method.in) return { errors: [`${E}InvalidArgs`] };

  const container = caller.kind === 'container';
  switch (member) {
    case 'Register':
      return container
        ? { reply: (b) => b.length === 2 && b[0] === Status.OK && /^io\.veea\.VeeaHub\.HardwareMonitoringAgent\.C_[0-9a-f]{64}$/.test(String(b[1])), errors: [] }
        : { reply: (b) => b.length === 2 && b[0] === Status.ENODATA && b[1] === '', errors: [] };
    case 'Ready':
      return container && caller.registered ? { reply: (b) => b.length === 0, errors: [] } : { errors: [ERROR_NOT_REGISTERED] };
    case 'StartKeystoreSave':
    case 'GetKeystoreStatus':
      return container ? { reply: isStatus([Status.OK, Status.EIO, Status.EAGAIN, Status.EBUSY, Status.EFBIG]), errors: [] } : { reply: isStatus([Status.ENODATA]), errors: [] };
    case 'GetStatus':
      return { reply: (b) => b.length === 1 && Array.isArray((JSON.parse(String(b[0])) as { containers?: unknown }).containers), errors: [] };
    default: // Subscribe, Unsubscribe
      return { reply: (b) => b.length === 0, errors: [] };
  }
}
