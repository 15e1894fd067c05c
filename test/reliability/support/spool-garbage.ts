/**
 * Hostile spool input: files the daemon must refuse (quarantine with a reason) without
 * crashing, stalling or passing anything on. Every generator makes input that is invalid by
 * construction (the comment says why), so "every one quarantined" is an exact assertion.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Rng } from './rng.js';

export type Part = string | Buffer;
/** One KEY=VALUE record; either side may be raw bytes (invalid UTF-8). */
export type Rec = readonly [Part, Part];

export interface Garbage {
  /** The name in the spool (what must show up in the quarantine). */
  name: string;
  kind: string;
  /** The n of the /devices/…/usb9/9-<n> path its content names (if any). */
  n: number;
}

export const spoolName = (seq: bigint, action = 'add'): string => `${seq.toString().padStart(20, '0')}-${action}`;

/** env -0 format: every record NUL-terminated. */
export function serialize(recs: readonly Rec[], finalNul = true): Buffer {
  const parts: Buffer[] = [];
  recs.forEach(([k, v], i) => {
    parts.push(Buffer.from(k), Buffer.from('='), Buffer.from(v));
    if (finalNul || i < recs.length - 1) parts.push(Buffer.from([0]));
  });
  return Buffer.concat(parts);
}

/** A complete, valid record for (seq, action), SEQNUM last (truncation relies on that). */
export function validRecs(seq: bigint, action: string, n: number): Rec[] {
  return [
    ['ACTION', action],
    ['DEVPATH', `/devices/pci0000:00/0000:00:14.0/usb9/9-${n}`],
    ['SUBSYSTEM', 'usb'],
    ['DEVTYPE', 'usb_device'],
    ['ID_SERIAL', `Fuzz_${n}`],
    ['SEQNUM', seq.toString()],
  ];
}

const INVALID_UTF8 = [Buffer.from([0xff]), Buffer.from([0xc3]), Buffer.from([0xc0, 0xaf]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80])];
const UNICODE = ['É', 'МОДЕЛЬ', '日本', '🔌', 'ß', '\u200b', 'ｕｓｂ'];

function replace(recs: Rec[], key: string, value: Part): Rec[] {
  return recs.map((r) => (r[0] === key ? [key, value] : r));
}

function insertAt(rng: Rng, recs: Rec[], rec: Rec): Rec[] {
  const out = [...recs];
  out.splice(rng.int(0, out.length), 0, rec);
  return out;
}

/** Content generators for regular files with a valid spool name: (rng, seq, n) → bytes. */
type ContentGen = (rng: Rng, seq: bigint, n: number) => Buffer;

const CONTENT: Record<string, ContentGen> = {
  // Random bytes: a valid event needs ACTION, DEVPATH=/devices/…, SUBSYSTEM and SEQNUM.
  'random bytes': (rng) => rng.bytes(rng.int(1, 6000)),
  empty: () => Buffer.alloc(0),
  // Only NULs: every record is empty, so not KEY=VALUE (or the file is over 64 KiB).
  'NUL-filled': (rng) => Buffer.alloc(rng.pick([1, 2, 17, 4096, rng.int(1, 70_000)]), 0),
  // Cut inside the last record (SEQNUM): it is missing, has no '=', is empty or lost digits.
  truncated: (rng, seq, n) => {
    const full = serialize(validRecs(seq, 'add', n));
    const start = full.lastIndexOf('SEQNUM=');
    return full.subarray(0, rng.int(start, full.length - 2));
  },
  // Over 4096 bytes in one value of a key that is kept.
  'huge value': (rng, seq, n) => {
    const key = rng.pick(['ID_MODEL', 'DEVPATH', 'ID_SERIAL', 'DEVLINKS']);
    const value = key === 'DEVPATH' ? `/devices/${'x'.repeat(rng.int(4097, 20_000))}` : 'v'.repeat(rng.int(4097, 60_000));
    const recs = validRecs(seq, 'add', n);
    return serialize(recs.some((r) => r[0] === key) ? replace(recs, key, value) : insertAt(rng, recs, [key, value]));
  },
  // Over the 64 KiB file limit, otherwise well-formed (or plain filler up to 2 MiB).
  'huge file': (rng, seq, n) =>
    rng.bool()
      ? serialize([...Array.from({ length: 40 }, (_, i): Rec => [`FILLER_${i}`, 'f'.repeat(2000)]), ...validRecs(seq, 'add', n)])
      : Buffer.alloc(rng.int(65_537, 2 * 1024 * 1024), 0x41),
  // More than 512 kept properties.
  'too many keys': (rng, seq, n) => serialize([...Array.from({ length: rng.int(513, 700) }, (_, i): Rec => [`K_${i}`, '1']), ...validRecs(seq, 'add', n)]),
  'wrong types': (rng, seq, n) => {
    const recs = validRecs(seq, 'add', n);
    const variant = rng.int(0, 5);
    if (variant === 0) return serialize(replace(recs, 'ACTION', rng.pick(['', 'ADD', 'explode', 'add ', '1', 'add\n', 'remove'])));
    if (variant === 1) {
      const bad = ['', 'devices/x', '/sys/devices/x', '/devices/../../etc/passwd', '/devices//x', '/devices/x/', '/devices/a\x01b', '/devices/./x', '/devices', '/devices/x\x7f'];
      return serialize(replace(recs, 'DEVPATH', rng.pick(bad)));
    }
    if (variant === 2) return serialize(replace(recs, 'SUBSYSTEM', rng.pick(['', 'us b', 's'.repeat(65), 'usb/x', 'usb\t', 'üsb'])));
    if (variant === 3) {
      const missing = rng.pick(['ACTION', 'DEVPATH', 'SUBSYSTEM', 'SEQNUM']);
      return serialize(recs.filter((r) => r[0] !== missing));
    }
    if (variant === 4) return serialize(insertAt(rng, recs, [rng.pick(['BAD KEY', 'K$', '__proto__', 'K'.repeat(129), 'K/1', 'K:1']), 'x']));
    return serialize(replace(recs, 'SEQNUM', rng.pick(['-1', '', ' '])));
  },
  // A kept key twice (with the same or another value): either could be the lie.
  'duplicate keys': (rng, seq, n) => {
    const recs = validRecs(seq, 'add', n);
    const dup = rng.pick(recs);
    return serialize(insertAt(rng, recs, [dup[0], rng.bool() ? dup[1] : 'other']));
  },
  // SEQNUM beyond u64 (or more than 20 digits) in the content; the name is a valid one.
  'SEQNUM overflow': (rng, seq, n) =>
    serialize(replace(validRecs(seq, 'add', n), 'SEQNUM', rng.pick(['18446744073709551616', '99999999999999999999', `1${'0'.repeat(rng.int(20, 60))}`, `${seq}${'0'.repeat(20)}`]))),
  'SEQNUM not digits': (rng, seq, n) =>
    serialize(replace(validRecs(seq, 'add', n), 'SEQNUM', rng.pick([`${seq}a`, '0x1F', `+${seq}`, ` ${seq}`, `${seq} `, '１２', '1e3', '1.0', '٣', `${seq}\n`]))),
  // Valid content, but the name says another SEQNUM or ACTION.
  'name/content mismatch': (rng, seq, n) => serialize(rng.bool() ? validRecs(seq + 1n, 'add', n) : validRecs(seq, 'remove', n)),
  // Non-ASCII key names (udev names are [A-Za-z0-9_.-]), or in SUBSYSTEM / SEQNUM / ACTION.
  'unicode keys/values': (rng, seq, n) => {
    const u = rng.pick(UNICODE);
    const recs = validRecs(seq, 'add', n);
    const variant = rng.int(0, 3);
    if (variant === 0) return serialize(insertAt(rng, recs, [`ID_${u}`, 'x']));
    if (variant === 1) return serialize(replace(recs, 'SUBSYSTEM', `usb${u}`));
    if (variant === 2) return serialize(replace(recs, 'ACTION', `add${u}`));
    return serialize(replace(recs, 'SEQNUM', `${seq}${u}`));
  },
  // Bytes that are no UTF-8 where they cannot become a valid name or number.
  'invalid UTF-8': (rng, seq, n) => {
    const b = rng.pick(INVALID_UTF8);
    const recs = validRecs(seq, 'add', n);
    const variant = rng.int(0, 3);
    if (variant === 0) return serialize(insertAt(rng, recs, [Buffer.concat([Buffer.from('ID_'), b]), 'x']));
    if (variant === 1) return serialize(replace(recs, 'SUBSYSTEM', Buffer.concat([Buffer.from('usb'), b])));
    if (variant === 2) return serialize(replace(recs, 'SEQNUM', Buffer.concat([Buffer.from(seq.toString()), b])));
    return serialize(replace(recs, 'ACTION', Buffer.concat([Buffer.from('add'), b])));
  },
  // Records that are not KEY=VALUE: no '=', empty key, an empty record in the middle.
  'not KEY=VALUE': (rng, seq, n) => {
    const body = serialize(validRecs(seq, 'add', n));
    const junk = rng.pick(['NOEQUALS', '=value', '', 'just text']);
    const at = rng.int(0, 1) === 0 ? 0 : body.length;
    return Buffer.concat([body.subarray(0, at), Buffer.from(`${junk}\0`), body.subarray(at)]);
  },
};

/** Names the helper never writes (and the daemon must refuse), for regular files. */
function badName(rng: Rng, seq: bigint, i: number): string {
  const digits = seq.toString().padStart(20, '0');
  const variants = [
    `${digits.slice(1)}-add`, // 19 digits
    `0${digits}-add`, // 21 digits
    `${18446744073709551616n + BigInt(i)}-add`, // beyond u64
    `${digits}-ADD`,
    `${digits}-explode`,
    `${digits}add`,
    `${digits}-`,
    `${digits}-add.tmp`,
    `${digits}-add `,
    `+${digits.slice(1)}-add`,
    `${digits}-add\n`,
    `${digits}-ädd`,
    `${digits.slice(0, 10)}日本${digits.slice(12)}-add`,
    `event ${i}`,
    `invalid-${i}-1`,
    `${digits}-add-${'x'.repeat(rng.int(190, 220))}`, // long: the quarantine shortens it
  ];
  return variants[i % variants.length] as string;
}

export interface GarbagePlan {
  /** In the (shuffled) order to write them: each makes one spool entry from a fresh SEQNUM. */
  makers: Array<(seq: bigint, n: number) => Garbage>;
  counts: Record<string, number>;
  /** Creates the FIFOs, sockets and device nodes made so far (they need external commands). */
  flushNonRegular: () => void;
}

/**
 * `total` garbage makers, shuffled: each, given a fresh SEQNUM, creates one entry in `spool`.
 * Non-regular files (FIFOs, sockets, device nodes) are batched through one external command.
 */
export function planGarbage(rng: Rng, spool: string, total: number): GarbagePlan {
  const counts: Record<string, number> = {
    fifo: 20,
    symlink: 40,
    directory: 25,
    'device node': 10,
    socket: 5,
    'bad name': 80,
    'stale dot-file': 30,
    empty: 5,
    truncated: 100,
    'NUL-filled': 60,
    'huge value': 40,
    'huge file': 5,
    'too many keys': 10,
    'wrong types': 120,
    'duplicate keys': 60,
    'SEQNUM overflow': 40,
    'SEQNUM not digits': 50,
    'name/content mismatch': 30,
    'unicode keys/values': 40,
    'invalid UTF-8': 50,
    'not KEY=VALUE': 30,
  };
  const used = Object.values(counts).reduce((a, b) => a + b, 0);
  if (used > total) throw new Error(`garbage plan needs at least ${used} files`);
  counts['random bytes'] = total - used;

  const makers: GarbagePlan['makers'] = [];
  const nonRegular: Array<{ kind: string; path: string }> = [];
  let badNames = 0;
  for (const [kind, count] of Object.entries(counts)) {
    for (let i = 0; i < count; i++) {
      makers.push((seq, n) => {
        const gen = CONTENT[kind];
        if (gen !== undefined) {
          const name = spoolName(seq);
          putWhole(spool, name, gen(rng, seq, n));
          return { name, kind, n };
        }
        const name = kind === 'bad name' ? badName(rng, seq, badNames++) : kind === 'stale dot-file' ? `.${spoolName(seq)}.${rng.int(100, 99_999)}` : spoolName(seq);
        makeSpecial(rng, kind, spool, name, seq, n, nonRegular);
        return { name, kind, n };
      });
    }
  }
  return { makers: rng.shuffle(makers), counts, flushNonRegular: () => flush(nonRegular) };
}

/**
 * Makes `<spool>/<name>` appear whole, as the helper does: written beside the spool, then renamed
 * in. (A file written in place can be read while still empty, and refused as such.)
 */
function putWhole(spool: string, name: string, content: Buffer, ageMs = 0): void {
  const staging = join(spool, '..', 'staging');
  mkdirSync(staging, { recursive: true });
  const tmp = join(staging, 'next');
  writeFileSync(tmp, content);
  if (ageMs > 0) utimesSync(tmp, new Date(Date.now() - ageMs), new Date(Date.now() - ageMs));
  renameSync(tmp, join(spool, name));
}

function makeSpecial(rng: Rng, kind: string, spool: string, name: string, seq: bigint, n: number, nonRegular: Array<{ kind: string; path: string }>): void {
  const path = join(spool, name);
  switch (kind) {
    case 'bad name':
    case 'stale dot-file':
      // Even a complete, valid event is refused under such a name.
      // A stale dot-file is a helper that died mid-write long ago (the daemon waits 60 s before judging).
      putWhole(spool, name, rng.bool() ? serialize(validRecs(seq, 'add', n)) : rng.bytes(rng.int(1, 300)), kind === 'stale dot-file' ? rng.int(61_000, 86_400_000) : 0);
      return;
    case 'symlink': {
      const outside = join(spool, '..', `outside-${name}`);
      const target = rng.pick(['/etc/shadow', '/dev/zero', '/nonexistent/x', name, '/tmp', outside]);
      if (target === outside) writeFileSync(outside, serialize(validRecs(seq, 'add', n))); // a valid event behind the link
      symlinkSync(target, path);
      return;
    }
    case 'directory':
      mkdirSync(path);
      if (rng.bool()) writeFileSync(join(path, spoolName(seq)), serialize(validRecs(seq, 'add', n)));
      return;
    default:
      nonRegular.push({ kind, path });
  }
}

/** Creates the FIFOs, sockets and device nodes queued so far (three commands, not hundreds). */
function flush(queue: Array<{ kind: string; path: string }>): void {
  const batch = queue.splice(0);
  const of = (k: string): string[] => batch.filter((b) => b.kind === k).map((b) => b.path);
  const run = (cmd: string, args: string[]): void => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  };
  if (of('fifo').length > 0) run('mkfifo', of('fifo'));
  for (const [i, p] of of('device node').entries()) {
    // /dev/null, /dev/zero, /dev/random, and a block device: never to be opened by the daemon.
    const [type, major, minor] = (['c 1 3', 'c 1 5', 'c 1 8', 'b 7 0'][i % 4] as string).split(' ') as [string, string, string];
    run('mknod', [p, type, major, minor]);
  }
  // Bound, then the process exits without unlinking: a socket file stays behind.
  if (of('socket').length > 0) run(process.execPath, ['-e', "const net=require('net');let n=0;const ps=process.argv.slice(1);for(const p of ps)net.createServer().listen(p,()=>{if(++n===ps.length)process.exit(0)})", ...of('socket')]);
}
