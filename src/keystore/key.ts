/**
 * The sealing key: 32 random bytes in `keystore.keyFile`, created 0600 on first use. A key file
 * that group or others can access is refused: whoever reads it can open every saved keystore.
 */
import { randomBytes } from 'node:crypto';
import { constants as C } from 'node:fs';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, HmdError, describeError, errnoCode } from '../errors.js';
import { fsyncDir, writeTemp } from '../atomic.js';

export const KEY_BYTES = 32;

export interface LoadKeyOptions {
  /** Create the key when the file is absent (the daemon does; restore must not). */
  create: boolean;
}

export async function loadKey(file: string, opts: LoadKeyOptions): Promise<Buffer> {
  try {
    return await readKey(file);
  } catch (err) {
    if (!(opts.create && errnoCode(err) === 'ENOENT')) throw keyError(file, err);
  }
  await createKey(file);
  try {
    return await readKey(file);
  } catch (err) {
    throw keyError(file, err);
  }
}

function keyError(file: string, err: unknown): HmdError {
  if (err instanceof HmdError) return err;
  const why = errnoCode(err) === 'ENOENT' ? 'does not exist' : `cannot be read (${describeError(err)})`;
  return new HmdError(ErrorCode.KeystoreKey, `keystore key file ${file} ${why}`, { cause: err });
}

async function readKey(file: string): Promise<Buffer> {
  const fh = await open(file, C.O_RDONLY | C.O_NONBLOCK | C.O_NOCTTY);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new HmdError(ErrorCode.KeystoreKey, `keystore key file ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
      throw new HmdError(
        ErrorCode.KeystoreKey,
        `keystore key file ${file} has mode ${mode}: group and others must have no access (chmod 600 ${file})`,
      );
    }
    const euid = process.geteuid?.();
    if (euid !== undefined && st.uid !== euid) {
      throw new HmdError(ErrorCode.KeystoreKey, `keystore key file ${file} is owned by uid ${st.uid}, not by this user (uid ${euid})`);
    }
    const key = await fh.readFile();
    if (key.length !== KEY_BYTES) {
      throw new HmdError(ErrorCode.KeystoreKey, `keystore key file ${file} holds ${key.length} bytes, expected ${KEY_BYTES}`);
    }
    return key;
  } finally {
    await fh.close();
  }
}

/** Creates the key file whole or not at all: a complete temp file is linked into place. */
async function createKey(file: string): Promise<void> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = await writeTemp(file, randomBytes(KEY_BYTES), 0o600);
  try {
    // link() fails with EEXIST instead of replacing: a key created concurrently wins, and an
    // existing key is never overwritten (that would make every saved keystore unreadable).
    await link(tmp, file);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw keyError(file, err);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await fsyncDir(dir);
}
