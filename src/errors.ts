/**
 * One error class for the whole daemon, with stable machine-readable codes. Callers branch on
 * `code`, never on message text; messages are for humans and logs.
 */
export const ErrorCode = {
  ConfigInvalid: 'CONFIG_INVALID',
  ConfigUnreadable: 'CONFIG_UNREADABLE',
  BusUnavailable: 'BUS_UNAVAILABLE',
  BusLost: 'BUS_LOST',
  NameTaken: 'NAME_TAKEN',
  NotRegistered: 'NOT_REGISTERED',
  NotAContainer: 'NOT_A_CONTAINER',
  InvalidArgs: 'INVALID_ARGS',
  Timeout: 'TIMEOUT',
  SpoolInvalid: 'SPOOL_INVALID',
  StateCorrupt: 'STATE_CORRUPT',
  StateWrite: 'STATE_WRITE',
  KeystoreTooBig: 'KEYSTORE_TOO_BIG',
  KeystoreHostile: 'KEYSTORE_HOSTILE',
  KeystoreSource: 'KEYSTORE_SOURCE',
  KeystoreKey: 'KEYSTORE_KEY',
  KeystoreAuth: 'KEYSTORE_AUTH',
  KeystoreNotFound: 'KEYSTORE_NOT_FOUND',
  DaemonNotRunning: 'DAEMON_NOT_RUNNING',
  AccessDenied: 'ACCESS_DENIED',
  Internal: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class HmdError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HmdError';
    this.code = code;
    this.details = options?.details;
  }
}

export function isHmdError(err: unknown, code?: ErrorCode): err is HmdError {
  return err instanceof HmdError && (code === undefined || err.code === code);
}

/** A short description of any thrown value, for log lines and D-Bus error texts. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The errno code (`ENOENT`, …) of a Node.js system error, or undefined for anything else. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}
