import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addEvents, fixturesDir, listFixtures, loadFixture, removeEvents, type FixtureEvent } from '../../src/devices/fixtures.js';
import { ErrorCode, isHmdError } from '../../src/errors.js';
import { parseExportDb } from '../../src/sources/exportdb.js';

const EXPECTED = [
  'aeotec-zstick-gen5',
  'broadcom-bcm20702a0-bluetooth',
  'cp210x-cp2102',
  'ftdi-ft232r',
  'logitech-c920-webcam',
  'logitech-usb-headset',
  'sandisk-ultra-fit-flash',
  'sonoff-zbdongle-p',
];

const isBelow = (child: string, parent: string): boolean => child.startsWith(`${parent}/`);

describe('fixtures/', () => {
  it('lists every hub device fixture', () => {
    expect(listFixtures()).toEqual(expect.arrayContaining(EXPECTED));
  });

  describe.each(EXPECTED)('%s', (name) => {
    const fx = loadFixture(name);

    it('has ACTION=add, DEVPATH and SUBSYSTEM on every event, no SEQNUM, unique DEVPATHs', () => {
      expect(fx.name).toBe(name);
      for (const ev of fx.events) {
        expect(ev.ACTION).toBe('add');
        expect(ev.DEVPATH).toMatch(/^\/devices\//);
        expect(ev.SUBSYSTEM).toMatch(/^[a-z0-9_-]+$/);
        expect(ev).not.toHaveProperty('SEQNUM');
      }
      expect(new Set(fx.events.map((e) => e.DEVPATH)).size).toBe(fx.events.length);
    });

    it('starts with the usb_device, every other node below it, each parent before its children', () => {
      const [root, ...rest] = fx.events;
      expect(root?.SUBSYSTEM).toBe('usb');
      expect(root?.DEVTYPE).toBe('usb_device');
      fx.events.forEach((ev, i) => {
        if (i > 0) expect(isBelow(ev.DEVPATH, root?.DEVPATH ?? '?')).toBe(true);
        for (const later of fx.events.slice(i + 1)) expect(isBelow(ev.DEVPATH, later.DEVPATH)).toBe(false);
      });
      // Every node's nearest listed ancestor is a real parent chain: nothing dangles.
      for (const ev of rest) expect(fx.events.some((p) => isBelow(ev.DEVPATH, p.DEVPATH))).toBe(true);
    });

    it('lays out the usb_device as the kernel does (DEVNAME, MINOR, PRODUCT)', () => {
      const dev = fx.events[0] as FixtureEvent;
      const bus = Number(dev.BUSNUM);
      const num = Number(dev.DEVNUM);
      expect(dev.DEVNAME).toBe(`/dev/bus/usb/${dev.BUSNUM}/${dev.DEVNUM}`);
      expect(dev.MAJOR).toBe('189');
      expect(Number(dev.MINOR)).toBe((bus - 1) * 128 + num - 1);
      const [vid, pid] = (dev.PRODUCT ?? '').split('/');
      expect(parseInt(vid ?? '', 16)).toBe(parseInt(dev.ID_VENDOR_ID ?? '', 16));
      expect(parseInt(pid ?? '', 16)).toBe(parseInt(dev.ID_MODEL_ID ?? '', 16));
      for (const ifc of fx.events.filter((e) => e.DEVTYPE === 'usb_interface')) {
        expect(ifc.PRODUCT).toBe(dev.PRODUCT);
        expect(ifc.MODALIAS?.toLowerCase()).toMatch(new RegExp(`^usb:v${dev.ID_VENDOR_ID}p${dev.ID_MODEL_ID}d`));
        expect(ifc.DEVPATH).toMatch(/:1\.\d+$/);
      }
    });

    it('gives the device nodes below it the usb_device identity', () => {
      const dev = fx.events[0] as FixtureEvent;
      for (const ev of fx.events.filter((e) => e.ID_SERIAL !== undefined && e.SUBSYSTEM !== 'usb')) {
        expect(ev.ID_VENDOR_ID).toBe(dev.ID_VENDOR_ID);
        expect(ev.ID_MODEL_ID).toBe(dev.ID_MODEL_ID);
        expect(ev.ID_SERIAL?.startsWith(dev.ID_SERIAL ?? '?')).toBe(true);
      }
    });

    it('removes children first with ACTION=remove and the same properties', () => {
      const adds = addEvents(fx);
      const removes = removeEvents(fx);
      expect(removes).toHaveLength(adds.length);
      removes.forEach((rm, i) => {
        const add = adds[adds.length - 1 - i] as FixtureEvent;
        expect(rm).toEqual({ ...add, ACTION: 'remove' });
      });
      removes.forEach((rm, i) => {
        for (const later of removes.slice(i + 1)) expect(isBelow(later.DEVPATH, rm.DEVPATH)).toBe(false);
      });
      // The loaded fixture itself is untouched.
      expect(fx.events.every((e) => e.ACTION === 'add')).toBe(true);
    });
  });

  it('copies every recorded node unchanged (checked with the project parser)', () => {
    const recDir = join(fixturesDir(), 'recordings');
    for (const name of EXPECTED.filter((n) => n !== 'sonoff-zbdongle-p')) {
      const recorded = parseExportDb(readFileSync(join(recDir, `${name}.udev`), 'utf8'));
      expect(recorded.length).toBeGreaterThan(0);
      const byPath = new Map(loadFixture(name).events.map((e) => [e.DEVPATH, e]));
      for (const node of recorded) expect(byPath.get(node.devpath)).toEqual({ ACTION: 'add', ...node.properties });
    }
  });

  it('holds the function devices the hub cares about', () => {
    const subsystems = (n: string): string[] => loadFixture(n).events.map((e) => `${e.SUBSYSTEM}${e.DEVTYPE ? `:${e.DEVTYPE}` : ''}`);
    const kernels = (n: string): string[] => loadFixture(n).events.map((e) => e.DEVPATH.slice(e.DEVPATH.lastIndexOf('/') + 1));
    expect(subsystems('ftdi-ft232r')).toEqual(['usb:usb_device', 'usb:usb_interface', 'usb-serial', 'tty']);
    expect(subsystems('cp210x-cp2102')).toEqual(['usb:usb_device', 'usb:usb_interface', 'usb-serial', 'tty']);
    expect(subsystems('sonoff-zbdongle-p')).toEqual(['usb:usb_device', 'usb:usb_interface', 'usb-serial', 'tty']);
    expect(kernels('aeotec-zstick-gen5')).toContain('ttyACM0');
    expect(subsystems('sandisk-ultra-fit-flash')).toEqual(expect.arrayContaining(['block:disk', 'block:partition', 'scsi:scsi_device']));
    expect(subsystems('logitech-c920-webcam')).toEqual(expect.arrayContaining(['video4linux', 'sound']));
    expect(subsystems('logitech-usb-headset')).toEqual(expect.arrayContaining(['sound', 'hidraw']));
    expect(subsystems('broadcom-bcm20702a0-bluetooth')).toEqual(expect.arrayContaining(['bluetooth:host']));
    expect(loadFixture('sonoff-zbdongle-p').events[0]?.ID_MODEL).toBe('Sonoff_Zigbee_3.0_USB_Dongle_Plus');
  });

  it('are what build.mjs makes of the recordings (committed JSON not stale)', () => {
    // Throws (exit 1) when a fixture or the README table differs from a fresh build.
    execFileSync(process.execPath, [join(fixturesDir(), 'build.mjs'), '--check'], { stdio: 'pipe' });
  });
});

describe('loadFixture rejects what is not a fixture', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hmd-fixtures-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const usb = { ACTION: 'add', DEVPATH: '/devices/pci0000:00/usb1/1-1', SUBSYSTEM: 'usb' };
  const tty = { ACTION: 'add', DEVPATH: '/devices/pci0000:00/usb1/1-1/1-1:1.0/tty/ttyACM0', SUBSYSTEM: 'tty' };
  const write = (name: string, body: unknown): string => {
    const file = join(dir, `${name}.json`);
    writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body));
    return file;
  };
  const rejection = (fn: () => unknown): string => {
    try {
      fn();
    } catch (err) {
      expect(isHmdError(err, ErrorCode.InvalidArgs)).toBe(true);
      return (err as Error).message;
    }
    throw new Error('accepted');
  };

  it('accepts a minimal valid one by path', () => {
    const fx = loadFixture(write('ok', { name: 'ok', description: 'd', events: [usb, tty] }));
    expect(fx.events.map((e) => e.SUBSYSTEM)).toEqual(['usb', 'tty']);
  });

  it.each([
    ['child before parent', { name: 'x', description: 'd', events: [tty, usb] }, /before its parent/],
    ['a DEVPATH twice', { name: 'x', description: 'd', events: [usb, usb] }, /listed twice/],
    ['a SEQNUM', { name: 'x', description: 'd', events: [{ ...usb, SEQNUM: '5' }] }, /SEQNUM must not be recorded/],
    ['an HMD_ key', { name: 'x', description: 'd', events: [{ ...usb, HMD_SEQUENCE: '1' }] }, /HMD_SEQUENCE/],
    ['a remove', { name: 'x', description: 'd', events: [{ ...usb, ACTION: 'remove' }] }, /ACTION must be "add"/],
    ['no SUBSYSTEM', { name: 'x', description: 'd', events: [{ ACTION: 'add', DEVPATH: '/devices/a' }] }, /SUBSYSTEM missing/],
    ['a DEVPATH outside /devices', { name: 'x', description: 'd', events: [{ ...usb, DEVPATH: '/sys/x' }] }, /DEVPATH must start/],
    ['a non-string value', { name: 'x', description: 'd', events: [{ ...usb, MINOR: 3 }] }, /invalid/],
    ['no events', { name: 'x', description: 'd', events: [] }, /invalid/],
    ['an unknown top-level key', { name: 'x', description: 'd', events: [usb], extra: 1 }, /invalid/],
  ])('rejects %s', (label, body, message) => {
    expect(rejection(() => loadFixture(write(label.replace(/\W+/g, '-'), body)))).toMatch(message);
  });

  it('rejects broken JSON, unknown names and odd names', () => {
    expect(rejection(() => loadFixture(write('broken', '{"name":')))).toMatch(/not JSON/);
    expect(rejection(() => loadFixture('no-such-device'))).toMatch(/known: .*ftdi-ft232r/);
    expect(rejection(() => loadFixture('..'))).toMatch(/invalid fixture name/);
  });
});
