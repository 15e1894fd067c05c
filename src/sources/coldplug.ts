/**
 * Coldplug: the devices really present, from the udev database (`udevadm info --export-db`), so
 * that at start the table can be reconciled with them (DESIGN A3 `devices.coldplug`). Filtered by
 * the same predicate as the rules and the table, validated like any other input, no SEQNUM.
 */
import { execFile } from 'node:child_process';
import { isDeviceOfInterest } from '../devices/filter.js';
import type { DeviceRecord } from '../devices/types.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseExportDb } from './exportdb.js';
import { parseDeviceProperties } from './properties.js';

export type RunCommand = (cmd: string, args: readonly string[]) => Promise<string>;

export interface EnumerateOptions {
  subsystems: readonly string[];
  run?: RunCommand;
  logger: Logger;
}

/** The udev database of a busy host is a few MB; more than this is not a udev database. */
const MAX_OUTPUT = 256 * 1024 * 1024;

export const runCommand: RunCommand = (cmd, args) =>
  new Promise((resolve, reject) => {
    execFile(cmd, [...args], { encoding: 'utf8', maxBuffer: MAX_OUTPUT, timeout: 30_000 }, (err, stdout) => {
      if (err !== null) reject(err);
      else resolve(stdout);
    });
  });

/**
 * The present devices of interest, or null when udevadm is missing or fails: the daemon then
 * skips the reconcile and trusts its saved table rather than removing everything.
 */
export async function enumeratePresent(opts: EnumerateOptions): Promise<DeviceRecord[] | null> {
  const log = opts.logger;
  let text: string;
  try {
    text = await (opts.run ?? runCommand)('udevadm', ['info', '--export-db']);
  } catch (err) {
    log.warn({ err: describeError(err) }, 'cannot read the udev database: no coldplug reconcile');
    return null;
  }
  const out: DeviceRecord[] = [];
  let invalid = 0;
  for (const dev of parseExportDb(text)) {
    if (!isDeviceOfInterest(dev.properties, opts.subsystems)) continue;
    try {
      const properties = parseDeviceProperties(dev.properties);
      out.push({ id: properties['DEVPATH'] ?? dev.devpath, properties });
    } catch (err) {
      invalid++;
      log.debug({ devpath: dev.devpath, err: describeError(err) }, 'udev database entry skipped');
    }
  }
  if (invalid > 0) log.warn({ invalid }, 'udev database entries skipped as invalid');
  return out;
}
