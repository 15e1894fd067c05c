import { Command, Option } from 'commander';
import { createLogger, type Logger } from '../log.js';
import { describeError } from '../errors.js';
import { connectBus } from '../bus/connection.js';
import { Daemon } from '../daemon/daemon.js';
import { KeystoreManager } from '../keystore/manager.js';
import { addCommonOptions, configFrom, type CommonFlags } from './common.js';

interface DaemonFlags extends CommonFlags {
  spoolDir?: string;
  stateDir?: string;
}

/** Gives up on a clean stop after this long: systemd expects a prompt exit on SIGTERM. */
const STOP_DEADLINE_MS = 2000;

export function daemonCommand(): Command {
  const cmd = new Command('daemon').description('run the daemon in the foreground (logs JSON lines to stdout)');
  addCommonOptions(cmd)
    .addOption(new Option('--spool-dir <dir>', 'spool directory the udev helper writes to'))
    .addOption(new Option('--state-dir <dir>', 'directory for the persisted state'))
    .action(async (flags: DaemonFlags) => {
      await runDaemon(flags);
    });
  return cmd;
}

export async function runDaemon(flags: DaemonFlags): Promise<void> {
  const config = configFrom(flags);
  if (flags.spoolDir !== undefined) config.spoolDir = flags.spoolDir;
  if (flags.stateDir !== undefined) config.stateDir = flags.stateDir;
  const logger = createLogger({ level: config.logLevel });
  // Test hook: makes keystore saves slow on purpose, so EBUSY can be observed deterministically.
  const delay = Number(process.env['HMD_TEST_KEYSTORE_DELAY_MS'] ?? 0);
  const keystore = new KeystoreManager({
    config: config.keystore,
    stateDir: config.stateDir,
    logger: logger.child({ component: 'keystore' }),
    ...(delay > 0 ? { readDelayMs: delay } : {}),
  });
  const daemon = new Daemon({
    config,
    logger,
    keystore,
    busFactory: () => connectBus({ bus: config.bus, logger }),
    onFatal: (reason) => exitWith(logger, 1, reason),
  });

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    const force = setTimeout(() => exitWith(logger, 1, `did not stop within ${STOP_DEADLINE_MS} ms`), STOP_DEADLINE_MS);
    force.unref();
    daemon.stop().then(
      () => exitWith(logger, 0),
      (err: unknown) => exitWith(logger, 1, `error while stopping: ${describeError(err)}`),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    try {
      const fresh = configFrom(flags);
      if (flags.spoolDir !== undefined) fresh.spoolDir = flags.spoolDir;
      if (flags.stateDir !== undefined) fresh.stateDir = flags.stateDir;
      daemon.reload(fresh);
    } catch (err) {
      logger.error({ err: describeError(err) }, 'configuration reload failed; keeping the running one');
    }
  });
  try {
    await daemon.start();
  } catch (err) {
    await daemon.stop().catch(() => undefined);
    throw err;
  }
}

function exitWith(logger: Logger, code: number, reason?: string): void {
  if (reason !== undefined) logger.error({ reason }, 'exiting');
  logger.flush();
  process.exit(code);
}
