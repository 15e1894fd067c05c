/**
 * Enrichment (issue 3 item 6): a few extra `HMD_*` properties from the `usb` package (device
 * class, speed, port path) and from `serialport`'s list (manufacturer, serial number, pnpId,
 * vendor/product ids). Both packages are optional and both are read only into caches, off the
 * delivery path: `enrich()` is synchronous and never waits, so a delivery never does either.
 *
 * Hard rules: never open a USB device (another container may be using it; the `usb` package's
 * name/serial getters and `configuration` open it, so only plain fields are read), never add a
 * `connect` listener (it crashes Node 20 on a host without /sys/bus/usb), never overwrite a key.
 */
import { existsSync } from 'node:fs';
import { z } from 'zod';
import { HMD_PREFIX } from '../constants.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { LIMITS } from '../sources/properties.js';

export interface EnricherOptions {
  logger: Logger;
  /** Returns what `SerialPort.list()` returns; default: the `serialport` package. */
  loadSerialPorts?: () => Promise<unknown>;
  /** Returns plain `{bus, address, ports, speed, deviceClass, vendorId, productId}` objects. */
  loadUsbDevices?: () => Promise<unknown>;
  /** Whether the USB bus exists at all; default: /sys/bus/usb is there. */
  usbAvailable?: () => boolean;
  /** Quiet time after a tty/usb add before the caches are read again. */
  debounceMs?: number;
  /** Longest `start()` waits for the first refresh before going on without it. */
  startTimeoutMs?: number;
}

const text = z.string().max(LIMITS.valueBytes).nullish();
const serialListSchema = z.array(
  z.object({
    path: z.string().min(1),
    manufacturer: text,
    serialNumber: text,
    pnpId: text,
    locationId: text,
    vendorId: text,
    productId: text,
  }),
);
type SerialPortInfo = z.infer<typeof serialListSchema>[number];

const usbListSchema = z.array(
  z.object({
    bus: z.union([z.string().regex(/^[0-9]+/), z.number().int().nonnegative()]),
    address: z.number().int().nonnegative(),
    ports: z.array(z.number().int().nonnegative()).max(16),
    speed: z.string().max(32).nullish(),
    deviceClass: z.number().int().min(0).max(255),
    vendorId: z.number().int().min(0).max(0xffff).optional(),
    productId: z.number().int().min(0).max(0xffff).optional(),
  }),
);
type UsbDeviceInfo = z.infer<typeof usbListSchema>[number];

/** A specifier in a variable: both packages are optional and may be absent at run time. */
async function importOptional(name: string): Promise<Record<string, unknown>> {
  return (await import(name)) as Record<string, unknown>;
}

export async function loadSerialPortsFromPackage(): Promise<unknown> {
  const mod = await importOptional('serialport');
  const SerialPort = mod['SerialPort'] as { list?: () => Promise<unknown> } | undefined;
  if (typeof SerialPort?.list !== 'function') throw new Error('serialport has no SerialPort.list()');
  return SerialPort.list();
}

/** usb 3.x (WebUSB-style): `usb.getDevices()` lists from sysfs without opening anything. */
export async function loadUsbDevicesFromPackage(): Promise<unknown> {
  const mod = await importOptional('usb');
  const usb = mod['usb'] as { getDevices?: () => Promise<Array<Record<string, unknown>>> } | undefined;
  if (typeof usb?.getDevices !== 'function') throw new Error('usb has no usb.getDevices()');
  const devices = await usb.getDevices();
  // Copy plain fields only; reading manufacturerName/serialNumber/configuration would open it.
  return devices.map((d) => ({
    bus: d['bus'],
    address: d['address'],
    ports: d['ports'],
    speed: d['speed'],
    deviceClass: d['deviceClass'],
    vendorId: d['vendorId'],
    productId: d['productId'],
  }));
}

export class Enricher {
  private readonly log: Logger;
  private serial = new Map<string, SerialPortInfo>();
  private usb = new Map<string, UsbDeviceInfo>();
  private serialOff = false;
  private usbOff = false;
  private stopped = true;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private refreshAgain = false;

  constructor(private readonly opts: EnricherOptions) {
    this.log = opts.logger;
  }

  /** Fills the caches once (waiting at most startTimeoutMs), so coldplug and replays get them. */
  async start(): Promise<void> {
    this.stopped = false;
    const first = this.refresh();
    let timeout: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => {
      timeout = setTimeout(resolve, this.opts.startTimeoutMs ?? 5000);
    });
    await Promise.race([first, limit]);
    clearTimeout(timeout);
  }

  stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    return Promise.resolve();
  }

  /**
   * The `HMD_*` properties to add to `props` (never a key `props` already has), from the caches
   * as they are now. A tty or usb `add` schedules a refresh for the next time.
   */
  enrich(props: Readonly<Record<string, string>>): Record<string, string> {
    const subsystem = props['SUBSYSTEM'];
    if (props['ACTION'] === 'add' && (subsystem === 'tty' || subsystem === 'usb')) this.scheduleRefresh();
    const extra: Record<string, string> = {};
    const put = (key: string, value: string | number | null | undefined): void => {
      const name = HMD_PREFIX + key;
      if (value === null || value === undefined || value === '' || name in props) return;
      extra[name] = String(value);
    };
    if (subsystem === 'tty' && props['DEVNAME'] !== undefined) {
      const port = this.serial.get(props['DEVNAME']);
      if (port !== undefined) {
        put('SERIAL_MANUFACTURER', port.manufacturer);
        put('SERIAL_NUMBER', port.serialNumber);
        put('SERIAL_PNP_ID', port.pnpId);
        put('SERIAL_LOCATION_ID', port.locationId);
        put('SERIAL_VENDOR_ID', port.vendorId);
        put('SERIAL_PRODUCT_ID', port.productId);
      }
    } else if (subsystem === 'usb' && props['DEVTYPE'] === 'usb_device') {
      const dev = this.usbDeviceFor(props);
      if (dev !== undefined) {
        put('USB_CLASS', dev.deviceClass.toString(16).padStart(2, '0'));
        put('USB_SPEED', dev.speed);
        if (dev.ports.length > 0) put('USB_PORT_PATH', `${busNumber(dev.bus)}-${dev.ports.join('.')}`);
      }
    }
    return extra;
  }

  /** Reads both lists again (one refresh at a time; a request meanwhile runs one more). */
  refresh(): Promise<void> {
    if (this.refreshing !== null) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        await Promise.all([this.refreshSerial(), this.refreshUsb()]);
      } while (this.refreshAgain && !this.stopped);
    })().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private scheduleRefresh(): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopped) void this.refresh();
    }, this.opts.debounceMs ?? 500);
    this.timer.unref();
  }

  private usbDeviceFor(props: Readonly<Record<string, string>>): UsbDeviceInfo | undefined {
    const bus = Number.parseInt(props['BUSNUM'] ?? '', 10);
    const addr = Number.parseInt(props['DEVNUM'] ?? '', 10);
    if (!Number.isInteger(bus) || !Number.isInteger(addr)) return undefined;
    const dev = this.usb.get(`${bus}:${addr}`);
    if (dev === undefined) return undefined;
    // Addresses are reused after a replug: only trust a cache entry of the same vendor/product.
    const sameId = (want: string | undefined, have: number | undefined): boolean =>
      want === undefined || have === undefined || Number.parseInt(want, 16) === have;
    return sameId(props['ID_VENDOR_ID'], dev.vendorId) && sameId(props['ID_MODEL_ID'], dev.productId) ? dev : undefined;
  }

  private async refreshSerial(): Promise<void> {
    if (this.serialOff) return;
    try {
      const raw = await (this.opts.loadSerialPorts ?? loadSerialPortsFromPackage)();
      const list = serialListSchema.parse(raw);
      if (!this.stopped) this.serial = new Map(list.map((p) => [p.path, p]));
    } catch (err) {
      this.serialOff = true;
      this.serial = new Map();
      this.log.info({ reason: describeError(err) }, 'serial port enrichment off');
    }
  }

  private async refreshUsb(): Promise<void> {
    if (this.usbOff) return;
    try {
      if (!(this.opts.usbAvailable ?? (() => existsSync('/sys/bus/usb')))()) throw new Error('no /sys/bus/usb on this host');
      const raw = await (this.opts.loadUsbDevices ?? loadUsbDevicesFromPackage)();
      const list = usbListSchema.parse(raw);
      if (!this.stopped) this.usb = new Map(list.map((d) => [`${busNumber(d.bus)}:${d.address}`, d]));
    } catch (err) {
      this.usbOff = true;
      this.usb = new Map();
      this.log.info({ reason: describeError(err) }, 'USB enrichment off');
    }
  }
}

/** The `usb` package gives the bus as a string ("001" on Linux); udev's BUSNUM is decimal too. */
function busNumber(bus: string | number): number {
  return typeof bus === 'number' ? bus : Number.parseInt(bus, 10);
}
