import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { enumeratePresent } from '../../src/sources/coldplug.js';

const SUBS = ['usb', 'tty', 'block', 'hidraw', 'video4linux', 'sound'];
const U = '/devices/pci0000:00/0000:00:14.0/usb1/1-1';

// Trimmed from a real `udevadm info --export-db` (flash drive, headset), plus noise around it.
const EXPORT_DB = `P: /devices/LNXSYSTM:00
E: DEVPATH=/devices/LNXSYSTM:00
E: SUBSYSTEM=acpi

P: ${U}
N: bus/usb/001/004
E: BUSNUM=001
E: DEVNAME=/dev/bus/usb/001/004
E: DEVNUM=004
E: DEVPATH=${U}
E: DEVTYPE=usb_device
E: ID_MODEL_ENC=Ultra\\x20Fit
E: ID_VENDOR_ID=0781
E: SUBSYSTEM=usb
E: net.ifnames=0

P: ${U}/1-1:1.0
E: DEVPATH=${U}/1-1:1.0
E: DEVTYPE=usb_interface
E: SUBSYSTEM=usb

P: ${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/block/sda
N: sda
E: DEVNAME=/dev/sda
E: DEVPATH=${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/block/sda
E: DEVTYPE=disk
E: SUBSYSTEM=block

P: ${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/block/sda/sda1
E: DEVPATH=${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/block/sda/sda1
E: DEVTYPE=partition
E: ID_FS_LABEL=INSTALLER
E: SUBSYSTEM=block
E: SEQNUM=77
E: HMD_INJECTED=1

P: ${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/bsg/1:0:0:0
E: DEVPATH=${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/bsg/1:0:0:0
E: SUBSYSTEM=bsg

P: /devices/virtual/block/loop0
E: DEVPATH=/devices/virtual/block/loop0
E: DEVTYPE=disk
E: SUBSYSTEM=block

P: /devices/pnp0/00:04/tty/ttyS0
E: DEVNAME=/dev/ttyS0
E: DEVPATH=/devices/pnp0/00:04/tty/ttyS0
E: SUBSYSTEM=tty

P: /devices/virtual/tty/tty1
E: DEVPATH=/devices/virtual/tty/tty1
E: SUBSYSTEM=tty

P: /devices/pci0000:00/0000:00:1a.0/usb2/2-1/2-1:1.0/sound/card1
E: DEVPATH=/devices/pci0000:00/0000:00:1a.0/usb2/2-1/2-1:1.0/sound/card1
E: SOUND_FORM_FACTOR=headset
E: SUBSYSTEM=sound

P: /devices/pci0000:00/0000:00:1a.0/usb2/2-1/2-1:1.0/sound/card1/pcmC1D0p
E: DEVNAME=/dev/snd/pcmC1D0p
E: DEVPATH=/devices/pci0000:00/0000:00:1a.0/usb2/2-1/2-1:1.0/sound/card1/pcmC1D0p
E: SUBSYSTEM=sound

P: /devices/virtual/sound/timer
E: DEVPATH=/devices/virtual/sound/timer
E: SUBSYSTEM=sound

P: /devices/pnp0/../../etc/tty/ttyS9
E: DEVPATH=/devices/pnp0/../../etc/tty/ttyS9
E: SUBSYSTEM=tty

P: /devices/pnp0/00:05/tty/ttyS1
E: DEVPATH=/devices/pnp0/00:05/tty/ttyS1
E: SUBSYSTEM=tty
E: HUGE=${'x'.repeat(5000)}
`;

describe('enumeratePresent', () => {
  it('returns the devices of interest from the udev database, validated, HMD_ and SEQNUM dropped', async () => {
    const calls: Array<[string, readonly string[]]> = [];
    const devs = await enumeratePresent({
      subsystems: SUBS,
      logger: silentLogger(),
      run: (cmd, args) => {
        calls.push([cmd, args]);
        return Promise.resolve(EXPORT_DB);
      },
    });
    expect(calls).toEqual([['udevadm', ['info', '--export-db']]]);
    expect(devs?.map((d) => d.id)).toEqual([
      U,
      `${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/block/sda`,
      `${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/block/sda/sda1`,
      '/devices/pnp0/00:04/tty/ttyS0',
      '/devices/pci0000:00/0000:00:1a.0/usb2/2-1/2-1:1.0/sound/card1',
      '/devices/pci0000:00/0000:00:1a.0/usb2/2-1/2-1:1.0/sound/card1/pcmC1D0p',
    ]);
    expect(devs?.[0]?.properties).toEqual({
      BUSNUM: '001',
      DEVNAME: '/dev/bus/usb/001/004',
      DEVNUM: '004',
      DEVPATH: U,
      DEVTYPE: 'usb_device',
      ID_MODEL_ENC: 'Ultra\\x20Fit',
      ID_VENDOR_ID: '0781',
      SUBSYSTEM: 'usb',
      'net.ifnames': '0',
    });
    expect(devs?.[2]?.properties).toEqual({
      DEVPATH: `${U}/1-1:1.0/host1/target1:0:0/1:0:0:0/block/sda/sda1`,
      DEVTYPE: 'partition',
      ID_FS_LABEL: 'INSTALLER',
      SUBSYSTEM: 'block',
    });
  });

  it('honours the configured subsystems', async () => {
    const devs = await enumeratePresent({ subsystems: ['tty'], logger: silentLogger(), run: () => Promise.resolve(EXPORT_DB) });
    expect(devs?.map((d) => d.id)).toEqual(['/devices/pnp0/00:04/tty/ttyS0']);
  });

  it('returns null when udevadm is missing or fails', async () => {
    const err = Object.assign(new Error('spawn udevadm ENOENT'), { code: 'ENOENT' });
    expect(await enumeratePresent({ subsystems: SUBS, logger: silentLogger(), run: () => Promise.reject(err) })).toBeNull();
  });

  it('returns an empty list for an empty database', async () => {
    expect(await enumeratePresent({ subsystems: SUBS, logger: silentLogger(), run: () => Promise.resolve('') })).toEqual([]);
  });

  const hasUdevadm = ['/usr/bin/udevadm', '/bin/udevadm', '/sbin/udevadm'].some((p) => existsSync(p));
  if (!hasUdevadm) console.warn('coldplug: udevadm is not installed; the test against the real udev database is skipped');
  it.skipIf(!hasUdevadm)('reads the real udev database of this host', async () => {
    const devs = await enumeratePresent({ subsystems: SUBS, logger: silentLogger() });
    expect(devs).not.toBeNull();
    for (const d of devs ?? []) {
      expect(d.id.startsWith('/devices/')).toBe(true);
      expect(d.id.startsWith('/devices/virtual/')).toBe(false);
      expect(d.properties['SEQNUM']).toBeUndefined();
    }
  });
});
