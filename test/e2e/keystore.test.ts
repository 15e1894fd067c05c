import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, useDaemonSuite } from './support/daemon.js';
import { e2eBlocker, REPO } from './support/dbus.js';
import { FakeContainer } from './support/containers.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING keystore e2e tests: ${blocker} ***\n`);

const MARKER = 'PLAINTEXT-MARKER-7f3a9c';

function walkFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walkFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

describe.skipIf(blocker !== null)('keystore over D-Bus', () => {
  const t = useDaemonSuite({ config: { keystore: { limitBytes: 131072 } }, env: { HMD_TEST_KEYSTORE_DELAY_MS: '20' } });

  const sourceOf = (cid: string): string => join(t.dirs.keystoreSource, cid);
  const start = async (c: FakeContainer): Promise<number> => ((await c.call('StartKeystoreSave'))['body'] as number[])[0] as number;
  const status = async (c: FakeContainer): Promise<number> => ((await c.call('GetKeystoreStatus'))['body'] as number[])[0] as number;
  const settle = (c: FakeContainer): Promise<number> =>
    eventually(async () => {
      const s = await status(c);
      return s === 16 ? null : { s };
    }, 15_000, 'the save to finish').then((r) => r.s);

  it('saves, reports 0, and restores byte for byte (nested dirs, binary content, modes); no plaintext in the store', async () => {
    const c = await FakeContainer.start({ uid: 65534 });
    await c.connect(t.bus.address);
    const src = sourceOf(c.cid!);
    mkdirSync(join(src, 'nested/deeper'), { recursive: true });
    writeFileSync(join(src, 'key.pem'), `-----BEGIN KEY-----\n${MARKER}\n`);
    chmodSync(join(src, 'key.pem'), 0o600);
    const bin = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
    writeFileSync(join(src, 'nested/deeper/blob.bin'), bin);
    chmodSync(join(src, 'nested/deeper/blob.bin'), 0o640);
    expect(await status(c)).toBe(0); // none ever done
    expect(await start(c)).toBe(0);
    expect(await settle(c)).toBe(0);
    for (const f of walkFiles(t.dirs.keystoreStore)) expect(readFileSync(f).includes(MARKER)).toBe(false);
    const to = join(t.dirs.root, 'restored');
    const r = spawnSync(process.execPath, [join(REPO, 'dist/main.js'), 'keystore', 'restore', '--container', c.cid!, '--to', to, '--config', t.dirs.configFile], { encoding: 'utf8' });
    expect(r.status, String(r.stderr)).toBe(0);
    expect(readFileSync(join(to, 'key.pem'), 'utf8')).toContain(MARKER);
    expect(readFileSync(join(to, 'nested/deeper/blob.bin')).equals(bin)).toBe(true);
    expect(statSync(join(to, 'key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(join(to, 'nested/deeper/blob.bin')).mode & 0o777).toBe(0o640);
  });

  it('a second StartKeystoreSave during a slow save answers EBUSY', async () => {
    const c = await FakeContainer.start();
    await c.connect(t.bus.address);
    const src = sourceOf(c.cid!);
    mkdirSync(src, { recursive: true });
    for (let i = 0; i < 20; i++) writeFileSync(join(src, `f${i}`), `file ${i}`);
    expect(await start(c)).toBe(0);
    expect(await start(c)).toBe(16);
    expect(await status(c)).toBe(16);
    expect(await settle(c)).toBe(0);
  });

  it('exactly 131072 bytes is accepted; 131073 is EFBIG at once', async () => {
    const c = await FakeContainer.start();
    await c.connect(t.bus.address);
    const src = sourceOf(c.cid!);
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'a'), Buffer.alloc(65536, 1));
    writeFileSync(join(src, 'b'), Buffer.alloc(65536, 2));
    expect(await start(c)).toBe(0);
    expect(await settle(c)).toBe(0);
    writeFileSync(join(src, 'c'), 'x');
    expect(await start(c)).toBe(27);
  });

  it('a host process gets ENODATA; a container without a keystore directory gets EAGAIN', async () => {
    const host = await FakeContainer.start({ cid: null });
    await host.connect(t.bus.address);
    expect(await start(host)).toBe(61);
    expect(await status(host)).toBe(61);
    const c = await FakeContainer.start();
    await c.connect(t.bus.address);
    expect(await start(c)).toBe(11);
  });

  it('a symlink to a host secret fails the save with EIO and the secret is stored nowhere', async () => {
    const secret = join(t.dirs.root, 'host-secret');
    writeFileSync(secret, 'HOST-SECRET-b91e');
    chmodSync(secret, 0o600);
    const c = await FakeContainer.start();
    await c.connect(t.bus.address);
    const src = sourceOf(c.cid!);
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'ok'), 'fine');
    symlinkSync(secret, join(src, 'steal'));
    expect(await start(c)).toBe(0);
    expect(await settle(c)).toBe(5);
    for (const f of walkFiles(t.dirs.keystoreStore)) expect(readFileSync(f).includes('HOST-SECRET-b91e')).toBe(false);
    expect(t.daemon.running).toBe(true);
  });

  it('a FIFO in the keystore fails promptly instead of hanging the daemon', async () => {
    const c = await FakeContainer.start();
    await c.connect(t.bus.address);
    const src = sourceOf(c.cid!);
    mkdirSync(src, { recursive: true });
    expect(spawnSync('mkfifo', [join(src, 'pipe')]).status).toBe(0);
    expect(await start(c)).toBe(0);
    expect(await settle(c)).toBe(5);
    // Still answering everyone.
    expect(await status(c)).not.toBe(16);
  });
});
