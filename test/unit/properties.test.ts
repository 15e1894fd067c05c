import { describe, expect, it } from 'vitest';
import { ErrorCode, isHmdError } from '../../src/errors.js';
import {
  LIMITS,
  cleanProperties,
  entriesToRecord,
  parseDeviceProperties,
  parseEventRecord,
  parseNulRecords,
} from '../../src/sources/properties.js';

const base = {
  ACTION: 'add',
  DEVPATH: '/devices/pci0000:00/0000:00:14.0/usb1/1-2',
  SUBSYSTEM: 'usb',
  SEQNUM: '4711',
  DEVTYPE: 'usb_device',
};

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isHmdError(err, ErrorCode.SpoolInvalid)) return err.message;
    throw err;
  }
  throw new Error('did not throw');
}

describe('cleanProperties', () => {
  it('drops HMD_ keys and shell variables, keeps udev keys including lowercase ones', () => {
    const raw = {
      ...base,
      HMD_SPOOL_DIR: '/x',
      HMD_SEQUENCE: '9',
      PATH: '/bin',
      PWD: '/',
      OLDPWD: '/tmp',
      SHLVL: '1',
      _: '/usr/bin/env',
      HOME: '/root',
      TERM: 'xterm',
      IFS: ' ',
      PS1: '$ ',
      PS4: '+ ',
      OPTIND: '1',
      PPID: '1',
      LINENO: '3',
      LC_ALL: 'C',
      BASH_VERSION: '5',
      'net.ifnames': '0',
      ID_VENDOR_ID: '0403',
      hmd_lower: 'kept: the namespace is upper-case HMD_',
    };
    expect(cleanProperties(raw)).toEqual({ ...base, 'net.ifnames': '0', ID_VENDOR_ID: '0403', hmd_lower: raw.hmd_lower });
  });

  it('keeps a __proto__ key as data without touching the prototype', () => {
    const raw = JSON.parse('{"__proto__":"x","A":"1"}') as Record<string, string>;
    const out = cleanProperties(raw);
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.keys(out)).toEqual(['__proto__', 'A']);
  });
});

describe('parseNulRecords', () => {
  it('reads env -0 output with values holding spaces, =, quotes, newlines and UTF-8', () => {
    const buf = Buffer.from('A=1\0B=x = y "q" \'s\'\nline2\0C=Grüße ✓\0EMPTY=\0');
    expect(parseNulRecords(buf)).toEqual([
      ['A', '1'],
      ['B', 'x = y "q" \'s\'\nline2'],
      ['C', 'Grüße ✓'],
      ['EMPTY', ''],
    ]);
  });

  it('tolerates a missing final NUL; turns invalid UTF-8 into U+FFFD', () => {
    expect(parseNulRecords(Buffer.from('A=1'))).toEqual([['A', '1']]);
    const bad = Buffer.concat([Buffer.from('A=x'), Buffer.from([0xff, 0xfe]), Buffer.from('\0')]);
    expect(parseNulRecords(bad)).toEqual([['A', 'x\uFFFD\uFFFD']]);
  });

  it.each([
    ['empty file', Buffer.alloc(0), /empty/],
    ['record without =', Buffer.from('A=1\0garbage\0'), /record 2 is not KEY=VALUE/],
    ['empty key', Buffer.from('=v\0'), /record 1 is not KEY=VALUE/],
    ['two NULs in a row', Buffer.from('A=1\0\0B=2\0'), /record 2/],
    ['over 64 KiB', Buffer.alloc(LIMITS.fileBytes + 1, 0x41), /larger than/],
  ])('rejects %s', (_name, buf, re) => {
    expect(reasonOf(() => parseNulRecords(buf))).toMatch(re);
  });
});

describe('entriesToRecord', () => {
  it('rejects a duplicate udev key', () => {
    expect(reasonOf(() => entriesToRecord([['A', '1'], ['A', '2']]))).toMatch(/duplicate key "A"/);
  });

  it('never rejects because of HMD_ keys or shell variables, even repeated ones', () => {
    expect(
      entriesToRecord([
        ['HMD_X', '1'],
        ['HMD_X', '2'],
        ['PATH', '/a'],
        ['PATH', '/b'],
        ['A', '1'],
      ]),
    ).toEqual({ A: '1' });
  });

  it('bounds the number of kept keys', () => {
    const many = Array.from({ length: LIMITS.keys + 1 }, (_, i) => [`K${i}`, 'v'] as const);
    expect(reasonOf(() => entriesToRecord(many))).toMatch(/more than 512 properties/);
    expect(Object.keys(entriesToRecord(many.slice(0, LIMITS.keys)))).toHaveLength(LIMITS.keys);
  });
});

describe('parseEventRecord', () => {
  it('builds a DeviceEvent with a bigint SEQNUM and the cleaned properties', () => {
    const e = parseEventRecord({ ...base, HMD_SPOOL_DIR: '/run/x', PWD: '/' }, 'spool');
    expect(e).toEqual({
      action: 'add',
      devpath: base.DEVPATH,
      subsystem: 'usb',
      seqnum: 4711n,
      properties: base,
      source: 'spool',
    });
  });

  it('accepts the largest u64 SEQNUM and every udev action', () => {
    expect(parseEventRecord({ ...base, SEQNUM: '18446744073709551615' }, 'udevadm').seqnum).toBe(18446744073709551615n);
    for (const action of ['add', 'remove', 'change', 'bind', 'unbind', 'move', 'online', 'offline']) {
      expect(parseEventRecord({ ...base, ACTION: action }, 'spool').action).toBe(action);
    }
  });

  // Hostile and broken input: each must be refused with a reason naming the problem.
  it.each<[string, Record<string, string>, RegExp]>([
    ['missing ACTION', { ...base, ACTION: undefined as unknown as string }, /ACTION: missing/],
    ['unknown ACTION', { ...base, ACTION: 'explode' }, /ACTION: not one of add\|remove/],
    ['missing DEVPATH', { ...base, DEVPATH: undefined as unknown as string }, /DEVPATH: missing/],
    ['DEVPATH outside /devices', { ...base, DEVPATH: '/etc/passwd' }, /DEVPATH: does not start with \/devices\//],
    ['DEVPATH with ..', { ...base, DEVPATH: '/devices/../etc' }, /DEVPATH: has an empty, \. or \.\. path segment/],
    ['DEVPATH with //', { ...base, DEVPATH: '/devices//usb1' }, /empty/],
    ['DEVPATH ending in /', { ...base, DEVPATH: '/devices/usb1/' }, /empty/],
    ['DEVPATH with newline', { ...base, DEVPATH: '/devices/usb1\nX=1' }, /control character/],
    ['DEVPATH with NUL', { ...base, DEVPATH: '/devices/usb1\0' }, /control character/],
    ['missing SUBSYSTEM', { ...base, SUBSYSTEM: undefined as unknown as string }, /SUBSYSTEM: missing/],
    ['SUBSYSTEM with a slash', { ...base, SUBSYSTEM: 'usb/../x' }, /SUBSYSTEM: not a subsystem name/],
    ['missing SEQNUM', { ...base, SEQNUM: undefined as unknown as string }, /SEQNUM: missing/],
    ['negative SEQNUM', { ...base, SEQNUM: '-1' }, /SEQNUM: not a decimal/],
    ['hex SEQNUM', { ...base, SEQNUM: '0x10' }, /SEQNUM: not a decimal/],
    ['SEQNUM over u64', { ...base, SEQNUM: '18446744073709551616' }, /SEQNUM: does not fit in 64 bits/],
    ['SEQNUM of 21 digits', { ...base, SEQNUM: '100000000000000000000' }, /SEQNUM: not a decimal/],
    ['value over 4 KiB', { ...base, BIG: 'x'.repeat(LIMITS.valueBytes + 1) }, /BIG: value longer than 4096 bytes/],
    ['multi-byte value over 4 KiB', { ...base, BIG: 'é'.repeat(2049) }, /value longer than 4096 bytes/],
    ['bad key name', { ...base, 'A B': '1' }, /key name not of/],
    ['key with =', { ...base, 'A=B': '1' }, /key name not of/],
    ['over-long key', { ...base, ['K'.repeat(200)]: '1' }, /key longer than/],
  ])('rejects %s', (_name, raw, re) => {
    const clean = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
    expect(reasonOf(() => parseEventRecord(clean, 'spool'))).toMatch(re);
  });

  it('refuses an own __proto__ key, from a record or from KEY=VALUE pairs', () => {
    const raw = JSON.parse(`{"__proto__":"${'p'.repeat(20_000)}"}`) as Record<string, string>;
    expect(reasonOf(() => parseEventRecord({ ...base, ...raw }, 'spool'))).toMatch(/__proto__/);
    expect(reasonOf(() => entriesToRecord([['__proto__', 'x']]))).toMatch(/__proto__/);
  });

  it('accepts a value of exactly 4 KiB and an HMD_ value of any size', () => {
    expect(parseEventRecord({ ...base, OK: 'x'.repeat(LIMITS.valueBytes) }, 'spool').properties['OK']).toHaveLength(4096);
    expect(parseEventRecord({ ...base, HMD_HUGE: 'x'.repeat(100_000), 'HMD_bad key': '' }, 'spool').properties).toEqual(base);
  });
});

describe('parseDeviceProperties', () => {
  it('needs DEVPATH and SUBSYSTEM only and drops SEQNUM (coldplug carries none)', () => {
    const p = parseDeviceProperties({ DEVPATH: '/devices/platform/serial8250/tty/ttyS1', SUBSYSTEM: 'tty', SEQNUM: '5', HMD_X: '1' });
    expect(p).toEqual({ DEVPATH: '/devices/platform/serial8250/tty/ttyS1', SUBSYSTEM: 'tty' });
    expect(reasonOf(() => parseDeviceProperties({ SUBSYSTEM: 'tty' }))).toMatch(/DEVPATH: missing/);
  });
});
