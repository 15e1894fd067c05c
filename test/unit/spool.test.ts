import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeviceAction, DeviceEvent } from '../../src/devices/types.js';
import { silentLogger } from '../../src/log.js';
import { SpoolSource, type SpoolSourceOptions } from '../../src/sources/spool.js';
import { spoolName } from '../../src/sources/spool-file.js';

const USB = '/devices/pci0000:00/0000:00:14.0/usb1/1-';

function envZero(props: Record<string, string>): Buffer {
  return Buffer.from(Object.entries(props).map(([k, v]) => `${k}=${v}\0`).join(''));
}

function props(seq: number, action: DeviceAction = 'add', extra: Record<string, string> = {}): Record<string, string> {
  return { ACTION: action, DEVPATH: `${USB}${seq}`, SUBSYSTEM: 'usb', DEVTYPE: 'usb_device', SEQNUM: String(seq), ...extra };
}

/** As the helper does: write a dot-file, rename it into place. */
function writeEvent(dir: string, seq: number, action: DeviceAction = 'add', extra: Record<string, string> = {}): string {
  const name = spoolName(BigInt(seq), action);
  writeFileSync(join(dir, `.${name}.tmp`), envZero({ PWD: '/', HMD_SPOOL_DIR: dir, ...props(seq, action, extra) }));
  renameSync(join(dir, `.${name}.tmp`), join(dir, name));
  return name;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

let root: string;
let dir: string;
const sources: SpoolSource[] = [];

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'hmd-spool-'));
  dir = join(root, 'spool');
});

afterEach(async () => {
  await Promise.all(sources.splice(0).map((s) => s.stop()));
  rmSync(root, { recursive: true, force: true });
});

function startSource(over: Partial<SpoolSourceOptions> = {}): { src: SpoolSource; batches: DeviceEvent[][]; events: () => DeviceEvent[] } {
  const batches: DeviceEvent[][] = [];
  const src = new SpoolSource({ dir, logger: silentLogger(), onEvents: (e) => batches.push(e), rescanMs: 100, ...over });
  sources.push(src);
  return { src, batches, events: () => batches.flat() };
}

const seqs = (events: DeviceEvent[]): number[] => events.map((e) => Number(e.seqnum));

describe.each(['fswatch', 'chokidar'] as const)('SpoolSource (%s)', (watcher) => {
  it('creates the folder 0700 and delivers the backlog in SEQNUM order, cleaned', async () => {
    mkdirSync(dir, { recursive: true });
    for (const s of [30, 4, 1000, 7, 12]) writeEvent(dir, s);
    const { src, events } = startSource({ watcher });
    await src.start();
    expect(seqs(events())).toEqual([4, 7, 12, 30, 1000]);
    const e = events()[0];
    expect(e?.properties).toEqual(props(4));
    expect(e?.spoolFile).toBe('00000000000000000004-add');
    expect(e?.source).toBe('spool');
  });

  it('creates a missing folder with mode 0700, and delivers live files', async () => {
    const { src, events } = startSource({ watcher });
    await src.start();
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    writeEvent(dir, 5);
    await waitFor(() => events().length === 1, 'first live event');
    writeEvent(dir, 6, 'remove');
    await waitFor(() => events().length === 2, 'second live event');
    expect(events().map((e) => [Number(e.seqnum), e.action])).toEqual([
      [5, 'add'],
      [6, 'remove'],
    ]);
  });
});

describe('SpoolSource', () => {
  it('delivers a 1000-file burst complete, once each, in SEQNUM order', async () => {
    const { src, events } = startSource();
    await src.start();
    for (let s = 1; s <= 1000; s++) writeEvent(dir, s, s % 2 === 0 ? 'remove' : 'add');
    await waitFor(() => events().length >= 1000, '1000 events');
    await new Promise((r) => setTimeout(r, 300)); // a few rescans: nothing may come twice
    expect(seqs(events())).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
  });

  it('release() deletes the files; until then they are not delivered again, after a restart they are', async () => {
    mkdirSync(dir, { recursive: true });
    const a = writeEvent(dir, 1);
    const b = writeEvent(dir, 2);
    const first = startSource();
    await first.src.start();
    await first.src.rescan();
    await first.src.rescan();
    expect(seqs(first.events())).toEqual([1, 2]);
    expect(first.src.pendingCount).toBe(2);

    await first.src.release([a]);
    expect(existsSync(join(dir, a))).toBe(false);
    expect(existsSync(join(dir, b))).toBe(true);
    expect(first.src.pendingCount).toBe(1);
    await first.src.stop();

    // A new instance (a restarted daemon) reads what was never released.
    const second = startSource();
    await second.src.start();
    expect(seqs(second.events())).toEqual([2]);
    await second.src.release([b, 'not-a-spool-name', '../../etc/passwd']);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('recreates a deleted spool folder on the next rescan and keeps delivering', async () => {
    const { src, events } = startSource();
    await src.start();
    writeEvent(dir, 1);
    await waitFor(() => events().length === 1, 'first event');
    rmSync(dir, { recursive: true, force: true });
    await waitFor(() => existsSync(dir), 'spool folder recreated', 5000);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    writeEvent(dir, 2);
    await waitFor(() => events().length === 2, 'event in the recreated folder');
  });

  it('follows a folder replaced under it (as the helper recreates it)', async () => {
    const { src, events } = startSource();
    await src.start();
    rmSync(dir, { recursive: true });
    mkdirSync(dir, { mode: 0o700 });
    await new Promise((r) => setTimeout(r, 250)); // one rescan notices the new folder
    writeEvent(dir, 3);
    await waitFor(() => events().length === 1, 'event in the replaced folder');
  });

  it('survives a handler that throws, without delivering the batch again', async () => {
    let calls = 0;
    const { src } = startSource({
      onEvents: () => {
        calls++;
        throw new Error('boom');
      },
    });
    await src.start();
    writeEvent(dir, 1);
    await waitFor(() => calls === 1, 'handler call');
    writeEvent(dir, 2);
    await waitFor(() => calls === 2, 'second handler call');
    await src.rescan();
    expect(calls).toBe(2);
  });
});

describe('SpoolSource quarantine', () => {
  let server: Server | null = null;
  afterEach(() => {
    server?.close();
    server = null;
  });

  it('quarantines 100 garbage files of every kind with a reason and still delivers the valid ones', async () => {
    mkdirSync(dir, { recursive: true });
    const outside = join(root, 'outside');
    writeFileSync(outside, envZero(props(1)));
    const garbage = new Map<string, RegExp>();
    const valid: number[] = [];
    let seq = 100;
    const next = () => spoolName(BigInt(++seq), 'add');
    const makers: Array<() => void> = [
      () => garbage.set(write(next(), randomBytes(200)), /\S/),
      () => garbage.set(write(next(), Buffer.alloc(0)), /empty file/),
      () => garbage.set(write(next(), envZero({ ACTION: 'add', SUBSYSTEM: 'usb', SEQNUM: String(seq) })), /DEVPATH: missing/),
      () => garbage.set(write(next(), envZero({ ...props(seq), SEQNUM: undefined as unknown as string })), /SEQNUM/),
      () => garbage.set(write(next(), Buffer.alloc(10 * 1024 * 1024, 0x41)), /file too large: 10485760 bytes/),
      () => garbage.set(write(next(), Buffer.concat([envZero(props(seq + 1)), Buffer.from('DEVPATH=/devices/other\0')])), /duplicate key "DEVPATH"/),
      () => garbage.set(write(next(), envZero(props(999_999))), /file name says SEQNUM \d+ ACTION add, content says SEQNUM 999999/),
      () => garbage.set(write(next(), envZero({ ...props(seq + 1), DEVPATH: '/devices/../../etc' })), /DEVPATH: has an empty/),
      () => {
        const n = next();
        execFileSync('mkfifo', [join(dir, n)]);
        garbage.set(n, /not a regular file: a FIFO/);
      },
      () => {
        const n = next();
        symlinkSync(outside, join(dir, n));
        garbage.set(n, /not a regular file: a symbolic link/);
      },
      () => {
        const n = next();
        mkdirSync(join(dir, n));
        writeFileSync(join(dir, n, 'inner'), 'x');
        garbage.set(n, /not a regular file: a directory/);
      },
      () => garbage.set(write(`hello-${seq++}`, envZero(props(seq))), /file name is not/),
      () => garbage.set(write(`invalid-1700000000-${seq++}`, envZero({ SUBSYSTEM: 'usb' })), /file name is not/),
      () => garbage.set(write(`00${seq++}-add`, envZero(props(seq))), /file name is not/),
      () => garbage.set(write(`${spoolName(BigInt(++seq), 'add').replace('-add', '-explode')}`, envZero(props(seq))), /file name is not/),
      () => garbage.set(write('99999999999999999999-add', envZero(props(1))), /file name is not/), // over u64
      () => garbage.set(write(`new\nline ${seq++}`, envZero(props(1))), /file name is not/),
      () => garbage.set(write(`Grüße ✓ ${seq++}`, envZero(props(1))), /file name is not/),
      () => {
        const n = `.${next()}.tmp`;
        write(n, envZero(props(seq)));
        const old = new Date(Date.now() - 120_000);
        utimesSync(join(dir, n), old, old);
        garbage.set(n, /temporary file left over/);
      },
    ];
    const write = (name: string, content: Buffer): string => {
      writeFileSync(join(dir, name), content);
      return name;
    };
    // 100 garbage files, each kind several times, with a valid event between every few.
    for (let i = 0; garbage.size < 100; i++) {
      makers[i % makers.length]?.();
      if (i % 3 === 0) {
        valid.push(++seq);
        writeEvent(dir, seq);
      }
    }
    // A socket: bind() creates it in the folder.
    server = createServer();
    const sock = next();
    await new Promise<void>((resolve) => server?.listen(join(dir, sock), resolve));
    garbage.set(sock, /not a regular file: a socket/);
    // A fresh temp file is the helper at work: it must be left alone.
    writeFileSync(join(dir, '.00000000000000099999-add.123'), 'partial');

    const quarantined: string[] = [];
    const { src, events } = startSource({ onQuarantine: (name) => quarantined.push(name) });
    await src.start();
    await src.rescan();

    expect(seqs(events())).toEqual(valid);
    const qdir = join(dir, 'quarantine');
    for (const [name, reason] of garbage) {
      expect(existsSync(join(dir, name)), `${name} left in the spool`).toBe(false);
      expect(existsSync(join(qdir, name)), `${name} in quarantine`).toBe(true);
      expect(readFileSync(join(qdir, `${name}.reason`), 'utf8')).toMatch(reason);
    }
    expect(quarantined.sort()).toEqual([...garbage.keys()].sort());
    // A name too long to take a `.reason` beside it is kept under a shortened one.
    const long = 'x'.repeat(250);
    write(long, Buffer.from('junk'));
    await src.rescan();
    const kept = readdirSync(qdir).filter((n) => n.startsWith('x'.repeat(40)));
    expect(kept.sort()).toEqual([expect.stringMatching(/^x{40}~[0-9a-f]{16}$/), expect.stringMatching(/^x{40}~[0-9a-f]{16}\.reason$/)]);
    expect(existsSync(join(dir, '.00000000000000099999-add.123'))).toBe(true);
    // What is left in the spool: the valid files awaiting release, the fresh temp, the quarantine.
    expect(readdirSync(dir).length).toBe(valid.length + 2);

    // And live files still flow afterwards.
    writeEvent(dir, 1_000_000);
    await waitFor(() => events().length === valid.length + 1, 'live event after the garbage');
  });

  it('quarantines a file whose name is no UTF-8 under its own bytes, live and at start', async () => {
    mkdirSync(dir, { recursive: true });
    const rawName = (tail: number[]): Buffer => Buffer.concat([Buffer.from('00000000000000000042-add'), Buffer.from(tail)]);
    const at = (d: string, name: Buffer): Buffer => Buffer.concat([Buffer.from(`${d}/`), name]);
    writeFileSync(at(dir, rawName([0xff, 0xfe])), envZero(props(42)));
    const quarantined: string[] = [];
    const { src, events } = startSource({ onQuarantine: (n) => quarantined.push(n) });
    await src.start();
    const q = join(dir, 'quarantine');
    expect(readdirSync(dir, { encoding: 'buffer' }).some((n) => n.equals(rawName([0xff, 0xfe])))).toBe(false);
    expect(readFileSync(at(q, Buffer.concat([rawName([0xff, 0xfe]), Buffer.from('.reason')])), 'utf8')).toMatch(/not valid UTF-8/);
    // one arriving live: the watch decodes it wrongly, the full listing it triggers does not
    writeFileSync(at(dir, rawName([0xc3])), envZero(props(43)));
    await waitFor(() => quarantined.length === 2, 'live non-UTF-8 name quarantined', 5000);
    expect(readdirSync(q, { encoding: 'buffer' }).some((n) => n.equals(rawName([0xc3])))).toBe(true);
    expect(events()).toEqual([]);
  });

  it('never overwrites in the quarantine: a second file of the same name gets a suffix', async () => {
    const { src } = startSource();
    await src.start();
    writeFileSync(join(dir, 'junk'), 'first');
    await src.rescan();
    writeFileSync(join(dir, 'junk'), 'second');
    await src.rescan();
    const q = join(dir, 'quarantine');
    expect(readFileSync(join(q, 'junk'), 'utf8')).toBe('first');
    expect(readFileSync(join(q, 'junk.1'), 'utf8')).toBe('second');
    expect(readFileSync(join(q, 'junk.1.reason'), 'utf8')).toMatch(/file name is not/);
  });

  it('keeps the quarantine bounded, newest entries kept', async () => {
    const { src } = startSource({ quarantineMax: 10 });
    await src.start();
    for (let i = 0; i < 40; i++) {
      const f = join(dir, `junk-${String(i).padStart(2, '0')}`);
      writeFileSync(f, 'x');
      const t = new Date(Date.now() - (100 - i) * 1000);
      utimesSync(f, t, t);
    }
    await src.rescan();
    const left = readdirSync(join(dir, 'quarantine')).filter((n) => !n.endsWith('.reason'));
    expect(left.length).toBeGreaterThanOrEqual(10);
    expect(left.length).toBeLessThanOrEqual(11);
    expect(left).toContain('junk-39');
    expect(left).not.toContain('junk-00');
    // reasons go with their files
    expect(readdirSync(join(dir, 'quarantine')).filter((n) => n.endsWith('.reason')).length).toBe(left.length);
  });

  it('replaces a non-directory sitting where the quarantine folder goes', async () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'quarantine'), 'not a folder');
    writeFileSync(join(dir, 'junk'), 'x');
    const { src } = startSource();
    await src.start();
    expect(statSync(join(dir, 'quarantine')).isDirectory()).toBe(true);
    expect(existsSync(join(dir, 'quarantine', 'junk.reason'))).toBe(true);
  });
});
