import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readBootId } from '../../src/devices/boot.js';
import { DeviceTable } from '../../src/devices/table.js';
import type { DeviceAction, DeviceEvent } from '../../src/devices/types.js';
import { ErrorCode, isHmdError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';

const SUBS = ['usb', 'tty', 'block', 'hidraw', 'video4linux', 'sound'];
const BOOT = '11111111-2222-3333-4444-555555555555';
const USB = '/devices/pci0000:00/0000:00:14.0/usb1/1-2';
const TTY = `${USB}/1-2:1.0/ttyUSB0/tty/ttyUSB0`;

function table(bootId = BOOT, maxTombstones?: number): DeviceTable {
  return new DeviceTable({ subsystems: SUBS, bootId, logger: silentLogger(), maxTombstones });
}

function ev(action: DeviceAction, seq: number | null, devpath = USB, extra: Record<string, string> = {}): DeviceEvent {
  const subsystem = devpath.includes('/tty/') ? 'tty' : 'usb';
  const properties: Record<string, string> = { ACTION: action, DEVPATH: devpath, SUBSYSTEM: subsystem, ...extra };
  if (subsystem === 'usb') properties['DEVTYPE'] = 'usb_device';
  if (seq !== null) properties['SEQNUM'] = String(seq);
  return { action, devpath, subsystem, seqnum: seq === null ? null : BigInt(seq), properties, source: 'spool' };
}

describe('DeviceTable.apply', () => {
  it('inserts on the first add and only updates on a repeated add', () => {
    const t = table();
    const n = t.apply(ev('add', 10, USB, { ID_MODEL: 'a' }));
    expect(n).toEqual({ kind: 'insert', deviceId: USB, properties: expect.objectContaining({ ID_MODEL: 'a', SEQNUM: '10' }) });
    expect(t.apply(ev('add', 11, USB, { ID_MODEL: 'b' }))).toBeNull();
    expect(t.size).toBe(1);
    expect(t.get(USB)?.properties['ID_MODEL']).toBe('b');
  });

  it('change/bind/unbind update properties without a notification', () => {
    const t = table();
    t.apply(ev('add', 10, USB, { ID_MODEL: 'a', OLD: '1' }));
    expect(t.apply(ev('change', 11, USB, { ID_MODEL: 'b' }))).toBeNull();
    expect(t.apply(ev('bind', 12, USB, { ID_MODEL: 'c' }))).toBeNull();
    expect(t.apply(ev('unbind', 13, USB, { ID_MODEL: 'd' }))).toBeNull();
    expect(t.get(USB)?.properties).toEqual(expect.objectContaining({ ID_MODEL: 'd', ACTION: 'unbind' }));
    // udev sends the whole set each time: a key the change no longer has is gone
    expect(t.get(USB)?.properties['OLD']).toBeUndefined();
  });

  it('a remove carries the last known properties, with its own ACTION and SEQNUM', () => {
    const t = table();
    t.apply(ev('add', 10, USB, { ID_MODEL: 'a', ID_SERIAL: 's1' }));
    t.apply(ev('change', 11, USB, { ID_MODEL: 'b', ID_SERIAL: 's1' }));
    const n = t.apply(ev('remove', 12, USB));
    expect(n).toEqual({
      kind: 'remove',
      deviceId: USB,
      properties: { ACTION: 'remove', DEVPATH: USB, SUBSYSTEM: 'usb', DEVTYPE: 'usb_device', SEQNUM: '12', ID_MODEL: 'b', ID_SERIAL: 's1' },
    });
    expect(t.size).toBe(0);
    expect(t.apply(ev('remove', 13, USB))).toBeNull();
  });

  it('ignores a stale SEQNUM for the same device', () => {
    const t = table();
    t.apply(ev('add', 10, USB, { ID_MODEL: 'a' }));
    t.apply(ev('change', 20, USB, { ID_MODEL: 'new' }));
    expect(t.apply(ev('change', 15, USB, { ID_MODEL: 'old' }))).toBeNull();
    expect(t.apply(ev('add', 20, USB, { ID_MODEL: 'dup' }))).toBeNull();
    expect(t.get(USB)?.properties['ID_MODEL']).toBe('new');
  });

  it('SEQNUM order is per device: an older event of another device still applies', () => {
    const t = table();
    t.apply(ev('add', 50, USB));
    expect(t.apply(ev('add', 40, TTY))?.kind).toBe('insert');
  });

  it('a tombstone stops a late add from resurrecting a removed device', () => {
    const t = table();
    t.apply(ev('add', 10, USB));
    t.apply(ev('remove', 12, USB));
    expect(t.apply(ev('add', 11, USB))).toBeNull();
    expect(t.size).toBe(0);
    // a genuinely new plug (higher SEQNUM) comes back
    expect(t.apply(ev('add', 13, USB))?.kind).toBe('insert');
  });

  it('a remove that overtakes its add leaves a tombstone too', () => {
    const t = table();
    expect(t.apply(ev('remove', 21, USB))).toBeNull();
    expect(t.apply(ev('add', 20, USB))).toBeNull();
    expect(t.size).toBe(0);
  });

  it('keeps tombstones bounded, oldest dropped first', () => {
    const t = table(BOOT, 3);
    for (let i = 0; i < 5; i++) t.apply(ev('remove', 100 + i, `${USB}${i}`));
    // the two oldest were forgotten: their late adds get in; the newer ones do not
    expect(t.apply(ev('add', 1, `${USB}0`))?.kind).toBe('insert');
    expect(t.apply(ev('add', 1, `${USB}1`))?.kind).toBe('insert');
    expect(t.apply(ev('add', 1, `${USB}2`))).toBeNull();
    expect(t.apply(ev('add', 1, `${USB}4`))).toBeNull();
  });

  it('ignores devices not of interest, and events of unknown devices other than add', () => {
    const t = table();
    const iface: DeviceEvent = { ...ev('add', 1, `${USB}/1-2:1.0`), properties: { ...ev('add', 1).properties, DEVTYPE: 'usb_interface' } };
    expect(t.apply(iface)).toBeNull();
    const vc: DeviceEvent = { ...ev('add', 2, '/devices/virtual/tty/tty1') };
    expect(t.apply(vc)).toBeNull();
    expect(t.apply(ev('change', 3, TTY))).toBeNull();
    expect(t.size).toBe(0);
  });

  it('a move re-keys the device from DEVPATH_OLD without a notification', () => {
    const t = table();
    const oldPath = `${USB}/1-2:1.0/tty/ttyACM0`;
    const newPath = `${USB}/1-2:1.0/tty/ttyACM1`;
    t.apply(ev('add', 10, oldPath));
    expect(t.apply(ev('move', 11, newPath, { DEVPATH_OLD: oldPath }))).toBeNull();
    expect(t.get(oldPath)).toBeUndefined();
    expect(t.get(newPath)?.properties['DEVPATH_OLD']).toBe(oldPath);
    expect(t.apply(ev('remove', 12, newPath))?.deviceId).toBe(newPath);
  });

  it('setSubsystems changes what new devices are reported for; known ones stay until removed', () => {
    const t = table();
    t.apply(ev('add', 1, TTY));
    t.setSubsystems(['usb']);
    expect(t.apply(ev('add', 2, `${USB}/1-2:1.1/ttyUSB1/tty/ttyUSB1`))).toBeNull();
    expect(t.apply(ev('remove', 3, TTY))?.kind).toBe('remove');
    t.setSubsystems(['tty']);
    expect(t.apply(ev('add', 4, USB))).toBeNull();
    expect(t.apply(ev('add', 5, TTY))?.kind).toBe('insert');
  });

  it('coldplugged devices (no SEQNUM) accept any later live event', () => {
    const t = table();
    t.reconcile([{ id: USB, properties: { DEVPATH: USB, SUBSYSTEM: 'usb', DEVTYPE: 'usb_device' } }]);
    expect(t.apply(ev('change', 1, USB, { X: '1' }))).toBeNull();
    expect(t.get(USB)?.properties['X']).toBe('1');
    expect(t.apply(ev('remove', 2, USB))?.kind).toBe('remove');
  });
});

describe('DeviceTable.reconcile', () => {
  const present = (id: string, extra: Record<string, string> = {}) => ({
    id,
    properties: { DEVPATH: id, SUBSYSTEM: id.includes('/tty/') ? 'tty' : 'usb', DEVTYPE: 'usb_device', ...extra },
  });

  it('removes vanished devices with their last properties and inserts new ones', () => {
    const t = table();
    const gone = '/devices/pci0000:00/0000:00:14.0/usb1/1-3';
    t.apply(ev('add', 10, gone, { ID_MODEL: 'stick' }));
    t.apply(ev('add', 11, USB, { ID_MODEL: 'kept' }));
    const notes = t.reconcile([present(USB, { ID_MODEL: 'refreshed' }), present(TTY)]);
    expect(notes).toEqual([
      {
        kind: 'remove',
        deviceId: gone,
        properties: { ACTION: 'remove', DEVPATH: gone, SUBSYSTEM: 'usb', DEVTYPE: 'usb_device', ID_MODEL: 'stick' },
      },
      { kind: 'insert', deviceId: TTY, properties: present(TTY).properties },
    ]);
    expect(t.get(USB)?.properties['ID_MODEL']).toBe('refreshed');
    expect(t.list().map((d) => d.id).sort()).toEqual([USB, TTY].sort());
    // the vanished device is tombstoned: its own late add cannot bring it back
    expect(t.apply(ev('add', 9, gone))).toBeNull();
  });

  it('inserts parents before children and removes children before parents', () => {
    const t = table();
    const ins = t.reconcile([present(TTY), present(USB)]);
    expect(ins.map((n) => n.deviceId)).toEqual([USB, TTY]);
    const rem = t.reconcile([]);
    expect(rem.map((n) => [n.kind, n.deviceId])).toEqual([
      ['remove', TTY],
      ['remove', USB],
    ]);
  });

  it('skips present devices that are not of interest', () => {
    const t = table();
    expect(t.reconcile([{ id: '/devices/virtual/tty/tty1', properties: { DEVPATH: '/devices/virtual/tty/tty1', SUBSYSTEM: 'tty' } }])).toEqual([]);
  });
});

describe('DeviceTable state', () => {
  it('round-trips through JSON, SEQNUMs and tombstones included', () => {
    const t = table();
    t.apply(ev('add', 10, USB, { ID_MODEL: 'a' }));
    t.apply(ev('add', 5, TTY));
    t.apply(ev('remove', 7, TTY));
    const json = JSON.parse(JSON.stringify(t.serialize())) as unknown;
    expect(json).toMatchObject({ version: 1, bootId: BOOT });
    const r = DeviceTable.restore(json, { subsystems: SUBS, bootId: BOOT, logger: silentLogger() });
    expect(r.list()).toEqual(t.list());
    expect(r.apply(ev('change', 9, USB, { ID_MODEL: 'stale' }))).toBeNull();
    expect(r.get(USB)?.properties['ID_MODEL']).toBe('a');
    expect(r.apply(ev('add', 6, TTY))).toBeNull(); // tombstone survived
  });

  it('drops SEQNUMs and tombstones saved in another boot, keeps the devices', () => {
    const t = table();
    t.apply(ev('add', 1000, USB));
    t.apply(ev('remove', 2000, TTY));
    const r = DeviceTable.restore(t.serialize(), { subsystems: SUBS, bootId: 'another-boot', logger: silentLogger() });
    expect(r.size).toBe(1);
    // after a reboot SEQNUMs restart low: these must apply
    expect(r.apply(ev('change', 3, USB, { X: 'new boot' }))).toBeNull();
    expect(r.get(USB)?.properties['X']).toBe('new boot');
    expect(r.apply(ev('add', 4, TTY))?.kind).toBe('insert');
    expect(r.bootId).toBe('another-boot');
  });

  it.each<[string, unknown]>([
    ['null', null],
    ['a string', 'garbage'],
    ['an unknown version', { version: 99, bootId: BOOT, devices: [], tombstones: [] }],
    ['no version', { bootId: BOOT, devices: [], tombstones: [] }],
    ['a bad devpath', { version: 1, bootId: BOOT, devices: [{ id: '../etc', properties: {}, seqnum: null }], tombstones: [] }],
    ['a bad seqnum', { version: 1, bootId: BOOT, devices: [{ id: USB, properties: {}, seqnum: 'x' }], tombstones: [] }],
    ['a non-string property', { version: 1, bootId: BOOT, devices: [{ id: USB, properties: { A: 1 }, seqnum: null }], tombstones: [] }],
    ['a device twice', { version: 1, bootId: BOOT, devices: [{ id: USB, properties: {}, seqnum: null }, { id: USB, properties: {}, seqnum: null }], tombstones: [] }],
    ['missing tombstones', { version: 1, bootId: BOOT, devices: [] }],
  ])('restore of %s throws STATE_CORRUPT', (_name, json) => {
    let caught: unknown;
    try {
      DeviceTable.restore(json, { subsystems: SUBS, bootId: BOOT, logger: silentLogger() });
    } catch (err) {
      caught = err;
    }
    expect(isHmdError(caught, ErrorCode.StateCorrupt)).toBe(true);
  });
});

describe('readBootId', () => {
  it('reads the kernel boot id, and falls back to a fresh random id', () => {
    const root = mkdtempSync(join(tmpdir(), 'hmd-boot-'));
    mkdirSync(join(root, 'sys/kernel/random'), { recursive: true });
    writeFileSync(join(root, 'sys/kernel/random/boot_id'), `${BOOT}\n`);
    expect(readBootId(root)).toBe(BOOT);
    const missing = readBootId(join(root, 'nope'));
    expect(missing).toMatch(/^unknown-/);
    expect(readBootId(join(root, 'nope'))).not.toBe(missing);
    expect(readBootId()).toMatch(/^[0-9a-f-]{36}$/);
  });
});
