import { Option, type Command } from 'commander';
import { ADMIN_INTERFACE, DAEMON_BUS_NAME, DAEMON_OBJECT_PATH, DEFAULT_CONFIG_FILE } from '../constants.js';
import { HmdError, ErrorCode } from '../errors.js';
import { createLogger, LOG_LEVELS, type Logger, type LogLevel } from '../log.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { connectBus } from '../bus/connection.js';
import { RemoteError, type BusConnection } from '../bus/types.js';

export const busOption = (): Option => new Option('--bus <address>', 'bus to use: system, session or a D-Bus address');
export const configOption = (): Option => new Option('--config <file>', `configuration file (default ${DEFAULT_CONFIG_FILE} when present)`);
export const logLevelOption = (): Option => new Option('--log-level <level>', 'log level').choices(LOG_LEVELS as unknown as string[]);

export function addCommonOptions(cmd: Command): Command {
  return cmd.addOption(busOption()).addOption(configOption()).addOption(logLevelOption());
}

export interface CommonFlags {
  bus?: string;
  config?: string;
  logLevel?: string;
}

/** Config file (if any) with command-line flags on top. */
export function configFrom(flags: CommonFlags): Config {
  const config = loadConfig(flags.config, { defaultFile: DEFAULT_CONFIG_FILE });
  if (flags.bus !== undefined) config.bus = flags.bus;
  if (flags.logLevel !== undefined) config.logLevel = flags.logLevel as LogLevel;
  return config;
}

/** Logger for client subcommands: stderr, since stdout carries their data. */
export function cliLogger(flags: CommonFlags, fallback: LogLevel = 'warn'): Logger {
  return createLogger({ level: (flags.logLevel as LogLevel | undefined) ?? fallback, toStderr: true });
}

/** Connects to the bus and checks that the daemon is there, with messages an operator can act on. */
export async function connectToDaemon(flags: CommonFlags): Promise<BusConnection> {
  const config = configFrom(flags);
  const bus = await connectBus({ bus: config.bus, logger: cliLogger(flags), watchdogMs: 0 });
  const owner = await bus.getNameOwner(DAEMON_BUS_NAME);
  if (owner === null) {
    bus.close();
    throw new HmdError(ErrorCode.DaemonNotRunning, `the daemon is not running on the ${config.bus} bus (${DAEMON_BUS_NAME} has no owner); start it with \`systemctl start veea-hmd\` or \`hmd daemon\``);
  }
  return bus;
}

export async function callAdmin(bus: BusConnection, member: string): Promise<unknown[]> {
  try {
    return await bus.call(DAEMON_BUS_NAME, DAEMON_OBJECT_PATH, ADMIN_INTERFACE, member, '', [], { timeoutMs: 10_000 });
  } catch (err) {
    if (err instanceof RemoteError && err.dbusName === 'org.freedesktop.DBus.Error.AccessDenied') {
      throw new HmdError(ErrorCode.AccessDenied, `permission denied: ${member} is for root only (try sudo)`);
    }
    throw err;
  }
}
