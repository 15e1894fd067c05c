import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { HmdError, ErrorCode } from '../errors.js';
import { configSchema, type Config } from './schema.js';

/** Renders zod issues as "key.path: message" lines, naming the file. */
export function formatIssues(file: string, error: z.ZodError): string {
  const lines = error.issues.map((i) => {
    const key = i.path.length > 0 ? i.path.join('.') : '(top level)';
    return `  ${key}: ${i.message}`;
  });
  return `invalid configuration in ${file}:\n${lines.join('\n')}`;
}

export function parseConfig(raw: unknown, file = '(inline)'): Config {
  const res = configSchema.safeParse(raw);
  if (!res.success) throw new HmdError(ErrorCode.ConfigInvalid, formatIssues(file, res.error), { details: { file } });
  return res.data;
}

/**
 * Loads the config file. A missing file is only fine when it was not named explicitly (the
 * daemon then runs on defaults); a named file that is missing or broken is an error.
 */
export function loadConfig(file: string | undefined, opts: { defaultFile?: string } = {}): Config {
  const path = file ?? opts.defaultFile;
  if (path === undefined) return parseConfig({});
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (file === undefined && e.code === 'ENOENT') return parseConfig({});
    throw new HmdError(ErrorCode.ConfigUnreadable, `cannot read configuration ${path}: ${e.message}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new HmdError(ErrorCode.ConfigInvalid, `invalid configuration in ${path}: not JSON (${(err as Error).message})`, { cause: err });
  }
  return parseConfig(raw, path);
}
