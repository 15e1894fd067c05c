/**
 * Writes a snapshot into a directory without ever writing through a symlink: the target may be
 * a container's own keystore directory, written by a hostile container while we restore. Every
 * directory is opened relative to its opened parent with O_NOFOLLOW (see safe-fs.ts), files are
 * written to a fresh temp name (O_EXCL never follows a link) and renamed over the target (a
 * rename replaces a link, it never follows one), and an existing symlink in the way is refused.
 */
import { randomBytes } from 'node:crypto';
import { constants as C } from 'node:fs';
import { chmod, lstat, mkdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { writeNewFileSynced } from '../atomic.js';
import { ErrorCode, HmdError, describeError, errnoCode } from '../errors.js';
import { pathComponents, type Snapshot } from './format.js';
import { childPath, displayPath, openDir } from './safe-fs.js';

export interface WriteResult {
  files: number;
  dirs: number;
  bytes: number;
}

function refuse(toDir: string, rel: Buffer | string, why: string): HmdError {
  const where = `${toDir}/${typeof rel === 'string' ? rel : rel.toString('utf8')}`;
  return new HmdError(ErrorCode.AccessDenied, `refusing to restore into ${JSON.stringify(where)}: ${why}`, { details: { path: where } });
}

/** Creates `toDir` (0700) when absent; an existing one must be a real directory, not a symlink. */
async function prepareTarget(toDir: string): Promise<FileHandle> {
  const st = await lstat(toDir).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  if (!st) {
    await mkdir(toDir, { recursive: true, mode: 0o700 });
    await chmod(toDir, 0o700); // mkdir's mode is narrowed by the umask; make it exact
  } else if (st.isSymbolicLink()) {
    throw refuse(toDir, '', 'it is a symbolic link');
  } else if (!st.isDirectory()) {
    throw refuse(toDir, '', 'it is not a directory');
  }
  try {
    return await openDir(toDir);
  } catch (err) {
    throw refuse(toDir, '', `cannot open it (${describeError(err)})`);
  }
}

/**
 * The chain of open directories from the target down to the current one. Snapshots list entries
 * depth-first, so consecutive entries share most of the chain.
 */
class DirChain {
  private readonly chain: { name: Buffer; fh: FileHandle }[] = [];
  constructor(
    private readonly root: FileHandle,
    private readonly toDir: string,
  ) {}

  /** The open directory at `parts` (relative to the target), opened without following links. */
  async at(parts: Buffer[]): Promise<FileHandle> {
    let keep = 0;
    while (keep < this.chain.length && keep < parts.length && this.chain[keep]?.name.equals(parts[keep] as Buffer)) keep++;
    while (this.chain.length > keep) await this.chain.pop()?.fh.close();
    for (let i = keep; i < parts.length; i++) {
      const name = parts[i] as Buffer;
      const fh = await openDir(childPath(this.top(), name)).catch((err: unknown) => {
        const rel = Buffer.concat(parts.slice(0, i + 1).flatMap((p, j) => (j === 0 ? [p] : [Buffer.from('/'), p])));
        const why = errnoCode(err) === 'ELOOP' ? 'it is a symbolic link' : errnoCode(err) === 'ENOTDIR' ? 'it is not a directory' : describeError(err);
        throw refuse(this.toDir, rel, why);
      });
      this.chain.push({ name, fh });
    }
    return this.top();
  }

  private top(): FileHandle {
    return this.chain.at(-1)?.fh ?? this.root;
  }

  async close(): Promise<void> {
    while (this.chain.length > 0) await this.chain.pop()?.fh.close();
  }
}

export async function writeSnapshotTo(toDir: string, snap: Snapshot): Promise<WriteResult> {
  const root = await prepareTarget(toDir);
  const dirs = new DirChain(root, toDir);
  const result: WriteResult = { files: 0, dirs: 0, bytes: 0 };
  const dirModes: { parts: Buffer[]; mode: number }[] = [];
  try {
    for (const entry of snap.entries) {
      const parts = pathComponents(entry.path);
      const name = parts.at(-1) as Buffer;
      const parent = await dirs.at(parts.slice(0, -1));
      const target = childPath(parent, name);
      const existing = await lstat(target).catch(() => undefined);
      if (existing?.isSymbolicLink()) throw refuse(toDir, entry.path, 'it is a symbolic link');
      if (entry.kind === 'dir') {
        if (existing && !existing.isDirectory()) throw refuse(toDir, entry.path, 'it exists and is not a directory');
        if (!existing) await mkdir(target, { mode: 0o700 });
        dirModes.push({ parts, mode: entry.mode });
        result.dirs++;
      } else {
        if (existing && !existing.isFile()) throw refuse(toDir, entry.path, 'it exists and is not a regular file');
        await writeFileIn(parent, name, entry.data, entry.mode);
        result.files++;
        result.bytes += entry.data.length;
      }
    }
    // Directory modes last (children before parents), so a read-only directory blocks nothing.
    for (const { parts, mode } of dirModes.reverse()) {
      const fh = await dirs.at(parts);
      await fh.chmod(mode);
      await fh.sync();
    }
    await root.sync();
  } finally {
    await dirs.close();
    await root.close();
  }
  return result;
}

async function writeFileIn(parent: FileHandle, name: Buffer, data: Buffer, mode: number): Promise<void> {
  const tmpName = Buffer.concat([Buffer.from('.'), name.subarray(0, 200), Buffer.from(`.restore-${randomBytes(6).toString('hex')}`)]);
  const tmp = childPath(parent, tmpName);
  await writeNewFileSynced(tmp, data, mode, C.O_NONBLOCK);
  try {
    await rename(tmp, childPath(parent, name));
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new HmdError(ErrorCode.Internal, `cannot write ${displayPath(name)}: ${describeError(err)}`, { cause: err });
  }
}
