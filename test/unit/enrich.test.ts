import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Enricher, loadUsbDevicesFromPackage, type EnricherOptions } from '../../src/devices/enrich.js';
import { createLogger } from '../../src/log.js';

const TTY = {
  ACTION: 'add',
  SUBSYSTEM: 'tty',
  DEVNAME: '/dev/ttyUSB0',
  DEVPATH: '/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0',
};
const USBDEV = {
  ACTION: 'add',
  SUBSYSTEM: 'usb',
  DEVTYPE: 'usb_device',
  DEVPATH: '/devices/pci0000:00/0000:00:14.0/usb1/1-2.3',
  BUSNUM: '001',
  DEVNUM: '004',
  ID_VENDOR_ID: '0403',
  ID_MODEL_ID: '6001',
};
const SERIAL_LIST = [
  { path: '/dev/ttyS0', manufacturer: undefined, serialNumber: undefined, pnpId: undefined, locationId: undefined, vendorId: undefined, productId: undefined },
  { path: '/dev/ttyUSB0', manufacturer: 'FTDI', serialNumber: 'EU14D7QR', pnpId: 'usb-FTDI_FT232R_USB_UART_EU14D7QR-if00-port0', locationId: undefined, vendorId: '0403', productId: '6001' },
];
const USB_LIST = [{ bus: '001', address: 4, ports: [2, 3], speed: 'full', deviceClass: 0, vendorId: 0x0403, productId: 0x6001 }];

function capture(): { logger: ReturnType<typeof createLogger>; lines: Array<{ msg: string; reason?: string }> } {
  const lines: Array<{ msg: string; reason?: string }> = [];
  const logger = createLogger({ level: 'debug', stream: { write: (s: string) => lines.push(JSON.parse(s) as { msg: string }) } });
  return { logger, lines };
}

function fakes(over: Partial<EnricherOptions> = {}) {
  const calls = { serial: 0, usb: 0 };
  const { logger, lines } = capture();
  const enricher = new Enricher({
    logger,
    loadSerialPorts: () => {
      calls.serial++;
      return Promise.resolve(SERIAL_LIST);
    },
    loadUsbDevices: () => {
      calls.usb++;
      return Promise.resolve(USB_LIST);
    },
    usbAvailable: () => true,
    debounceMs: 20,
    ...over,
  });
  return { enricher, calls, lines };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Enricher with fake lists', () => {
  it('adds HMD_SERIAL_* to a tty from the serialport list', async () => {
    const { enricher } = fakes();
    await enricher.start();
    expect(enricher.enrich(TTY)).toEqual({
      HMD_SERIAL_MANUFACTURER: 'FTDI',
      HMD_SERIAL_NUMBER: 'EU14D7QR',
      HMD_SERIAL_PNP_ID: 'usb-FTDI_FT232R_USB_UART_EU14D7QR-if00-port0',
      HMD_SERIAL_VENDOR_ID: '0403',
      HMD_SERIAL_PRODUCT_ID: '6001',
    });
    // a port the list has without details gets nothing, an unknown one neither
    expect(enricher.enrich({ ...TTY, DEVNAME: '/dev/ttyS0' })).toEqual({});
    expect(enricher.enrich({ ...TTY, DEVNAME: '/dev/ttyACM9' })).toEqual({});
    await enricher.stop();
  });

  it('adds HMD_USB_* to a usb_device matched by BUSNUM/DEVNUM and its ids', async () => {
    const { enricher } = fakes();
    await enricher.start();
    expect(enricher.enrich(USBDEV)).toEqual({ HMD_USB_CLASS: '00', HMD_USB_SPEED: 'full', HMD_USB_PORT_PATH: '1-2.3' });
    // another device now at that address (replugged): not trusted
    expect(enricher.enrich({ ...USBDEV, ID_MODEL_ID: 'ea60' })).toEqual({});
    expect(enricher.enrich({ ...USBDEV, DEVNUM: '005' })).toEqual({});
    expect(enricher.enrich({ ...USBDEV, DEVTYPE: 'usb_interface' })).toEqual({});
    expect(enricher.enrich({ ...USBDEV, BUSNUM: 'x' })).toEqual({});
    await enricher.stop();
  });

  it('never overwrites a key the device already has, and adds only HMD_ keys', async () => {
    const { enricher } = fakes();
    await enricher.start();
    const out = enricher.enrich({ ...TTY, HMD_SERIAL_NUMBER: 'given' });
    expect(out['HMD_SERIAL_NUMBER']).toBeUndefined();
    expect(Object.keys(out).every((k) => k.startsWith('HMD_'))).toBe(true);
    expect(Object.keys(out)).toHaveLength(4);
    await enricher.stop();
  });

  it('refreshes once, debounced, after a burst of tty/usb adds; not for other events', async () => {
    const { enricher, calls } = fakes();
    await enricher.start();
    expect(calls).toEqual({ serial: 1, usb: 1 });
    for (let i = 0; i < 10; i++) enricher.enrich(TTY);
    enricher.enrich(USBDEV);
    await sleep(150);
    expect(calls).toEqual({ serial: 2, usb: 2 });
    enricher.enrich({ ...TTY, ACTION: 'change' });
    enricher.enrich({ ...TTY, SUBSYSTEM: 'block', DEVNAME: '/dev/sda' });
    await sleep(100);
    expect(calls).toEqual({ serial: 2, usb: 2 });
    await enricher.stop();
    enricher.enrich(TTY);
    await sleep(100);
    expect(calls).toEqual({ serial: 2, usb: 2 });
  });

  it('turns USB off without /sys/bus/usb (never loading usb), logging it once', async () => {
    const { enricher, calls, lines } = fakes({ usbAvailable: () => false });
    await enricher.start();
    await enricher.refresh();
    expect(calls.usb).toBe(0);
    expect(enricher.enrich(USBDEV)).toEqual({});
    expect(enricher.enrich(TTY)['HMD_SERIAL_NUMBER']).toBe('EU14D7QR');
    expect(lines.filter((l) => l.msg === 'USB enrichment off')).toHaveLength(1);
  });

  it('turns serial off when the list fails (udevadm missing), logging it once', async () => {
    const err = Object.assign(new Error('spawn udevadm ENOENT'), { code: 'ENOENT' });
    const { enricher, calls, lines } = fakes({
      loadSerialPorts: () => {
        calls.serial++;
        return Promise.reject(err);
      },
    });
    await enricher.start();
    await enricher.refresh();
    expect(calls.serial).toBe(1);
    expect(enricher.enrich(TTY)).toEqual({});
    expect(enricher.enrich(USBDEV)['HMD_USB_SPEED']).toBe('full');
    expect(lines.filter((l) => l.msg === 'serial port enrichment off')).toEqual([expect.objectContaining({ reason: 'spawn udevadm ENOENT' })]);
  });

  it('refuses a list of the wrong shape (a changed package) and stays up', async () => {
    const { enricher, lines } = fakes({
      loadSerialPorts: () => Promise.resolve([{ path: 42 }]),
      loadUsbDevices: () => Promise.resolve({ not: 'a list' }),
    });
    await enricher.start();
    expect(enricher.enrich(TTY)).toEqual({});
    expect(enricher.enrich(USBDEV)).toEqual({});
    expect(lines.map((l) => l.msg).sort()).toEqual(['USB enrichment off', 'serial port enrichment off']);
  });

  it('start() does not wait forever for a hung list', async () => {
    const { enricher } = fakes({ loadSerialPorts: () => new Promise(() => undefined), startTimeoutMs: 50 });
    const t0 = Date.now();
    await enricher.start();
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(enricher.enrich(USBDEV)['HMD_USB_CLASS']).toBe('00');
    await enricher.stop();
  });
});

describe('Enricher with the real packages on this host', () => {
  it('starts, enriches without crashing, and says USB is off when there is no USB bus', async () => {
    const { logger, lines } = capture();
    const enricher = new Enricher({ logger });
    await enricher.start();
    const out = enricher.enrich({ ACTION: 'add', SUBSYSTEM: 'tty', DEVNAME: '/dev/ttyS0', DEVPATH: '/devices/pnp0/00:04/tty/ttyS0' });
    expect(Object.keys(out).every((k) => k.startsWith('HMD_'))).toBe(true);
    expect(enricher.enrich(USBDEV)).toEqual({});
    await sleep(700); // the add above scheduled a refresh: it must not crash either
    await enricher.stop();
    if (!existsSync('/sys/bus/usb')) {
      expect(lines.filter((l) => l.msg === 'USB enrichment off')).toHaveLength(1);
      await expect(loadUsbDevicesFromPackage()).rejects.toThrow(/sys\/bus\/usb/);
    }
  });
});
