import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { defaultConfig } from '../../src/config/schema.js';
import { Metrics } from '../../src/daemon/metrics.js';
import { DevicePipeline } from '../../src/daemon/pipeline.js';
import { StateStore } from '../../src/daemon/state.js';
import { DeviceTable } from '../../src/devices/table.js';
import type { DeviceAction, DeviceNotification, DeviceRecord } from '../../src/devices/types.js';
import { silentLogger } from '../../src/log.js';
import { spoolName } from '../../src/sources/spool-file.js';

const USB = '/devices/pci0000:00/0000:00:14.0/usb1/1-';
const dev = (n: number): Record<string, string> => ({ DEVPATH: `${USB}${n}`, SUBSYSTEM: 'usb', DEVTYPE: 'usb_device' });

/** As the udev helper does: NUL-separated environment in a dot-file, renamed into place. */
function spool(dir: string, seq: number, action: DeviceAction, n: number): void {
  const name = spoolName(BigInt(seq), action);
  const body = Object.entries({ ...dev(n), ACTION: action, SEQNUM: String(seq) }).map(([k, v]) => `${k}=${v}\0`).join('');
  writeFileSync(join(dir, `.${name}.tmp`), body);
  renameSync(join(dir, `.${name}.tmp`), join(dir, name));
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(enumerate: () => Promise<DeviceRecord[] | null>, table?: DeviceTable) {
  const root = mkdtempSync(join(tmpdir(), 'hmd-pipeline-'));
  dirs.push(root);
  const config = defaultConfig();
  config.spoolDir = join(root, 'spool');
  config.stateDir = join(root, 'state');
  config.devices.enrich = false;
  config.devices.coldplug = true;
  const logger = silentLogger();
  const t = table ?? new DeviceTable({ subsystems: config.devices.subsystems, bootId: 'b', logger });
  const published: string[] = [];
  const state = new StateStore({ dir: config.stateDir, logger, collect: () => ({}) });
  const pipeline = new DevicePipeline({
    config,
    logger,
    table: t,
    metrics: new Metrics(),
    state,
    publish: (n: DeviceNotification) => published.push(`${n.kind} ${n.deviceId.slice(USB.length - 2)}`),
    monitor: () => undefined,
    enumerate,
  });
  return { config, pipeline, published, state, table: t };
}

describe('device pipeline start-up order', () => {
  it('replays the spool backlog before reconciling with the present, so history never overrides it', async () => {
    const present: DeviceRecord[] = [{ id: `${USB}2`, properties: dev(2) }];
    const s = setup(() => Promise.resolve(present));
    // The backlog: device 1 came and is gone now (the daemon was down); device 2 is here.
    mkdirSync(s.config.spoolDir, { recursive: true });
    spool(s.config.spoolDir, 10, 'add', 1);
    await s.pipeline.start();
    // Backlog first, in the order first handled (same HMD_SEQUENCE after a crash), then the
    // reconcile: the stale add does not bring device 1 back.
    expect(s.published).toEqual(['insert 1-1', 'remove 1-1', 'insert 1-2']);
    expect(s.table.list().map((d) => d.id)).toEqual([`${USB}2`]);
    await s.pipeline.stop();
    await s.state.stop();
  });

  it('holds events that arrive while the present is enumerated until the reconcile is applied', async () => {
    let answer: (v: DeviceRecord[]) => void = () => undefined;
    const asked = vi.fn();
    const s = setup(
      () =>
        new Promise<DeviceRecord[]>((res) => {
          asked();
          answer = res;
        }),
    );
    const started = s.pipeline.start();
    await vi.waitFor(() => expect(asked).toHaveBeenCalled());
    // Device 3 is plugged while udev's database is being read (the snapshot does not have it).
    spool(s.config.spoolDir, 20, 'add', 3);
    await new Promise((r) => setTimeout(r, 100));
    expect(s.published).toEqual([]);
    answer([]);
    await started;
    await vi.waitFor(() => expect(s.published).toEqual(['insert 1-3']));
    expect(s.table.list().map((d) => d.id)).toEqual([`${USB}3`]);
    await s.pipeline.stop();
    await s.state.stop();
  });
});
