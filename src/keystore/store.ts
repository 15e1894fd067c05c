/**
 * Sealed keystore storage.
 *
 * Layout of `keystore.storeDir` (created 0700; files 0600, owned by root):
 *
 *   <cid>.ks              newest good save of container <cid> (64 lower-case hex)
 *   <cid>.ks.prev         the good save before it; restore falls back to it when <cid>.ks fails
 *                         authentication
 *   .<name>.tmp-<12 hex>  a write in progress; leftovers of a crash are removed at daemon start
 *
 * Each file is one sealed blob:
 *
 *   offset  size  field
 *   0       8     magic "HMDKSEAL"
 *   8       1     version, 1
 *   9       12    AES-GCM nonce, random for every save
 *   21      16    AES-GCM authentication tag
 *   37      ...   AES-256-GCM ciphertext of the serialized snapshot (layout in format.ts:
 *                 relative paths, permission bits, file contents)
 *
 * Additional authenticated data: the 9 header bytes followed by the container ID in ASCII, so
 * one container's blob cannot be restored as another's. The 32-byte key is `keystore.keyFile`
 * (key.ts).
 *
 * A save writes a temp file (fsync), hard-links the current copy to `.prev` (through a temp name
 * and rename, only when the current copy still authenticates), renames the temp file over
 * `<cid>.ks` and fsyncs the directory. Whenever a crash strikes, `<cid>.ks` is a whole good copy
 * (old or new) and `.prev` a whole good older one.
 */
import { link, lstat, mkdir, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TEMP_RE, fsyncDir, tempNameFor, writeTemp } from '../atomic.js';
import { errnoCode } from '../errors.js';
import { storeFiles } from './paths.js';

export interface CopyInfo {
  file: string;
  size: number;
  mtime: Date;
}

export interface StoreListing {
  cid: string;
  current?: CopyInfo;
  previous?: CopyInfo;
}

export type CopyName = 'current' | 'previous';

const STORE_FILE_RE = /^([0-9a-f]{64})\.ks(\.prev)?$/;

const ignoreMissing = (err: unknown): undefined => {
  if (errnoCode(err) === 'ENOENT') return undefined;
  throw err;
};

export class KeystoreStore {
  constructor(readonly dir: string) {}

  /**
   * Stores `blob` as the newest copy of `cid`. With `rotate`, the copy it replaces becomes the
   * previous one; without (the current copy is damaged), the previous good copy is kept.
   */
  async write(cid: string, blob: Buffer, opts: { rotate: boolean }): Promise<void> {
    const { current, previous } = storeFiles(this.dir, cid);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = await writeTemp(current, blob, 0o600);
    try {
      if (opts.rotate) await this.linkAsPrevious(current, previous);
      await rename(tmp, current);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await fsyncDir(this.dir);
  }

  private async linkAsPrevious(current: string, previous: string): Promise<void> {
    const tmp = tempNameFor(previous);
    try {
      await link(current, tmp);
      await rename(tmp, previous);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      // No current copy (first save, or pruned meanwhile): nothing to keep.
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }

  /** The blob of one copy, or undefined when that copy does not exist. */
  async read(cid: string, which: CopyName): Promise<Buffer | undefined> {
    const files = storeFiles(this.dir, cid);
    return readFile(files[which]).catch(ignoreMissing);
  }

  async list(): Promise<StoreListing[]> {
    const names = await readdir(this.dir).catch(ignoreMissing);
    const byCid = new Map<string, StoreListing>();
    for (const name of (names ?? []).sort()) {
      const m = STORE_FILE_RE.exec(name);
      if (!m?.[1]) continue;
      const file = join(this.dir, name);
      const st = await lstat(file).catch(ignoreMissing);
      if (!st?.isFile()) continue;
      const entry = byCid.get(m[1]) ?? { cid: m[1] };
      entry[m[2] ? 'previous' : 'current'] = { file, size: st.size, mtime: st.mtime };
      byCid.set(m[1], entry);
    }
    return [...byCid.values()];
  }

  /** Deletes every saved copy of `cid` (and leftovers of its writes); returns the removed paths. */
  async prune(cid: string): Promise<string[]> {
    const { current, previous } = storeFiles(this.dir, cid);
    const names = (await readdir(this.dir).catch(ignoreMissing)) ?? [];
    const temps = names.filter((n) => n.startsWith(`.${cid}.ks`) && TEMP_RE.test(n)).map((n) => join(this.dir, n));
    const removed: string[] = [];
    for (const file of [current, previous, ...temps]) {
      if ((await unlink(file).then(() => true, ignoreMissing)) === true) removed.push(file);
    }
    if (removed.length > 0) await fsyncDir(this.dir);
    return removed;
  }

  /** Removes temp files a crash left behind; call only while no save is running. */
  async cleanupTemps(): Promise<number> {
    const names = (await readdir(this.dir).catch(ignoreMissing)) ?? [];
    let n = 0;
    for (const name of names.filter((x) => TEMP_RE.test(x))) {
      await unlink(join(this.dir, name)).catch(ignoreMissing);
      n++;
    }
    return n;
  }
}
