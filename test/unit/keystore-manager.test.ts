import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, statSync, writeFileSync, mkdirSync, symlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Status } from '../../src/constants.js';
import { silentLogger } from '../../src/log.js';
import { restoreKeystore } from '../../src/keystore/restore.js';
import { statusFile } from '../../src/keystore/paths.js';
import { CID_A, CID_B, allBytes, lastError, makeEnv, readTree, settledStatus, writeTree, type Env } from './keystore/helpers.js';

const MARKER = 'PLAINTEXT-MARKER-7f3a9c';

describe('keystore manager', () => {
  let env: Env;
  beforeEach(() => {
    env = makeEnv();
  });
  afterEach(() => env.cleanup());

  it('saves (0), polls to 0, and restores the tree byte for byte: nested dirs, binary content, modes', async () => {
    const binary = randomBytes(5000);
    writeTree(env.source(CID_A), {
      'top.txt': { data: `hello ${MARKER}\n`, mode: 0o640 },
      'bin.dat': { data: binary, mode: 0o600 },
      empty: { data: '', mode: 0o444 },
      'a/b/c': { dir: true },
      'a/b/c/deep.key': { data: Buffer.from([0, 1, 2, 255, 254, 0]), mode: 0o755 },
      'a/mid': { data: 'mid', mode: 0o604 },
      'a/b': { dir: true, mode: 0o750 },
      [`name-${MARKER}`]: 'named',
    });
    const m = env.manager();
    await m.start();
    expect(m.getStatus(CID_A)).toBe(Status.OK); // never saved
    expect(await m.startSave(CID_A)).toBe(Status.OK);
    expect(await settledStatus(m, CID_A)).toBe(Status.OK);
    const d = m.describe().find((x) => x.cid === CID_A);
    expect(d?.lastSaveAt).toBeDefined();
    expect(d?.files).toBe(6);
    expect(d?.bytes).toBe(binary.length + `hello ${MARKER}\n`.length + 6 + 3 + 5);

    // No plaintext of the source (content or names) in anything stored.
    expect(allBytes(env.config.storeDir).includes(MARKER)).toBe(false);
    expect(statSync(join(env.config.storeDir, `${CID_A}.ks`)).mode & 0o777).toBe(0o600);
    expect(statSync(env.config.storeDir).mode & 0o777).toBe(0o700);

    const to = join(env.root, 'restored', 'here');
    const r = await restoreKeystore({ ...env.config, cid: CID_A, toDir: to, logger: silentLogger() });
    expect(r.copy).toBe('current');
    expect(statSync(to).mode & 0o777).toBe(0o700);
    expect(readTree(to)).toEqual(readTree(env.source(CID_A)));
    await m.stop();
  });

  it('creates the key file 0600 with 32 bytes on first use', async () => {
    writeTree(env.source(CID_A), { f: 'x' });
    const m = env.manager();
    await m.start();
    expect(existsSync(env.config.keyFile)).toBe(false);
    expect(await m.startSave(CID_A)).toBe(Status.OK);
    expect(await settledStatus(m, CID_A)).toBe(Status.OK);
    expect(statSync(env.config.keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(env.config.keyFile)).toHaveLength(32);
    await m.stop();
  });

  it('answers EBUSY during a slow save, while another container saves independently', async () => {
    writeTree(env.source(CID_A), { one: '1', two: '2', three: '3' });
    writeTree(env.source(CID_B), { b: 'b' });
    const m = env.manager({ readDelayMs: 80 });
    await m.start();
    expect(await m.startSave(CID_A)).toBe(Status.OK);
    expect(m.getStatus(CID_A)).toBe(Status.EBUSY);
    expect(await m.startSave(CID_A)).toBe(Status.EBUSY);
    expect(await m.startSave(CID_B)).toBe(Status.OK);
    expect(m.getStatus(CID_A)).toBe(Status.EBUSY);
    expect(await settledStatus(m, CID_B)).toBe(Status.OK);
    expect(await settledStatus(m, CID_A)).toBe(Status.OK);
    // Once done, a new save is accepted again.
    expect(await m.startSave(CID_A)).toBe(Status.OK);
    expect(await settledStatus(m, CID_A)).toBe(Status.OK);
    await m.stop();
  });

  it('accepts exactly limitBytes (131072) and answers EFBIG for one byte more', async () => {
    const m = env.manager();
    await m.start();
    writeTree(env.source(CID_A), { x: Buffer.alloc(100_000, 1), 'd/y': Buffer.alloc(31_072, 2) });
    expect(await m.startSave(CID_A)).toBe(Status.OK);
    expect(await settledStatus(m, CID_A)).toBe(Status.OK);

    writeTree(env.source(CID_B), { x: Buffer.alloc(100_000, 1), 'd/y': Buffer.alloc(31_073, 2) });
    expect(await m.startSave(CID_B)).toBe(Status.EFBIG);
    // Refused at once: no save ran, nothing stored, status untouched.
    expect(m.getStatus(CID_B)).toBe(Status.OK);
    expect(existsSync(join(env.config.storeDir, `${CID_B}.ks`))).toBe(false);
    await m.stop();
  });

  it('answers EAGAIN when the source directory is missing or is not a directory', async () => {
    const m = env.manager();
    await m.start();
    expect(await m.startSave(CID_A)).toBe(Status.EAGAIN);
    expect(m.getStatus(CID_A)).toBe(Status.OK);
    mkdirSync(join(env.root, 'containers', CID_B), { recursive: true });
    mkdirSync(join(env.root, 'elsewhere'));
    symlinkSync(join(env.root, 'elsewhere'), env.source(CID_B));
    expect(await m.startSave(CID_B)).toBe(Status.EAGAIN);
    // A bad ID never reaches a path.
    expect(await m.startSave('../../etc')).toBe(Status.EAGAIN);
    await m.stop();
  });

  it('answers EAGAIN when the key file is readable by others, and leaves it alone', async () => {
    writeTree(env.source(CID_A), { f: 'x' });
    mkdirSync(join(env.root, 'etc'));
    writeFileSync(env.config.keyFile, randomBytes(32), { mode: 0o644 });
    const m = env.manager();
    await m.start();
    expect(await m.startSave(CID_A)).toBe(Status.EAGAIN);
    expect(statSync(env.config.keyFile).mode & 0o777).toBe(0o644);
    await m.stop();
  });

  it('keeps each container status across a restart', async () => {
    writeTree(env.source(CID_A), { f: 'ok' });
    writeTree(env.source(CID_B), { f: 'ok' });
    symlinkSync('/etc/hostname', join(env.source(CID_B), 'link'));
    const m1 = env.manager();
    await m1.start();
    expect(await m1.startSave(CID_A)).toBe(Status.OK);
    expect(await m1.startSave(CID_B)).toBe(Status.OK);
    expect(await settledStatus(m1, CID_A)).toBe(Status.OK);
    expect(await settledStatus(m1, CID_B)).toBe(Status.EIO);
    await m1.stop();

    const m2 = env.manager();
    await m2.start();
    expect(m2.getStatus(CID_A)).toBe(Status.OK);
    expect(m2.getStatus(CID_B)).toBe(Status.EIO);
    expect(lastError(m2, CID_B)).toContain('link');
    expect(m2.describe().find((d) => d.cid === CID_A)?.saves).toBe(1);
    await m2.stop();
  });

  it('reports a save the daemon did not finish as EIO after restart', async () => {
    writeTree(env.source(CID_A), { one: '1', two: '2' });
    const m1 = env.manager({ readDelayMs: 60_000, stopGraceMs: 50 });
    await m1.start();
    expect(await m1.startSave(CID_A)).toBe(Status.OK);
    expect(m1.getStatus(CID_A)).toBe(Status.EBUSY);
    await m1.stop(); // interrupts the save after the grace period
    expect(m1.getStatus(CID_A)).toBe(Status.EIO);
    expect(await m1.startSave(CID_A)).toBe(Status.EAGAIN); // stopped

    const m2 = env.manager();
    await m2.start();
    expect(m2.getStatus(CID_A)).toBe(Status.EIO);
    expect(lastError(m2, CID_A)).toContain('interrupted');
    await m2.stop();
  });

  it('turns a status file left at EBUSY by a crash into EIO, and ignores a corrupt one', async () => {
    mkdirSync(env.stateDir, { recursive: true });
    const file = statusFile(env.stateDir);
    writeFileSync(file, JSON.stringify({ version: 1, containers: { [CID_A]: { status: 16, saves: 2, failures: 0 } } }));
    const m = env.manager();
    await m.start();
    expect(m.getStatus(CID_A)).toBe(Status.EIO);
    await m.stop();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ containers: { [CID_A]: { status: 5, failures: 1 } } });

    writeFileSync(file, '{not json');
    const m2 = env.manager();
    await m2.start();
    expect(m2.getStatus(CID_A)).toBe(Status.OK);
    await m2.stop();
  });

  it('refuses a sourceDir template without {cid}', () => {
    expect(() => env.manager({ config: { ...env.config, sourceDir: '/var/lib/keystore' } })).toThrow(/\{cid\}/);
  });
});
