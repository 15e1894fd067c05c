/**
 * The last save result of each container, kept in `<stateDir>/keystore-status.json` so that
 * GetKeystoreStatus answers the same after a daemon restart. Written atomically.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { CONTAINER_ID_RE, Status } from '../constants.js';
import { describeError, errnoCode } from '../errors.js';
import { writeFileAtomic } from '../atomic.js';

const recordSchema = z.strictObject({
  /** 0 last save completed, EBUSY in progress (only while the daemon runs), EIO last save failed. */
  status: z.union([z.literal(Status.OK), z.literal(Status.EIO), z.literal(Status.EBUSY)]),
  lastSaveAt: z.iso.datetime().optional(),
  lastAttemptAt: z.iso.datetime().optional(),
  lastError: z.string().optional(),
  /** Size of the last good save. */
  files: z.number().int().nonnegative().optional(),
  dirs: z.number().int().nonnegative().optional(),
  bytes: z.number().int().nonnegative().optional(),
  durationMs: z.number().nonnegative().optional(),
  saves: z.number().int().nonnegative().default(0),
  failures: z.number().int().nonnegative().default(0),
});

const fileSchema = z.strictObject({
  version: z.literal(1),
  containers: z.record(z.string().regex(CONTAINER_ID_RE), recordSchema),
});

export type KeystoreRecord = z.infer<typeof recordSchema>;

export interface LoadedStatuses {
  records: Map<string, KeystoreRecord>;
  /** Why the file was ignored, when it was unreadable or invalid. */
  problem?: string;
}

export async function loadStatuses(file: string): Promise<LoadedStatuses> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { records: new Map() };
    return { records: new Map(), problem: `cannot read ${file}: ${describeError(err)}` };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { records: new Map(), problem: `${file} is not JSON: ${describeError(err)}` };
  }
  const res = fileSchema.safeParse(raw);
  if (!res.success) return { records: new Map(), problem: `${file} is invalid: ${res.error.issues[0]?.message ?? 'unknown'}` };
  return { records: new Map(Object.entries(res.data.containers)) };
}

export async function saveStatuses(file: string, records: ReadonlyMap<string, KeystoreRecord>): Promise<void> {
  const body = { version: 1, containers: Object.fromEntries([...records].sort(([a], [b]) => a.localeCompare(b))) };
  await writeFileAtomic(file, Buffer.from(`${JSON.stringify(body, null, 2)}\n`), 0o600);
}
