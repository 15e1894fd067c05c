/**
 * Scale: one daemon with 1000 devices present.
 * - replay: a container calls Ready; time until it acknowledged the 1000th replayed insert
 *   (measured from just before this process tells the container to call Ready; one container
 *   at a time, a fresh one per sample). Its floor, measured the same way: a raw dbus-next client
 *   sending the same peer 1000 inserts one at a time (the daemon keeps one call in flight per
 *   container);
 * - memory: the daemon's VmRSS (from /proc) with no device, with 1000 devices, and with 100
 *   Ready containers × 1000 devices (each container has acknowledged its 1000-insert replay),
 *   sampled every second while idle (V8 gives memory back some seconds into the idle time:
 *   the last sample is the settled figure); VmHWM is the peak over the daemon's life; and the
 *   size of the state file it rewrites as deliveries progress;
 * - idle CPU: utime + stime of all the daemon's threads over an idle minute (10 s with
 *   --quick) with those 100 containers and 1000 devices, as a share of one core, and the
 *   threads' context switches per second (wake-ups: a polling loop shows here first).
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { nextSeqnum, usbDevice } from '../test/e2e/support/events.js';
import {
  countAtLeast,
  nowMs,
  prepareContainer,
  procSample,
  rawClient,
  rawInsert,
  ready,
  readyContainers,
  sleep,
  stageSpoolFile,
  startEnv,
  summarize,
  valueRow,
  waitForDevices,
  type BenchContext,
  type Row,
} from './support.js';

const DEVICES = 1000;
const CONTAINERS = 100;
const mb = (kib: number): number => (kib * 1024) / 1e6;
const stateSize = (dir: string): number => statSync(join(dir, 'state.json')).size / 1e6;

export async function run(ctx: BenchContext): Promise<Row[]> {
  const replays = ctx.quick ? 5 : 20;
  const idleS = ctx.quick ? 10 : 60;
  const env = await startEnv(ctx);
  const pid = env.daemon.proc.pid as number;
  const rows: Row[] = [];
  try {
    await sleep(1000);
    rows.push(valueRow('scale.rssEmpty', 'daemon RSS, no device, no container', mb(procSample(pid).rssKiB), 'MB'));

    for (let i = 0; i < DEVICES; i++) stageSpoolFile(env.dirs.spoolDir, nextSeqnum(), 'add', usbDevice(i)).commit();
    await waitForDevices(env, DEVICES);
    await sleep(1000);
    rows.push(valueRow('scale.rssDevices', `daemon RSS, ${DEVICES} devices, no container`, mb(procSample(pid).rssKiB), 'MB'));
    rows.push(valueRow('scale.stateFileDevices', `size of the state file, ${DEVICES} devices, no container`, stateSize(env.dirs.stateDir), 'MB'));

    const client = await rawClient(env.bus.address);
    const replay: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < replays + 1; i++) {
      // The floor first, on a peer of its own (not Ready: the daemon sends it nothing).
      const peer = await prepareContainer(env.bus.address, true);
      const f0 = nowMs();
      for (let k = 0; k < DEVICES; k++) await rawInsert(client.bus, peer.unique, k, k + 1);
      const fl = await countAtLeast(peer.c, DEVICES);
      if (i > 0) floor.push(fl.t - f0);
      await peer.c.kill();

      const rc = await prepareContainer(env.bus.address, true);
      const t0 = nowMs();
      await ready(rc);
      const got = await countAtLeast(rc.c, DEVICES);
      if (got.count !== DEVICES || got.seq !== String(DEVICES)) throw new Error(`replay ended with ${got.count} events, last HMD_SEQUENCE ${got.seq}`);
      if (i > 0) replay.push(got.t - t0); // the first one warms the daemon's code paths up
      await rc.c.kill();
      await sleep(200);
    }
    await client.close();
    rows.push(summarize('scale.replay', `Ready → last replay ack, ${DEVICES} devices present`, replay));
    rows.push(summarize('scale.replayFloor', `raw floor: ${DEVICES} calls one at a time → last ack (no daemon)`, floor));

    const t0 = nowMs();
    const containers = await readyContainers(env.bus.address, CONTAINERS, true);
    await Promise.all(containers.map(({ c }) => countAtLeast(c, DEVICES)));
    ctx.log(`  ${CONTAINERS} containers Ready and replayed in ${Math.round(nowMs() - t0)} ms`);
    await sleep(3000); // state writes and spool clean-up settle

    const rss: number[] = [];
    const before = procSample(pid);
    const t1 = nowMs();
    for (let s = 0; s < idleS; s++) {
      await sleep(1000);
      rss.push(mb(procSample(pid).rssKiB));
    }
    const after = procSample(pid);
    const elapsedS = (nowMs() - t1) / 1000;
    rows.push(summarize('scale.rss', `daemon RSS, ${CONTAINERS} Ready containers × ${DEVICES} devices (1 sample/s while idle)`, rss, 'MB'));
    rows.push(valueRow('scale.rssSettled', `daemon RSS at the end of the idle ${idleS} s (settled)`, rss[rss.length - 1] ?? NaN, 'MB'));
    rows.push(valueRow('scale.stateFile', `size of the state file, ${CONTAINERS} containers × ${DEVICES} devices (rewritten whole on each save)`, stateSize(env.dirs.stateDir), 'MB'));
    rows.push(valueRow('scale.hwm', 'daemon VmHWM (peak RSS of its life, replays included)', mb(after.hwmKiB), 'MB'));
    rows.push(valueRow('scale.idleCpu', `daemon CPU while idle ${idleS} s (${CONTAINERS} containers, ${DEVICES} devices)`, ((after.cpuMs - before.cpuMs) / (elapsedS * 1000)) * 100, '% of a core'));
    rows.push(valueRow('scale.wakeups', 'daemon context switches while idle (all threads)', (after.switches - before.switches) / elapsedS, 'per s'));
    return rows;
  } finally {
    await env.close();
  }
}
