import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from './dbus.js';

export const HELPER = join(REPO, 'udev-rules/hmd-uevent');

let seq = BigInt(Date.now()) * 1000n;
/** Kernel-like SEQNUMs: increasing across the whole test run. */
export const nextSeqnum = (): bigint => ++seq;

/** Properties of a made-up USB device number `n` (as udev would give them). */
export function usbDevice(n: number, extra: Record<string, string> = {}): Record<string, string> & { DEVPATH: string; DEVNAME: string; ID_SERIAL: string } {
  const port = `1-${(n % 8) + 1}.${Math.floor(n / 8) + 1}`;
  const devpath = `/devices/pci0000:00/0000:00:14.0/usb1/${port}`;
  return {
    DEVPATH: devpath,
    SUBSYSTEM: 'usb',
    DEVTYPE: 'usb_device',
    DEVNAME: `/dev/bus/usb/001/${String(n + 2).padStart(3, '0')}`,
    BUSNUM: '001',
    DEVNUM: String(n + 2).padStart(3, '0'),
    ID_VENDOR_ID: '10c4',
    ID_MODEL_ID: 'ea60',
    ID_VENDOR: 'Silicon_Labs',
    ID_MODEL: 'Test_Device',
    ID_SERIAL: `Silicon_Labs_Test_Device_${n}`,
    MAJOR: '189',
    MINOR: String(n),
    ...extra,
  };
}

/** Runs the real udev helper with the environment udev would give it. */
export function runHelper(spoolDir: string, action: string, props: Record<string, string>, seqnum = nextSeqnum()): Promise<bigint> {
  return new Promise((res, rej) => {
    const env = { ...props, ACTION: action, SEQNUM: seqnum.toString(), HMD_SPOOL_DIR: spoolDir, PATH: '/usr/bin:/bin' };
    const p = spawn(HELPER, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('error', rej);
    p.once('exit', (code) => (code === 0 && err === '' ? res(seqnum) : rej(new Error(`helper exited ${code}: ${err}`))));
  });
}

/** Plugs devices 0..n-1 (in order), each through the helper. */
export async function plugMany(spoolDir: string, from: number, count: number, action: 'add' | 'remove' = 'add'): Promise<void> {
  for (let i = from; i < from + count; i++) await runHelper(spoolDir, action, usbDevice(i));
}
