/**
 * `hmd keystore …`: operator commands for saved container keystores. They work on the files
 * directly (store, key, status file), so they need no running daemon. Standard output carries
 * the data; logs go to standard error.
 */
import { Command } from 'commander';
import { z } from 'zod';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { CONTAINER_ID_RE, DEFAULT_CONFIG_FILE, Status } from '../constants.js';
import { ErrorCode, HmdError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { statusFile } from '../keystore/paths.js';
import { restoreKeystore } from '../keystore/restore.js';
import { loadStatuses, type KeystoreRecord } from '../keystore/status-file.js';
import { KeystoreStore, type CopyInfo } from '../keystore/store.js';

export interface KeystoreCliIo {
  /** Where data goes (default: standard output). */
  write?: (text: string) => void;
  /** Logger to use instead of one on standard error (tests pass a silent one). */
  logger?: Logger;
}

const commonSchema = z.object({ config: z.string().min(1).optional(), json: z.boolean().optional(), stateDir: z.string().min(1).optional() });
const containerId = z.string().regex(CONTAINER_ID_RE, 'a container ID is 64 lower-case hex characters');

function parseOpts<T extends z.ZodType>(schema: T, raw: unknown): z.infer<T> {
  const res = schema.safeParse(raw);
  if (!res.success) {
    const msg = res.error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; ');
    throw new HmdError(ErrorCode.InvalidArgs, msg);
  }
  return res.data;
}

const STATUS_TEXT: Record<number, string> = {
  [Status.OK]: 'ok',
  [Status.EBUSY]: 'saving',
  [Status.EIO]: 'failed',
};

export function statusName(status: number): string {
  return STATUS_TEXT[status] ?? `status ${status}`;
}

export function keystoreCommand(io: KeystoreCliIo = {}): Command {
  const write = io.write ?? ((text: string) => void process.stdout.write(text));
  const setup = (configFile: string | undefined): { config: Config; logger: Logger } => {
    const config = loadConfig(configFile, { defaultFile: DEFAULT_CONFIG_FILE });
    return { config, logger: io.logger ?? createLogger({ toStderr: true, level: config.logLevel }) };
  };
  const print = (json: boolean | undefined, data: unknown, text: string): void => write(json ? `${JSON.stringify(data)}\n` : text);

  const cmd = new Command('keystore').description('saved container keystores: restore, status, list, prune');

  cmd
    .command('restore')
    .description('write the last good saved keystore of a container into DIR (created 0700)')
    .requiredOption('--container <cid>', 'the 64-hex container ID')
    .requiredOption('--to <dir>', 'target directory; symlinks in it are refused')
    .option('--config <file>', 'configuration file')
    .option('--json', 'print the result as JSON')
    .action(async (raw: unknown) => {
      const o = parseOpts(commonSchema.extend({ container: containerId, to: z.string().min(1) }), raw);
      const { config, logger } = setup(o.config);
      const r = await restoreKeystore({ storeDir: config.keystore.storeDir, keyFile: config.keystore.keyFile, cid: o.container, toDir: o.to, logger });
      const from = r.copy === 'current' ? 'newest' : 'previous';
      const data = { container: o.container, to: o.to, copy: from, file: r.file, files: r.files, dirs: r.dirs, bytes: r.bytes };
      const counts = `${plural(r.files, 'file')} and ${plural(r.dirs, 'directory', 'directories')} (${plural(r.bytes, 'byte')})`;
      print(o.json, data, `restored ${counts} from the ${from} copy ${r.file} into ${o.to}\n`);
    });

  cmd
    .command('status')
    .description('last save result per container, as last recorded by the daemon')
    .option('--container <cid>', 'only this container')
    .option('--config <file>', 'configuration file')
    .option('--state-dir <dir>', 'state directory (default: stateDir of the configuration)')
    .option('--json', 'print JSON')
    .action(async (raw: unknown) => {
      const o = parseOpts(commonSchema.extend({ container: containerId.optional() }), raw);
      const { config, logger } = setup(o.config);
      const records = await readStatuses(o.stateDir ?? config.stateDir, logger);
      if (o.container) {
        const rec = describeRecord(o.container, records.get(o.container));
        print(o.json, rec, statusLines([rec]));
      } else {
        const all = [...records].map(([cid, rec]) => describeRecord(cid, rec));
        print(o.json, { containers: all }, all.length > 0 ? statusLines(all) : 'no keystore save recorded\n');
      }
    });

  cmd
    .command('list')
    .description('saved keystores in the store directory')
    .option('--config <file>', 'configuration file')
    .option('--state-dir <dir>', 'state directory (default: stateDir of the configuration)')
    .option('--json', 'print JSON')
    .action(async (raw: unknown) => {
      const o = parseOpts(commonSchema, raw);
      const { config, logger } = setup(o.config);
      const records = await readStatuses(o.stateDir ?? config.stateDir, logger);
      const saved = (await new KeystoreStore(config.keystore.storeDir).list()).map((s) => ({
        cid: s.cid,
        status: records.get(s.cid)?.status ?? Status.OK,
        newest: s.current && copyJson(s.current),
        previous: s.previous && copyJson(s.previous),
      }));
      const text = saved.map((s) => `${s.cid}  ${statusName(s.status)}  newest: ${copyText(s.newest)}  previous: ${copyText(s.previous)}\n`).join('');
      print(o.json, { keystores: saved }, text || `no saved keystore in ${config.keystore.storeDir}\n`);
    });

  cmd
    .command('prune')
    .description("delete every saved copy of a container (e.g. one recreated under a new ID)")
    .requiredOption('--container <cid>', 'the 64-hex container ID')
    .option('--config <file>', 'configuration file')
    .option('--json', 'print JSON')
    .action(async (raw: unknown) => {
      const o = parseOpts(commonSchema.extend({ container: containerId }), raw);
      const { config } = setup(o.config);
      const removed = await new KeystoreStore(config.keystore.storeDir).prune(o.container);
      const text = removed.length > 0 ? removed.map((f) => `removed ${f}\n`).join('') : `no saved keystore for container ${o.container}\n`;
      print(o.json, { container: o.container, removed }, text);
    });

  return cmd;
}

async function readStatuses(stateDir: string, logger: Logger): Promise<Map<string, KeystoreRecord>> {
  const loaded = await loadStatuses(statusFile(stateDir));
  if (loaded.problem) logger.warn({ problem: loaded.problem }, 'keystore status file ignored');
  return loaded.records;
}

type Described = { cid: string; status: number; state: string } & Partial<KeystoreRecord>;

function describeRecord(cid: string, rec: KeystoreRecord | undefined): Described {
  const status = rec?.status ?? Status.OK;
  return { cid, ...rec, status, state: rec ? statusName(status) : 'never saved' };
}

function statusLines(recs: Described[]): string {
  return recs
    .map((r) => {
      const extra = [r.lastSaveAt && `last saved ${r.lastSaveAt}`, r.lastError && `last error: ${r.lastError}`].filter(Boolean).join('; ');
      return `${r.cid}  ${r.status} (${r.state})${extra ? `  ${extra}` : ''}\n`;
    })
    .join('');
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function copyJson(c: CopyInfo): { file: string; size: number; savedAt: string } {
  return { file: c.file, size: c.size, savedAt: c.mtime.toISOString() };
}

function copyText(c: { size: number; savedAt: string } | undefined): string {
  return c ? `${c.savedAt} (${c.size} bytes)` : '-';
}
