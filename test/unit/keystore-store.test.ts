/** Sealing, storage rotation, tamper handling, key file rules and the restore writer. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Status } from '../../src/constants.js';
import { isHmdError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { parseSnapshot, serializeSnapshot } from '../../src/keystore/format.js';
import { loadKey } from '../../src/keystore/key.js';
import { restoreKeystore, type RestoreResult } from '../../src/keystore/restore.js';
import { seal, unseal } from '../../src/keystore/seal.js';
import { KeystoreStore } from '../../src/keystore/store.js';
import { CID_A, CID_B, makeEnv, settledStatus, writeTree, type Env } from './keystore/helpers.js';

async function expectCode(p: Promise<unknown>, code: string): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(isHmdError(err) ? err.code : err).toBe(code);
    return (err as Error).message;
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

describe('keystore store, seal and restore', () => {
  let env: Env;
  const ks = (cid: string, prev = false): string => join(env.config.storeDir, `${cid}.ks${prev ? '.prev' : ''}`);
  const restore = (cid: string, toDir: string): Promise<RestoreResult> => restoreKeystore({ ...env.config, cid, toDir, logger: silentLogger() });

  async function saveVersion(cid: string, content: string): Promise<void> {
    writeTree(env.source(cid), { 'v.txt': content });
    const m = env.manager();
    await m.start();
    expect(await m.startSave(cid)).toBe(Status.OK);
    expect(await settledStatus(m, cid)).toBe(Status.OK);
    await m.stop();
  }

  function flipByte(file: string, at = -1): void {
    const b = readFileSync(file);
    const i = at < 0 ? b.length + at : at;
    b[i] = (b[i] ?? 0) ^ 0x01;
    writeFileSync(file, b);
  }

  beforeEach(() => {
    env = makeEnv();
  });
  afterEach(() => env.cleanup());

  it('keeps the replaced copy as .prev', async () => {
    await saveVersion(CID_A, 'one');
    const first = readFileSync(ks(CID_A));
    expect(existsSync(ks(CID_A, true))).toBe(false);
    await saveVersion(CID_A, 'two');
    expect(readFileSync(ks(CID_A, true)).equals(first)).toBe(true);
    expect(readFileSync(ks(CID_A)).equals(first)).toBe(false);
  });

  it('restores the previous copy when the newest is tampered with, and fails clearly when both are', async () => {
    await saveVersion(CID_A, 'one');
    await saveVersion(CID_A, 'two');
    flipByte(ks(CID_A));
    const to = join(env.root, 'r1');
    const r = await restore(CID_A, to);
    expect(r.copy).toBe('previous');
    expect(readFileSync(join(to, 'v.txt'), 'utf8')).toBe('one');

    flipByte(ks(CID_A, true), 30); // inside the nonce
    const msg = await expectCode(restore(CID_A, join(env.root, 'r2')), 'KEYSTORE_AUTH');
    expect(msg).toContain(ks(CID_A));
    expect(msg).toContain(ks(CID_A, true));
    expect(msg).toContain('authentication failed');
    expect(existsSync(join(env.root, 'r2'))).toBe(false);
  });

  it('does not let a damaged newest copy push out the good previous one', async () => {
    await saveVersion(CID_A, 'one');
    await saveVersion(CID_A, 'two');
    writeFileSync(ks(CID_A), 'garbage');
    await saveVersion(CID_A, 'three');
    flipByte(ks(CID_A));
    const to = join(env.root, 'r');
    expect((await restore(CID_A, to)).copy).toBe('previous');
    expect(readFileSync(join(to, 'v.txt'), 'utf8')).toBe('one');
  });

  it("cannot restore container A's blob as container B", async () => {
    await saveVersion(CID_A, 'a-secret');
    mkdirSync(env.config.storeDir, { recursive: true });
    copyFileSync(ks(CID_A), ks(CID_B));
    await expectCode(restore(CID_B, join(env.root, 'r')), 'KEYSTORE_AUTH');
    const key = await loadKey(env.config.keyFile, { create: false });
    expect(() => unseal(readFileSync(ks(CID_A)), key, CID_B)).toThrow(/authentication failed/);
    expect(unseal(readFileSync(ks(CID_A)), key, CID_A).length).toBeGreaterThan(0);
  });

  it('says when there is nothing to restore', async () => {
    writeFileSync(join(env.root, 'k'), randomBytes(32), { mode: 0o600 });
    const msg = await expectCode(restoreKeystore({ ...env.config, keyFile: join(env.root, 'k'), cid: CID_A, toDir: join(env.root, 'r'), logger: silentLogger() }), 'KEYSTORE_NOT_FOUND');
    expect(msg).toContain(CID_A);
  });

  it('refuses a key file that group or others can read, a missing one on restore, and a short one', async () => {
    await saveVersion(CID_A, 'one');
    chmodSync(env.config.keyFile, 0o644);
    const msg = await expectCode(restore(CID_A, join(env.root, 'r')), 'KEYSTORE_KEY');
    expect(msg).toContain('0644');
    expect(msg).toContain('chmod 600');
    await expectCode(loadKey(env.config.keyFile, { create: true }), 'KEYSTORE_KEY');

    const missing = join(env.root, 'nokey');
    expect(await expectCode(loadKey(missing, { create: false }), 'KEYSTORE_KEY')).toContain('does not exist');
    expect(existsSync(missing)).toBe(false);

    const short = join(env.root, 'short');
    writeFileSync(short, randomBytes(16), { mode: 0o600 });
    expect(await expectCode(loadKey(short, { create: true }), 'KEYSTORE_KEY')).toContain('16 bytes');
  });

  it('refuses to write through symlinks in the target directory', async () => {
    writeTree(env.source(CID_A), { 'sub/inner.txt': 'inner', 'top.txt': 'top' });
    await saveVersion(CID_A, 'v');
    const outside = join(env.root, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'top.txt'), 'untouched');

    const t1 = join(env.root, 't1');
    mkdirSync(t1);
    symlinkSync(outside, join(t1, 'sub'));
    expect(await expectCode(restore(CID_A, t1), 'ACCESS_DENIED')).toContain('symbolic link');

    const t2 = join(env.root, 't2');
    mkdirSync(t2);
    symlinkSync(join(outside, 'top.txt'), join(t2, 'top.txt'));
    expect(await expectCode(restore(CID_A, t2), 'ACCESS_DENIED')).toContain('t2/top.txt');

    const t3 = join(env.root, 't3');
    symlinkSync(outside, t3);
    await expectCode(restore(CID_A, t3), 'ACCESS_DENIED');

    expect(readdirSync(outside)).toEqual(['top.txt']);
    expect(readFileSync(join(outside, 'top.txt'), 'utf8')).toBe('untouched');
  });

  it('replaces an existing file in the target instead of writing into its other hard links', async () => {
    await saveVersion(CID_A, 'restored');
    const to = join(env.root, 't');
    mkdirSync(to);
    const other = join(env.root, 'other');
    writeFileSync(other, 'keep me');
    linkSync(other, join(to, 'v.txt'));
    await restore(CID_A, to);
    expect(readFileSync(join(to, 'v.txt'), 'utf8')).toBe('restored');
    expect(readFileSync(other, 'utf8')).toBe('keep me');
  });

  it('keeps permission bits but drops setuid/setgid, and keeps names that are not UTF-8', async () => {
    const src = env.source(CID_A);
    writeTree(src, { 'tool': { data: '#!/bin/sh\n', mode: 0o755 } });
    chmodSync(join(src, 'tool'), 0o6755);
    const odd = Buffer.concat([Buffer.from(src + '/'), Buffer.from([0x6b, 0xff, 0xfe])]);
    writeFileSync(odd, 'latin');
    await saveVersion(CID_A, 'v');
    const to = join(env.root, 't');
    await restore(CID_A, to);
    expect(statSync(join(to, 'tool')).mode & 0o7777).toBe(0o755);
    const oddOut = Buffer.concat([Buffer.from(to + '/'), Buffer.from([0x6b, 0xff, 0xfe])]);
    expect(readFileSync(oddOut, 'utf8')).toBe('latin');
    expect(readFileSync(join(to, 'v.txt'), 'utf8')).toBe('v');
  });

  it('round-trips the snapshot format and refuses paths that leave the target', () => {
    const snap = {
      entries: [
        { kind: 'dir' as const, path: Buffer.from('d'), mode: 0o750 },
        { kind: 'file' as const, path: Buffer.from('d/f'), mode: 0o600, data: Buffer.from('x') },
      ],
      bytes: 1,
    };
    expect(parseSnapshot(serializeSnapshot(snap))).toEqual(snap);
    for (const bad of ['../x', '/abs', 'a//b', 'd/../../x', 'd/.', 'nodir/f']) {
      const evil = { entries: [snap.entries[0]!, { kind: 'file' as const, path: Buffer.from(bad), mode: 0o600, data: Buffer.from('x') }], bytes: 1 };
      expect(() => parseSnapshot(serializeSnapshot(evil)), bad).toThrow(/malformed/);
    }
    expect(() => parseSnapshot(serializeSnapshot(snap).subarray(0, 20))).toThrow(/truncated/);
  });

  it('binds the container ID and detects any bit flip', () => {
    const key = randomBytes(32);
    const blob = seal(Buffer.from('payload'), key, CID_A);
    expect(unseal(blob, key, CID_A).toString()).toBe('payload');
    expect(() => unseal(blob, randomBytes(32), CID_A)).toThrow(/authentication failed/);
    for (const at of [0, 9, 25, blob.length - 1]) {
      const b = Buffer.from(blob);
      b[at] = (b[at] ?? 0) ^ 0x80;
      expect(() => unseal(b, key, CID_A), `byte ${at}`).toThrow();
    }
  });

  it('cleans up temp files left by a crash at start, and prunes a container', async () => {
    await saveVersion(CID_A, 'one');
    await saveVersion(CID_A, 'two');
    await saveVersion(CID_B, 'b');
    const leftover = join(env.config.storeDir, `.${CID_A}.ks.tmp-0123456789ab`);
    writeFileSync(leftover, 'partial');
    const m = env.manager();
    await m.start();
    expect(existsSync(leftover)).toBe(false);
    await m.stop();

    const store = new KeystoreStore(env.config.storeDir);
    expect((await store.list()).map((s) => [s.cid, !!s.current, !!s.previous])).toEqual([
      [CID_A, true, true],
      [CID_B, true, false],
    ]);
    expect(await store.prune(CID_A)).toEqual([ks(CID_A), ks(CID_A, true)]);
    expect((await store.list()).map((s) => s.cid)).toEqual([CID_B]);
  });
});
