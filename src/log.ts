import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino';

/** The logger every component receives; structured, one JSON object a line. */
export type Logger = PinoLogger;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * `hmd daemon` logs to stdout (journald); every other subcommand keeps stdout for its data and
 * logs to stderr (fd 2).
 */
export function createLogger(opts: { level?: LogLevel; toStderr?: boolean; name?: string; stream?: DestinationStream }): Logger {
  const dest = opts.stream ?? pino.destination({ fd: opts.toStderr ? 2 : 1, sync: true });
  return pino(
    {
      name: opts.name ?? 'hmd',
      level: opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
}

/** A logger that drops everything, for unit tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
