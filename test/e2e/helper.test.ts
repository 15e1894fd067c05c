// The udev helper (udev-rules/hmd-uevent), run for real with the environment udevd gives a RUN
// program: the device's properties and nothing else (no PATH, cwd "/").
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultSeqnumStart, replayCommand, replayFixture } from '../../src/cli/replay.js';
import { loadFixture, type FixtureEvent } from '../../src/devices/fixtures.js';
import { packageRoot } from '../../src/paths.js';

const HELPER = join(packageRoot(), 'udev-rules', 'hmd-uevent');
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('helper.test: not root, skipping the tests that mount a tmpfs');

const work = mkdtempSync(join(tmpdir(), 'hmd-helper-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => join(work, `spool-${++n}`);

function runHelper(env: Record<string, string>): { status: number | null; stderr: string } {
  const r = spawnSync(HELPER, [], { env, cwd: '/', encoding: 'utf8', timeout: 10_000 });
  return { status: r.status, stderr: r.stderr };
}

/** The spool format: `env -0`, NUL-terminated KEY=VALUE records. */
function parseSpool(buf: Buffer): Map<string, string> {
  const records = buf.toString('utf8').split('\0');
  expect(records.pop()).toBe(''); // every record NUL-terminated, the last one too
  return new Map(records.map((r) => [r.slice(0, r.indexOf('=')), r.slice(r.indexOf('=') + 1)]));
}

const ttyEvent = (seqnum: string, extra: Record<string, string> = {}): Record<string, string> => ({
  ACTION: 'add',
  SEQNUM: seqnum,
  DEVPATH: '/devices/pnp0/00:00/00:00:0/00:00:0.0/tty/ttyS0',
  SUBSYSTEM: 'tty',
  DEVNAME: '/dev/ttyS0',
  MAJOR: '4',
  MINOR: '64',
  ...extra,
});

describe('hmd-uevent', () => {
  it('is an executable POSIX sh script', () => {
    expect(statSync(HELPER).mode & 0o111).toBe(0o111);
    expect(readFileSync(HELPER, 'utf8').startsWith('#!/bin/sh\n')).toBe(true);
    // Syntax check with dash, the strictest common /bin/sh.
    execFileSync('dash', ['-n', HELPER]);
  });

  it('writes one file named <SEQNUM zero-padded to 20>-<ACTION> holding exactly the environment', () => {
    const dir = freshDir();
    const odd = {
      ID_MODEL_FROM_DATABASE: 'CP2102/CP2109 UART Bridge Controller [CP210x family]',
      WITH_EQUALS: 'a=b==c=',
      QUOTES: `it's "quoted" \`back\` $HOME \\n`,
      NEWLINES: 'line one\nline two\n\nline four\r\n',
      UTF8: 'Zürich – 東京 – 🔌',
      EMPTY: '',
      LEADING_DASH: '-n -e',
      GLOB: '* ? [a-z]',
      HMD_SPOOL_DIR: dir,
    };
    const env = ttyEvent('4711', odd);
    const r = runHelper(env);
    expect(r).toEqual({ status: 0, stderr: '' });
    expect(readdirSync(dir)).toEqual(['00000000000000004711-add']);
    const got = parseSpool(readFileSync(join(dir, '00000000000000004711-add')));
    for (const [k, v] of Object.entries(env)) expect(got.get(k)).toBe(v);
    // Nothing but what it was given, and what the shell itself exports (PWD; dropped by the reader).
    const extra = [...got.keys()].filter((k) => !(k in env));
    expect(extra.every((k) => k === 'PWD')).toBe(true);
    expect(statSync(join(dir, '00000000000000004711-add')).mode & 0o777).toBe(0o600);
  });

  it('pads any SEQNUM up to 20 digits (u64 max) by string, no octal or overflow', () => {
    const dir = freshDir();
    for (const [seq, action] of [['1', 'remove'], ['0755', 'add'], ['18446744073709551615', 'change']] as const) {
      expect(runHelper({ ...ttyEvent(seq), ACTION: action, HMD_SPOOL_DIR: dir }).status).toBe(0);
    }
    expect(readdirSync(dir).sort()).toEqual(['00000000000000000001-remove', '00000000000000000755-add', '18446744073709551615-change']);
  });

  it('creates a missing spool directory (and parents) mode 0700', () => {
    const dir = join(freshDir(), 'deeper', 'spool');
    expect(runHelper({ ...ttyEvent('7'), HMD_SPOOL_DIR: dir })).toEqual({ status: 0, stderr: '' });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readdirSync(dir)).toEqual(['00000000000000000007-add']);
  });

  it.each([
    ['a SEQNUM with letters', { SEQNUM: '12a' }],
    ['an empty SEQNUM', { SEQNUM: '' }],
    ['a SEQNUM over 20 digits', { SEQNUM: '123456789012345678901' }],
    ['a negative SEQNUM', { SEQNUM: '-5' }],
    ['an ACTION with capitals', { ACTION: 'Add' }],
    ['an ACTION with a path', { ACTION: 'add/../../x' }],
  ])('keeps an event with %s as invalid-* (for the reader to quarantine)', (_label, bad: Record<string, string>) => {
    const dir = freshDir();
    const env: Record<string, string> = { ...ttyEvent('9'), ...bad, HMD_SPOOL_DIR: dir };
    expect(runHelper(env)).toEqual({ status: 0, stderr: '' });
    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^invalid-\d+-\d+$/);
    const got = parseSpool(readFileSync(join(dir, files[0] ?? '')));
    expect(got.get('DEVPATH')).toBe(env['DEVPATH']);
    expect(got.get('SEQNUM')).toBe(env['SEQNUM']);
  });

  it('keeps an event without SEQNUM or ACTION as invalid-*', () => {
    const dir = freshDir();
    const { SEQNUM: _s, ...noSeq } = ttyEvent('1');
    const { ACTION: _a, ...noAction } = ttyEvent('2');
    expect(runHelper({ ...noSeq, HMD_SPOOL_DIR: dir }).status).toBe(0);
    expect(runHelper({ ...noAction, HMD_SPOOL_DIR: dir }).status).toBe(0);
    const files = readdirSync(dir);
    expect(files).toHaveLength(2);
    for (const f of files) expect(f).toMatch(/^invalid-/);
  });

  it('never shows a partial file under a final name, and leaves no temporary file', async () => {
    const dir = freshDir();
    mkdirSync(dir);
    // Values large enough that env writes them in several chunks.
    const big = 'x'.repeat(60_000);
    const count = 40;
    let stop = false;
    let seenFinal = 0;
    const bad: string[] = [];
    const watcher = (async () => {
      while (!stop) {
        for (const f of readdirSync(dir)) {
          if (f.startsWith('.')) continue;
          seenFinal += 1;
          const text = readFileSync(join(dir, f), 'utf8');
          if (!text.includes(`BIG=${big}\0`) || !text.endsWith('\0')) bad.push(f);
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    await Promise.all(
      Array.from({ length: count }, (_, i) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn(HELPER, [], { env: { ...ttyEvent(String(1000 + i)), BIG: big, HMD_SPOOL_DIR: dir }, cwd: '/' });
          child.on('error', reject);
          child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}`))));
        }),
      ),
    );
    stop = true;
    await watcher;
    expect(bad).toEqual([]);
    expect(seenFinal).toBeGreaterThan(0);
    const files = readdirSync(dir);
    expect(files.filter((f) => f.startsWith('.'))).toEqual([]);
    expect(files).toHaveLength(count);
  });
});

describe.skipIf(!isRoot)('hmd-uevent on a full or unwritable spool', () => {
  const full = join(work, 'full');
  const readOnly = join(work, 'ro');
  beforeAll(() => {
    mkdirSync(full);
    mkdirSync(readOnly);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k,mode=0700', 'tmpfs', full]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=4k,mode=0700', 'tmpfs', readOnly]);
    // Fill the 4 KiB tmpfs completely; the write fails with ENOSPC once it is full.
    try {
      writeFileSync(join(full, 'filler'), Buffer.alloc(64 * 1024));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    }
  });
  afterAll(() => {
    for (const m of [full, readOnly]) spawnSync('umount', [m]);
  });

  it('exits 0 when the disk is full, says so on stderr, leaves no file behind', () => {
    const before = readdirSync(full);
    const r = runHelper({ ...ttyEvent('31'), PAYLOAD: 'y'.repeat(8192), HMD_SPOOL_DIR: full });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/hmd-uevent: cannot write .*00000000000000000031-add/);
    expect(readdirSync(full)).toEqual(before);
  });

  it('exits 0 when the spool cannot be written, says so, leaves no file behind', () => {
    const r = runHelper({ ...ttyEvent('32'), HMD_SPOOL_DIR: readOnly });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/hmd-uevent: cannot write .*event 00000000000000000032-add lost/);
    expect(readdirSync(readOnly)).toEqual([]);
  });

  it('exits 0 when the spool directory cannot be created', () => {
    const r = runHelper({ ...ttyEvent('33'), HMD_SPOOL_DIR: join(readOnly, 'sub') });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/hmd-uevent: cannot create spool directory/);
    expect(existsSync(join(readOnly, 'sub'))).toBe(false);
  });
});

describe('replayFixture (hmd replay) through the helper', () => {
  it('plugs a fixture: one spool file per event, in order, with SEQNUMs increasing and the properties intact', async () => {
    const dir = freshDir();
    const fx = loadFixture('ftdi-ft232r');
    const res = await replayFixture({ fixture: fx, spoolDir: dir, seqnumStart: 5000n });
    expect(res.files).toEqual(fx.events.map((ev, i) => join(dir, `${String(5000 + i).padStart(20, '0')}-add`)));
    expect(readdirSync(dir).sort()).toEqual(res.files.map((f) => f.slice(dir.length + 1)));
    res.files.forEach((file, i) => {
      const got = parseSpool(readFileSync(file));
      const ev = fx.events[i] as FixtureEvent;
      for (const [k, v] of Object.entries(ev)) expect(got.get(k)).toBe(v);
      expect(got.get('SEQNUM')).toBe(String(5000 + i));
      expect(got.get('HMD_SPOOL_DIR')).toBe(dir);
      expect(got.get('PWD')).toBe('/');
      // Nothing else of the test process leaks in (no PATH, HOME, …).
      expect([...got.keys()].filter((k) => !(k in ev) && !['SEQNUM', 'HMD_SPOOL_DIR', 'PWD'].includes(k))).toEqual([]);
    });
  });

  it('unplugs children first, above every SEQNUM already in the spool by default', async () => {
    const dir = freshDir();
    const add = await replayFixture({ fixture: 'logitech-usb-headset', spoolDir: dir });
    const rm = await replayFixture({ fixture: 'logitech-usb-headset', spoolDir: dir, remove: true });
    expect(rm.events.map((e) => e.devpath)).toEqual(add.events.map((e) => e.devpath).reverse());
    expect(rm.events.every((e) => e.action === 'remove')).toBe(true);
    const seqs = [...add.events, ...rm.events].map((e) => e.seqnum);
    expect(seqs).toEqual([...seqs].sort((a, b) => (a < b ? -1 : 1)));
    expect(new Set(seqs).size).toBe(seqs.length);
    // A plain sort of the names is the replay's order.
    expect(readdirSync(dir).sort()).toEqual([...add.files, ...rm.files].map((f) => f.slice(dir.length + 1)));
  });

  it('starts above a higher SEQNUM found in the spool', () => {
    const dir = freshDir();
    mkdirSync(dir);
    writeFileSync(join(dir, '90000000000000000000-add'), '');
    expect(defaultSeqnumStart(dir, 1_000n)).toBe(90000000000000000001n);
    expect(defaultSeqnumStart(join(dir, 'missing'), 1_000n)).toBe(1_000n);
  });

  it('fails loudly when the helper cannot write', async () => {
    await expect(replayFixture({ fixture: 'ftdi-ft232r', spoolDir: '/proc/hmd-no-such-dir', seqnumStart: 1n })).rejects.toThrow(/udev helper .* failed.*cannot create spool directory/s);
  });

  it('hmd replay --json prints the events on stdout and one line per event on stderr', async () => {
    const dir = freshDir();
    const out: string[] = [];
    const err: string[] = [];
    const wOut = process.stdout.write.bind(process.stdout);
    const wErr = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => (out.push(s), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (err.push(s), true)) as typeof process.stderr.write;
    try {
      await replayCommand().parseAsync(['aeotec-zstick-gen5', '--spool-dir', dir, '--seqnum-start', '77', '--json'], { from: 'user' });
    } finally {
      process.stdout.write = wOut;
      process.stderr.write = wErr;
    }
    const doc = JSON.parse(out.join('')) as { fixture: string; action: string; events: Array<{ seqnum: string; devpath: string; file: string }> };
    expect(doc.fixture).toBe('aeotec-zstick-gen5');
    expect(doc.action).toBe('add');
    expect(doc.events.map((e) => e.seqnum)).toEqual(['77', '78', '79', '80']);
    expect(err.join('').trim().split('\n')).toHaveLength(4);
    expect(readdirSync(dir).sort()).toEqual(doc.events.map((e) => e.file.slice(dir.length + 1)));
  });
});
