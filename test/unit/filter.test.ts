import { describe, expect, it } from 'vitest';
import { deviceInterest, isDeviceOfInterest, kernelName } from '../../src/devices/filter.js';

const ALL = ['usb', 'tty', 'block', 'hidraw', 'video4linux', 'sound'];
const USB = '/devices/pci0000:00/0000:00:14.0/usb1/1-2';

// Each row mirrors one match of udev-rules/90-veea-hmd.rules.
const cases: Array<[string, Record<string, string>, boolean]> = [
  ['usb device', { SUBSYSTEM: 'usb', DEVTYPE: 'usb_device', DEVPATH: USB }, true],
  ['usb interface', { SUBSYSTEM: 'usb', DEVTYPE: 'usb_interface', DEVPATH: `${USB}/1-2:1.0` }, false],
  ['usb without DEVTYPE', { SUBSYSTEM: 'usb', DEVPATH: USB }, false],
  ['USB serial ttyUSB0', { SUBSYSTEM: 'tty', DEVPATH: `${USB}/1-2:1.0/ttyUSB0/tty/ttyUSB0` }, true],
  ['CDC ACM ttyACM0', { SUBSYSTEM: 'tty', DEVPATH: `${USB}/1-2:1.0/tty/ttyACM0` }, true],
  ['on-board UART ttyS0', { SUBSYSTEM: 'tty', DEVPATH: '/devices/pnp0/00:04/tty/ttyS0' }, true],
  ['Pi UART ttyAMA0', { SUBSYSTEM: 'tty', DEVPATH: '/devices/platform/soc/fe201000.serial/tty/ttyAMA0' }, true],
  ['virtual console tty1', { SUBSYSTEM: 'tty', DEVPATH: '/devices/virtual/tty/tty1' }, false],
  ['/dev/tty', { SUBSYSTEM: 'tty', DEVPATH: '/devices/virtual/tty/tty' }, false],
  ['ptmx', { SUBSYSTEM: 'tty', DEVPATH: '/devices/virtual/tty/ptmx' }, false],
  ['a console misplaced outside virtual', { SUBSYSTEM: 'tty', DEVPATH: '/devices/platform/x/tty/tty7' }, false],
  ['disk sda', { SUBSYSTEM: 'block', DEVTYPE: 'disk', DEVPATH: `${USB}/1-2:1.0/host0/target0:0:0/0:0:0:0/block/sda` }, true],
  ['partition sda1', { SUBSYSTEM: 'block', DEVTYPE: 'partition', DEVPATH: `${USB}/1-2:1.0/host0/target0:0:0/0:0:0:0/block/sda/sda1` }, true],
  ['loop0', { SUBSYSTEM: 'block', DEVTYPE: 'disk', DEVPATH: '/devices/virtual/block/loop0' }, false],
  ['loop0 misplaced', { SUBSYSTEM: 'block', DEVTYPE: 'disk', DEVPATH: '/devices/platform/block/loop0' }, false],
  ['ram0 misplaced', { SUBSYSTEM: 'block', DEVTYPE: 'disk', DEVPATH: '/devices/platform/block/ram0' }, false],
  ['zram0', { SUBSYSTEM: 'block', DEVTYPE: 'disk', DEVPATH: '/devices/virtual/block/zram0' }, false],
  ['dm-0', { SUBSYSTEM: 'block', DEVTYPE: 'disk', DEVPATH: '/devices/virtual/block/dm-0' }, false],
  ['md0', { SUBSYSTEM: 'block', DEVTYPE: 'disk', DEVPATH: '/devices/virtual/block/md0' }, false],
  ['block without DEVTYPE', { SUBSYSTEM: 'block', DEVPATH: '/devices/platform/block/mmcblk0' }, false],
  ['hidraw0', { SUBSYSTEM: 'hidraw', DEVPATH: `${USB}/1-2:1.3/0003:046D:0A0B.0001/hidraw/hidraw0` }, true],
  ['uhid hidraw', { SUBSYSTEM: 'hidraw', DEVPATH: '/devices/virtual/misc/uhid/0005:1.0001/hidraw/hidraw1' }, false],
  ['video0', { SUBSYSTEM: 'video4linux', DEVPATH: `${USB}/1-2:1.0/video4linux/video0` }, true],
  ['v4l2loopback', { SUBSYSTEM: 'video4linux', DEVPATH: '/devices/virtual/video4linux/video9' }, false],
  ['sound card1', { SUBSYSTEM: 'sound', DEVPATH: `${USB}/1-2:1.0/sound/card1` }, true],
  ['sound pcm node', { SUBSYSTEM: 'sound', DEVPATH: `${USB}/1-2:1.0/sound/card1/pcmC1D0p` }, true],
  ['ALSA timer', { SUBSYSTEM: 'sound', DEVPATH: '/devices/virtual/sound/timer' }, false],
  ['net (not configured)', { SUBSYSTEM: 'net', DEVPATH: '/devices/pci0000:00/0000:00:03.0/net/eth0' }, false],
  ['no SUBSYSTEM', { DEVPATH: USB }, false],
  ['no DEVPATH', { SUBSYSTEM: 'usb', DEVTYPE: 'usb_device' }, false],
];

describe('isDeviceOfInterest', () => {
  it.each(cases)('%s -> %s', (_name, props, want) => {
    expect(isDeviceOfInterest(props, ALL)).toBe(want);
  });

  it('passes only configured subsystems, and a configured extra subsystem whole', () => {
    const tty = { SUBSYSTEM: 'tty', DEVPATH: '/devices/pnp0/00:04/tty/ttyS0' };
    expect(isDeviceOfInterest(tty, ['usb'])).toBe(false);
    expect(deviceInterest(tty, ['usb'])).toEqual({ ok: false, reason: 'subsystem tty not configured' });
    expect(isDeviceOfInterest({ SUBSYSTEM: 'net', DEVPATH: '/devices/pci0000:00/net/eth0' }, ['net'])).toBe(true);
  });

  it('gives the reason for a refusal', () => {
    expect(deviceInterest({ SUBSYSTEM: 'usb', DEVPATH: USB, DEVTYPE: 'usb_interface' }, ALL)).toEqual({ ok: false, reason: 'usb DEVTYPE usb_interface' });
    expect(deviceInterest({ SUBSYSTEM: 'tty', DEVPATH: '/devices/virtual/tty/tty1' }, ALL)).toEqual({ ok: false, reason: 'virtual device' });
  });

  it('kernelName is the last DEVPATH component, as udev KERNEL', () => {
    expect(kernelName('/devices/a/b/ttyUSB0')).toBe('ttyUSB0');
  });
});
