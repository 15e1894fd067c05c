import { Command, Option } from 'commander';
import { connectAgent, type Agent } from '../client/agent.js';
import type { DeviceNotice, NoticeType } from '../client/notice.js';
import { describeError, isHmdError } from '../errors.js';
import { LOG_LEVELS, createLogger, type LogLevel, type Logger } from '../log.js';

/** Receives each output line (newline included); the notification is acknowledged once it settles. */
export type LineWriter = (line: string) => void | Promise<void>;

export interface RunAgentOptions {
  bus: string;
  logger: Logger;
  /** Aborting stops the agent cleanly (the command wires SIGTERM/SIGINT to it). */
  signal?: AbortSignal;
}

/** The one output format of `hmd agent` (DESIGN A3): exactly these three keys. */
export function formatNotice(type: NoticeType, n: DeviceNotice): string {
  return `${JSON.stringify({ type, deviceId: n.deviceId, properties: n.properties })}\n`;
}

/** Writes to stdout and resolves once the line is handed to the OS, so the ack follows the output. */
export function stdoutWriter(): LineWriter {
  // A reader that went away shows up as an error on the write callback; without a listener
  // the same error would also be thrown as an uncaught 'error' event.
  process.stdout.on('error', () => undefined);
  return (line) =>
    new Promise<void>((resolve, reject) => {
      process.stdout.write(line, (err) => (err ? reject(err) : resolve()));
    });
}

/**
 * Runs the agent until `signal` aborts (exit code 0) or the bus connection is lost, the agent
 * cannot start, or the output cannot be written (exit code 1).
 */
export async function runAgent(opts: RunAgentOptions, write: LineWriter): Promise<number> {
  const { logger } = opts;
  let finish: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  const print = async (type: NoticeType, n: DeviceNotice): Promise<void> => {
    try {
      await write(formatNotice(type, n));
    } catch (err) {
      logger.error({ err: describeError(err) }, 'cannot write to standard output; stopping');
      finish(1);
      throw err;
    }
  };
  let agent: Agent;
  try {
    agent = await connectAgent({
      bus: opts.bus,
      logger,
      signal: opts.signal,
      onInserted: (n) => print('DeviceInserted', n),
      onRemoved: (n) => print('DeviceRemoved', n),
      onStateChange: (state) => {
        logger.debug({ state }, 'agent state');
        if (state === 'daemon-gone') finish(1);
      },
    });
  } catch (err) {
    if (opts.signal?.aborted) return 0;
    logger.error({ err: describeError(err), code: isHmdError(err) ? err.code : undefined }, 'cannot start the agent');
    return 1;
  }
  const signal = opts.signal;
  if (signal !== undefined) {
    if (signal.aborted) finish(0);
    else signal.addEventListener('abort', () => finish(0), { once: true });
  }
  const code = await finished;
  await agent.close();
  logger.info({ code }, 'agent stopped');
  return code;
}

/** `hmd agent [--bus ADDRESS|system|session] [--log-level L]` (DESIGN A3). */
export function agentCommand(): Command {
  return new Command('agent')
    .description('run the container side: register, own the agent name, print one JSON line per device notification')
    .option('--bus <address>', '"system", "session" or a D-Bus address', 'system')
    .addOption(new Option('--log-level <level>', 'log level (logs go to standard error)').choices(LOG_LEVELS).default('info'))
    .action(async (_opts: unknown, cmd: Command) => {
      const o = cmd.opts<{ bus: string; logLevel: LogLevel }>();
      const logger = createLogger({ level: o.logLevel, toStderr: true });
      const stop = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        logger.info({ signal: sig }, 'stopping');
        stop.abort();
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      try {
        process.exitCode = await runAgent({ bus: o.bus, logger, signal: stop.signal }, stdoutWriter());
      } finally {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
      }
    });
}
