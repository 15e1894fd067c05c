/**
 * The plaintext of a sealed keystore: the snapshot serialized as a flat list of entries, parents
 * before their children. All integers big-endian.
 *
 *   "HMDKSNP1"                       8 bytes, magic and format version
 *   u32 entry count
 *   per entry:
 *     u8  kind                       1 = directory, 2 = regular file
 *     u16 mode                       permission bits only (0..0o777)
 *     u16 path length, path bytes    relative, '/'-separated, raw bytes (no "", ".", "..", NUL)
 *     file only: u32 length, content
 *
 * The blob is authenticated before it is parsed, but the parser still checks every field: it is
 * the only thing between stored bytes and paths written by a root process.
 */
import { ErrorCode, HmdError } from '../errors.js';

export type SnapshotEntry =
  | { kind: 'dir'; path: Buffer; mode: number }
  | { kind: 'file'; path: Buffer; mode: number; data: Buffer };

export interface Snapshot {
  entries: SnapshotEntry[];
  /** Total bytes of file content. */
  bytes: number;
}

const MAGIC = Buffer.from('HMDKSNP1', 'latin1');
const KIND_DIR = 1;
const KIND_FILE = 2;
const MAX_PATH = 4096;
const SLASH = 0x2f;

export function serializeSnapshot(snap: Snapshot): Buffer {
  const parts: Buffer[] = [MAGIC, u32(snap.entries.length)];
  for (const e of snap.entries) {
    const head = Buffer.alloc(5);
    head.writeUInt8(e.kind === 'dir' ? KIND_DIR : KIND_FILE, 0);
    head.writeUInt16BE(e.mode & 0o777, 1);
    head.writeUInt16BE(e.path.length, 3);
    parts.push(head, e.path);
    if (e.kind === 'file') parts.push(u32(e.data.length), e.data);
  }
  return Buffer.concat(parts);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

function corrupt(why: string): HmdError {
  return new HmdError(ErrorCode.KeystoreAuth, `saved keystore is malformed: ${why}`);
}

/** Splits a stored path into components, refusing anything that could leave the target directory. */
export function pathComponents(path: Buffer): Buffer[] {
  if (path.length === 0 || path.length > MAX_PATH) throw corrupt('empty or overlong path');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i < path.length && path[i] !== SLASH) continue;
    const part = path.subarray(start, i);
    const s = part.toString('latin1');
    if (part.length === 0 || s === '.' || s === '..' || part.includes(0)) throw corrupt(`bad path ${JSON.stringify(path.toString('utf8'))}`);
    parts.push(part);
    start = i + 1;
  }
  return parts;
}

export function parseSnapshot(buf: Buffer): Snapshot {
  let off = 0;
  const take = (n: number): Buffer => {
    if (off + n > buf.length) throw corrupt('truncated');
    const b = buf.subarray(off, off + n);
    off += n;
    return b;
  };
  if (!take(MAGIC.length).equals(MAGIC)) throw corrupt('unknown format');
  const count = take(4).readUInt32BE(0);
  const dirs = new Set<string>(['']);
  const seen = new Set<string>();
  const entries: SnapshotEntry[] = [];
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const head = take(5);
    const kind = head.readUInt8(0);
    const mode = head.readUInt16BE(1);
    const path = Buffer.from(take(head.readUInt16BE(3)));
    if (mode > 0o777) throw corrupt('bad mode');
    const parts = pathComponents(path);
    const key = path.toString('latin1');
    const parent = parts.slice(0, -1).map((p) => p.toString('latin1')).join('/');
    if (!dirs.has(parent)) throw corrupt(`entry before its directory: ${JSON.stringify(path.toString('utf8'))}`);
    if (seen.has(key)) throw corrupt(`duplicate entry ${JSON.stringify(path.toString('utf8'))}`);
    seen.add(key);
    if (kind === KIND_DIR) {
      dirs.add(key);
      entries.push({ kind: 'dir', path, mode });
    } else if (kind === KIND_FILE) {
      const data = Buffer.from(take(take(4).readUInt32BE(0)));
      bytes += data.length;
      entries.push({ kind: 'file', path, mode, data });
    } else {
      throw corrupt(`unknown entry kind ${kind}`);
    }
  }
  if (off !== buf.length) throw corrupt('trailing bytes');
  return { entries, bytes };
}
