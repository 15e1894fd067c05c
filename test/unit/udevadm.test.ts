import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeviceEvent } from '../../src/devices/types.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { MonitorParser, UdevadmMonitorSource } from '../../src/sources/udevadm.js';

// As `udevadm monitor --udev --property` prints it (recorded on a Debian 12 host).
const RECORDED = `monitor will print the received events for:
UDEV - the event which udev sends out after rule processing

UDEV  [12345.678901] add      /devices/pci0000:00/0000:00:14.0/usb1/1-2 (usb)
ACTION=add
DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2
SUBSYSTEM=usb
DEVNAME=/dev/bus/usb/001/004
DEVTYPE=usb_device
PRODUCT=403/6001/600
BUSNUM=001
DEVNUM=004
SEQNUM=4711
USEC_INITIALIZED=12345678901
ID_VENDOR_ID=0403
ID_MODEL=FT232R USB UART
MAJOR=189
MINOR=3

UDEV  [12345.690000] add      /devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0 (tty)
ACTION=add
DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0
SUBSYSTEM=tty
DEVNAME=/dev/ttyUSB0
SEQNUM=4714
ID_SERIAL=FTDI_FT232R_USB_UART_EU14D7QR
DEVLINKS=/dev/serial/by-path/pci-0000:00:14.0-usb-0:2:1.0-port0 /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_EU14D7QR-if00-port0

`;

const BROKEN = `UDEV  [1.0] add      /devices/a (usb)
ACTION=add
DEVPATH=/devices/a
SUBSYSTEM=usb

KERNEL[1.1] add      /devices/b (usb)
ACTION=add
DEVPATH=/devices/b
SUBSYSTEM=usb
SEQNUM=2

UDEV  [1.2] add      /devices/c (usb)
ACTION=add
this line has no equals sign
DEVPATH=/devices/c
SUBSYSTEM=usb
SEQNUM=3

UDEV  [1.3] remove   /devices/d (usb)
ACTION=remove
DEVPATH=/devices/d
SUBSYSTEM=usb
SEQNUM=4
HMD_SPOOL_DIR=/tmp/x

`;

describe('MonitorParser', () => {
  it('parses recorded output into validated events, whatever the chunking', () => {
    const whole = new MonitorParser(() => undefined).push(RECORDED);
    expect(whole.map((e) => [e.action, e.subsystem, e.seqnum, e.source])).toEqual([
      ['add', 'usb', 4711n, 'udevadm'],
      ['add', 'tty', 4714n, 'udevadm'],
    ]);
    expect(whole[0]?.properties['ID_MODEL']).toBe('FT232R USB UART');
    expect(whole[1]?.properties['DEVLINKS']).toContain('/dev/serial/by-id/');

    const p = new MonitorParser(() => undefined);
    const byChar: DeviceEvent[] = [];
    for (const c of RECORDED) byChar.push(...p.push(c));
    expect(byChar).toEqual(whole);
  });

  it('drops invalid blocks with a reason, skips KERNEL blocks, keeps going', () => {
    const reasons: string[] = [];
    const events = new MonitorParser((r) => reasons.push(r)).push(BROKEN);
    expect(events.map((e) => e.devpath)).toEqual(['/devices/d']);
    expect(events[0]?.properties['HMD_SPOOL_DIR']).toBeUndefined();
    expect(reasons).toEqual(['SEQNUM: missing', 'line is not KEY=VALUE: "this line has no equals sign"']);
  });

  it('drops an oversize block and an endless line', () => {
    const reasons: string[] = [];
    const p = new MonitorParser((r) => reasons.push(r));
    const huge = `UDEV  [1] add /devices/x (usb)\n${Array.from({ length: 40 }, (_, i) => `K${i}=${'v'.repeat(2000)}`).join('\n')}\n\n`;
    expect(p.push(huge)).toEqual([]);
    expect(p.push('x'.repeat(70_000))).toEqual([]);
    expect(reasons).toEqual(['event larger than 65536 bytes', 'line longer than the event size limit']);
    // and it recovers
    expect(p.push(`\n${RECORDED}`)).toHaveLength(2);
  });
});

describe('UdevadmMonitorSource', () => {
  let dir: string;
  let src: UdevadmMonitorSource | null = null;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hmd-udevadm-'));
  });
  afterEach(async () => {
    await src?.stop();
    src = null;
    rmSync(dir, { recursive: true, force: true });
  });

  const waitFor = async (cond: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it('runs the command, emits its events, and restarts it when it dies', async () => {
    // Each run prints the recording with SEQNUMs shifted by the run number, then exits.
    writeFileSync(join(dir, 'out.txt'), RECORDED);
    const script = join(dir, 'fake-udevadm');
    writeFileSync(
      script,
      `#!/bin/sh
echo "$@" > "${dir}/args"
n=$(cat "${dir}/runs" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "${dir}/runs"
sed "s/^SEQNUM=\\(.*\\)/SEQNUM=\\1$n/" "${dir}/out.txt"
exit 3
`,
    );
    chmodSync(script, 0o755);
    const events: DeviceEvent[] = [];
    src = new UdevadmMonitorSource({ logger: silentLogger(), onEvents: (e) => events.push(...e), command: script, backoffMs: 20 });
    await src.start();
    await waitFor(() => events.length >= 4, 'two runs of events');
    expect(events.slice(0, 4).map((e) => e.seqnum)).toEqual([47111n, 47141n, 47112n, 47142n]);
    expect(readFileSync(join(dir, 'args'), 'utf8').trim()).toBe('monitor --udev --property');
  });

  it('logs once when udevadm is missing, keeps retrying quietly, picks it up when it appears', async () => {
    const lines: Array<{ msg: string }> = [];
    const logger = createLogger({ level: 'debug', stream: { write: (s: string) => lines.push(JSON.parse(s) as { msg: string }) } });
    const command = join(dir, 'late-udevadm');
    const events: DeviceEvent[] = [];
    src = new UdevadmMonitorSource({ logger, onEvents: (e) => events.push(...e), command, backoffMs: 5, maxBackoffMs: 10 });
    await src.start();
    await new Promise((r) => setTimeout(r, 300));
    expect(lines.filter((l) => l.msg.includes('not found'))).toHaveLength(1);
    expect(lines.filter((l) => l.msg.includes('restarting'))).toHaveLength(0);
    writeFileSync(join(dir, 'out.txt'), RECORDED);
    writeFileSync(command, `#!/bin/sh\ncat "${dir}/out.txt"\nexec sleep 1000\n`);
    chmodSync(command, 0o755);
    await waitFor(() => events.length === 2, 'events once udevadm exists');
    expect(lines.filter((l) => l.msg.includes('not found'))).toHaveLength(1);
  });

  it('stop() ends a child that keeps running', async () => {
    const script = join(dir, 'forever');
    writeFileSync(script, `#!/bin/sh\nprintf '%s' "$1" >/dev/null\nexec sleep 1000\n`);
    chmodSync(script, 0o755);
    src = new UdevadmMonitorSource({ logger: silentLogger(), onEvents: () => undefined, command: script });
    await src.start();
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await src.stop();
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});
