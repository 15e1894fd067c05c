/**
 * Validation of raw udev property sets at the edge (spool files, `udevadm monitor`, the udev
 * database). Everything here treats its input as hostile: sizes are bounded, names checked, and
 * every failure is an HmdError(SPOOL_INVALID) whose message says exactly what was wrong.
 */
import { z } from 'zod';
import { HMD_PREFIX } from '../constants.js';
import { DEVICE_ACTIONS, type DeviceEvent, type EventSource } from '../devices/types.js';
import { ErrorCode, HmdError } from '../errors.js';

export const LIMITS = {
  /** Whole spool file (or one monitor block). */
  fileBytes: 64 * 1024,
  /** One value, in UTF-8 bytes. */
  valueBytes: 4 * 1024,
  /** Properties kept after dropping `HMD_*` and shell variables. */
  keys: 512,
  keyChars: 128,
} as const;

export const U64_MAX = 18_446_744_073_709_551_615n;

const KEY_RE = /^[A-Za-z0-9_.-]+$/;

/**
 * Variables a shell sets or exports by itself (dash, bash, busybox ash), and the few a service
 * environment adds. udev names no property like these, so they are dropped, never rejected.
 */
const SHELL_VARIABLES: ReadonlySet<string> = new Set([
  '_', 'PATH', 'PWD', 'OLDPWD', 'SHLVL', 'HOME', 'TERM', 'IFS', 'PS1', 'PS2', 'PS3', 'PS4',
  'OPTIND', 'OPTARG', 'OPTERR', 'PPID', 'LINENO', 'HOSTNAME', 'SHELL', 'USER', 'LOGNAME', 'MAIL',
  'MAILCHECK', 'MAILPATH', 'ENV', 'CDPATH', 'HISTFILE', 'HISTSIZE', 'FCEDIT', 'COLUMNS', 'LINES',
  'POSIXLY_CORRECT', 'TMPDIR', 'TZ', 'LANG', 'LANGUAGE', 'LC_ALL', 'UID', 'EUID', 'GROUPS',
  'RANDOM', 'SECONDS', 'SHELLOPTS', 'BASHOPTS', 'HOSTTYPE', 'MACHTYPE', 'OSTYPE',
  'INVOCATION_ID', 'JOURNAL_STREAM', 'NOTIFY_SOCKET', 'SYSTEMD_EXEC_PID', 'LISTEN_PID',
  'LISTEN_FDS', 'LISTEN_FDNAMES', 'WATCHDOG_PID', 'WATCHDOG_USEC',
]);
const SHELL_PREFIXES = ['LC_', 'BASH'] as const;

/** True for keys that are never passed on: the daemon's own `HMD_` namespace and shell variables. */
export function isDroppedKey(key: string): boolean {
  if (key.startsWith(HMD_PREFIX)) return true;
  if (SHELL_VARIABLES.has(key)) return true;
  return SHELL_PREFIXES.some((p) => key.startsWith(p));
}

/** Drops every `HMD_*` key (DESIGN A2) and shell variables; keeps everything else as it is. */
export function cleanProperties(raw: Record<string, string>): Record<string, string> {
  // fromEntries, not assignment: a key like `__proto__` must stay data, never touch a prototype.
  return Object.fromEntries(Object.entries(raw).filter(([k]) => !isDroppedKey(k)));
}

function invalid(reason: string): HmdError {
  return new HmdError(ErrorCode.SpoolInvalid, reason);
}

/**
 * Turns KEY=VALUE pairs into a record. Dropped keys are skipped before any check (they are never
 * a reason to reject); a kept key given twice is rejected, since either value could be the lie.
 */
export function entriesToRecord(entries: Iterable<readonly [string, string]>): Record<string, string> {
  const seen = new Set<string>();
  const kept: Array<[string, string]> = [];
  for (const [key, value] of entries) {
    if (isDroppedKey(key)) continue;
    // Would become the record's prototype (and slip past schema checks) instead of a property.
    if (key === '__proto__') throw invalid('key "__proto__" is not a udev property');
    if (seen.has(key)) throw invalid(`duplicate key ${quote(key)}`);
    seen.add(key);
    kept.push([key, value]);
    if (kept.length > LIMITS.keys) throw invalid(`more than ${LIMITS.keys} properties`);
  }
  return Object.fromEntries(kept);
}

/**
 * Parses the helper's spool format, the output of `env -0`: NUL-terminated `KEY=VALUE` records.
 * Values may hold anything but NUL. Bytes that are no valid UTF-8 become U+FFFD: D-Bus strings
 * must be UTF-8, and a device with an odd name byte is still a device.
 */
export function parseNulRecords(buf: Buffer): Array<[string, string]> {
  if (buf.length === 0) throw invalid('empty file');
  if (buf.length > LIMITS.fileBytes) throw invalid(`larger than ${LIMITS.fileBytes} bytes`);
  const text = buf.toString('utf8');
  const parts = text.split('\0');
  // `env -0` terminates every record, so the last part is empty; a missing final NUL is tolerated.
  if (parts[parts.length - 1] === '') parts.pop();
  const out: Array<[string, string]> = [];
  for (const [i, rec] of parts.entries()) {
    const eq = rec.indexOf('=');
    if (eq <= 0) throw invalid(`record ${i + 1} is not KEY=VALUE: ${quote(rec.slice(0, 40))}`);
    out.push([rec.slice(0, eq), rec.slice(eq + 1)]);
  }
  return out;
}

const keySchema = z
  .string()
  .max(LIMITS.keyChars, { error: `key longer than ${LIMITS.keyChars} characters` })
  .regex(KEY_RE, { error: 'key name not of [A-Za-z0-9_.-]' })
  .refine((k) => k !== '__proto__', { error: 'key name not allowed' });

const valueSchema = z
  .string()
  .refine((v) => Buffer.byteLength(v, 'utf8') <= LIMITS.valueBytes, { error: `value longer than ${LIMITS.valueBytes} bytes` });

/** Any set of properties the daemon keeps: bounded names and sizes. */
export const propertiesSchema = z
  .record(keySchema, valueSchema)
  .refine((r) => Object.keys(r).length <= LIMITS.keys, { error: `more than ${LIMITS.keys} properties` });

const required = (what: string) => ({
  error: (iss: { input: unknown }) => (iss.input === undefined ? 'missing' : `not ${what}`),
});

/** The id of a device everywhere (DESIGN A2): a sysfs path under /devices, no tricks. */
export const devpathSchema = z
  .string(required('a string'))
  .startsWith('/devices/', { error: 'does not start with /devices/' })
  .refine((p) => ![...p].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f), { error: 'contains a control character' })
  .refine((p) => p.slice(1).split('/').every((s) => s !== '' && s !== '.' && s !== '..'), {
    error: 'has an empty, . or .. path segment',
  });

export const subsystemSchema = z
  .string(required('a string'))
  .regex(/^[A-Za-z0-9_.:+-]{1,64}$/, { error: 'not a subsystem name' });

export const seqnumSchema = z
  .string(required('a string'))
  .regex(/^[0-9]{1,20}$/, { error: 'not a decimal number of at most 20 digits' })
  .transform((s) => BigInt(s))
  .refine((n) => n <= U64_MAX, { error: 'does not fit in 64 bits' });

/** The fields a live event must carry, beyond the bounded property set. */
export const eventRecordSchema = z.object({
  ACTION: z.enum(DEVICE_ACTIONS, required(`one of ${DEVICE_ACTIONS.join('|')}`)),
  DEVPATH: devpathSchema,
  SUBSYSTEM: subsystemSchema,
  SEQNUM: seqnumSchema,
});

/** The fields every present device has (coldplug: no ACTION, no SEQNUM). */
export const deviceRecordSchema = z.object({ DEVPATH: devpathSchema, SUBSYSTEM: subsystemSchema });

function issuesToReason(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      // A bad record key is reported as "Invalid key in record" with the real cause inside.
      const inner = i.code === 'invalid_key' ? i.issues[0]?.message : undefined;
      const message = inner ?? i.message;
      return i.path.length > 0 ? `${i.path.map((p) => pathPart(String(p))).join('.')}: ${message}` : message;
    })
    .join('; ');
}

/** Cleans and bounds a property set; throws SPOOL_INVALID with the reason. */
export function validateProperties(raw: Record<string, string>): Record<string, string> {
  const props = cleanProperties(raw);
  // zod's record() passes over an own `__proto__` key without checking it: refuse it here.
  if (Object.hasOwn(props, '__proto__')) throw invalid('key "__proto__" is not a udev property');
  const res = propertiesSchema.safeParse(props);
  if (!res.success) throw invalid(issuesToReason(res.error));
  return props;
}

/** One live udev event, validated; properties are cleaned and kept as udev gave them. */
export function parseEventRecord(raw: Record<string, string>, source: EventSource): DeviceEvent {
  const properties = validateProperties(raw);
  const res = eventRecordSchema.safeParse(properties);
  if (!res.success) throw invalid(issuesToReason(res.error));
  return {
    action: res.data.ACTION,
    devpath: res.data.DEVPATH,
    subsystem: res.data.SUBSYSTEM,
    seqnum: res.data.SEQNUM,
    properties,
    source,
  };
}

/** A present device from the udev database, validated; SEQNUM dropped (DESIGN A2). */
export function parseDeviceProperties(raw: Record<string, string>): Record<string, string> {
  const properties = validateProperties(raw);
  const res = deviceRecordSchema.safeParse(properties);
  if (!res.success) throw invalid(issuesToReason(res.error));
  delete properties['SEQNUM'];
  return properties;
}

/** A key as it can be shown in a reason: plain names as they are, anything else quoted. */
function pathPart(key: string): string {
  return KEY_RE.test(key) ? shorten(key) : quote(key);
}

function shorten(s: string): string {
  return s.length > 60 ? `${s.slice(0, 60)}…` : s;
}

function quote(s: string): string {
  return JSON.stringify(shorten(s));
}
