/**
 * A container's keystore directory is hostile input: symlinks, FIFOs, device nodes, sockets,
 * hard links and swaps during the walk must fail the save (EIO) without reading anything
 * outside the keystore.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, linkSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { Status } from '../../src/constants.js';
import { isHmdError } from '../../src/errors.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { loadKey } from '../../src/keystore/key.js';
import { openSaved } from '../../src/keystore/restore.js';
import { takeSnapshot } from '../../src/keystore/snapshot.js';
import { KeystoreStore } from '../../src/keystore/store.js';
import type { KeystoreManagerOptions } from '../../src/keystore/manager.js';
import { CID_A, allBytes, lastError, makeEnv, settledStatus, writeTree, type Env } from './keystore/helpers.js';

const SECRET = 'HOST-SECRET-5e1d0b-do-not-leak';

describe('keystore save against a hostile keystore directory', () => {
  let env: Env;
  let secretFile: string;
  let secretDir: string;
  let src: string;

  beforeEach(() => {
    env = makeEnv();
    secretDir = join(env.root, 'host');
    secretFile = join(secretDir, 'shadow');
    mkdirSync(secretDir, { mode: 0o700 });
    writeFileSync(secretFile, SECRET, { mode: 0o600 }); // readable by root only
    src = env.source(CID_A);
    writeTree(src, { 'good.txt': 'fine', 'sub/a': 'original-a', 'sub/b': 'original-b' });
  });
  afterEach(() => env.cleanup());

  /** Runs one save and returns its final status and the recorded error. */
  async function save(extra: Partial<KeystoreManagerOptions> = {}): Promise<{ status: number; error: string }> {
    const m = env.manager(extra);
    await m.start();
    expect(await m.startSave(CID_A)).toBe(Status.OK);
    const status = await settledStatus(m, CID_A);
    const error = lastError(m, CID_A);
    await m.stop();
    return { status, error };
  }

  async function savedContent(): Promise<string> {
    const key = await loadKey(env.config.keyFile, { create: false });
    const opened = await openSaved(new KeystoreStore(env.config.storeDir), CID_A, key, silentLogger());
    return Buffer.concat(opened.snapshot.entries.map((e) => (e.kind === 'file' ? e.data : Buffer.alloc(0)))).toString('latin1');
  }

  function expectNothingStored(): void {
    const stored = existsSync(env.config.storeDir) ? readdirSync(env.config.storeDir) : [];
    expect(stored).toEqual([]);
    expect(allBytes(env.config.storeDir).includes(SECRET)).toBe(false);
  }

  it('fails on a symlink to a root-only host file, logs entry and reason, stores nothing', async () => {
    symlinkSync(secretFile, join(src, 'sub', 'evil'));
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', stream: { write: (s: string) => void lines.push(s) } });
    const r = await save({ logger });
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('"sub/evil"');
    expect(r.error).toContain('symbolic link');
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 'error');
    expect(logged).toMatchObject({ cid: CID_A, entry: 'sub/evil', reason: 'is a symbolic link' });
    expectNothingStored();
  });

  it('keeps the previous good copy when a later save fails', async () => {
    expect((await save()).status).toBe(Status.OK);
    symlinkSync(secretDir, join(src, 'dirlink'));
    expect((await save()).status).toBe(Status.EIO);
    const content = await savedContent();
    expect(content).toContain('original-a');
    expect(content).not.toContain(SECRET);
  });

  it('fails promptly on a FIFO (nobody ever writes to it)', async () => {
    execFileSync('mkfifo', [join(src, 'pipe')]);
    const r = await save();
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('FIFO');
    expectNothingStored();
  });

  it('rejects device nodes made with mknod', async () => {
    execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
    let r = await save();
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('character device');
    rmSync(join(src, 'null'));
    execFileSync('mknod', [join(src, 'sub', 'loop'), 'b', '7', '0']);
    r = await save();
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('block device');
    expectNothingStored();
  });

  it('rejects a socket', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(join(src, 'sock'), resolve));
    try {
      const r = await save();
      expect(r.status).toBe(Status.EIO);
      expect(r.error).toContain('socket');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('rejects a hard link to a host file', async () => {
    linkSync(secretFile, join(src, 'hardlink'));
    const r = await save();
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('hard links');
    expectNothingStored();
  });

  it('never follows a file swapped for a symlink between lstat and open', async () => {
    const r = await save({
      beforeOpen: (_cid, rel) => {
        if (rel !== 'good.txt') return;
        rmSync(join(src, rel));
        symlinkSync(secretFile, join(src, rel));
      },
    });
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('"good.txt"');
    expect(r.error).toContain('replaced');
    expectNothingStored();
  });

  it('does not block on a file swapped for a FIFO between lstat and open', async () => {
    const r = await save({
      beforeOpen: (_cid, rel) => {
        if (rel !== 'good.txt') return;
        rmSync(join(src, rel));
        execFileSync('mkfifo', [join(src, rel)]);
      },
    });
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('FIFO');
  });

  it('never follows a directory swapped for a symlink between lstat and open', async () => {
    writeFileSync(join(secretDir, 'a'), SECRET, { mode: 0o600 });
    const r = await save({
      beforeOpen: (_cid, rel) => {
        if (rel !== 'sub') return;
        renameSync(join(src, 'sub'), join(src, 'moved'));
        symlinkSync(secretDir, join(src, 'sub'));
      },
    });
    expect(r.status).toBe(Status.EIO);
    expect(r.error).toContain('"sub"');
    expectNothingStored();
  });

  it('keeps reading the directory it opened when that directory is swapped mid-walk', async () => {
    writeFileSync(join(secretDir, 'b'), SECRET, { mode: 0o600 });
    let swapped = false;
    const r = await save({
      beforeOpen: (_cid, rel) => {
        if (rel !== 'sub/a') return;
        // A path-based walker would now read <secretDir>/b as "sub/b".
        renameSync(join(src, 'sub'), join(src, 'moved'));
        symlinkSync(secretDir, join(src, 'sub'));
        swapped = true;
      },
    });
    expect(swapped).toBe(true);
    expect(r.status).toBe(Status.OK);
    const content = await savedContent();
    expect(content).toContain('original-b');
    expect(content).not.toContain(SECRET);
  });

  it('fails when a file grows past the limit during the save', async () => {
    const small = makeEnv(1000);
    try {
      writeTree(small.source(CID_A), { a: Buffer.alloc(600), b: Buffer.alloc(300) });
      const m = small.manager({
        beforeOpen: (_cid, rel) => {
          if (rel === 'b') appendFileSync(join(small.source(CID_A), 'b'), Buffer.alloc(200));
        },
      });
      await m.start();
      expect(await m.startSave(CID_A)).toBe(Status.OK);
      expect(await settledStatus(m, CID_A)).toBe(Status.EIO);
      expect(lastError(m, CID_A)).toContain('grew past 1000 bytes');
      await m.stop();
    } finally {
      small.cleanup();
    }
  });

  it('bounds the number of entries and the depth', async () => {
    const deep = join(src, ...'abcdefgh'.split(''));
    mkdirSync(deep, { recursive: true });
    chmodSync(deep, 0o700);
    const fail = async (opts: { maxEntries?: number; maxDepth?: number }): Promise<string> => {
      try {
        await takeSnapshot(src, { limitBytes: 1 << 20, ...opts });
      } catch (err) {
        expect(isHmdError(err, 'KEYSTORE_HOSTILE')).toBe(true);
        return (err as Error).message;
      }
      throw new Error('snapshot unexpectedly succeeded');
    };
    expect(await fail({ maxDepth: 4 })).toContain('nested more than 4 levels');
    expect(await fail({ maxEntries: 5 })).toContain('more than 5 entries');
    const snap = await takeSnapshot(src, { limitBytes: 1 << 20, maxDepth: 8, maxEntries: 100 });
    expect(snap.entries.map((e) => e.path.toString())).toContain('a/b/c/d/e/f/g/h');
  });
});
