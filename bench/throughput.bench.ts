/**
 * Sustained throughput: 10 000 events written into the spool as fast as this process can (the
 * helper's format: temp file, rename; 10 000 helper execs would measure fork), 10 Ready quiet
 * containers. Each event is one insert or remove (50 devices plugged and unplugged in turn), so
 * each reaches all 10 containers.
 *
 *   deliveries/s = 10 000 events × 10 containers / (last container's last ack − first rename)
 *   ratio        = deliveries/s ÷ the baseline's raw pipelined calls/s (16 in flight, same run)
 *
 * A second ratio is against the raw fan-out rate (1 call in flight to each of 10 peers, the
 * daemon's own pattern: one call in flight per container, by design). Each container must end
 * with exactly 10 000 more events, the last one carrying the expected HMD_SEQUENCE (no gaps).
 */
import { usbDevice } from '../test/e2e/support/events.js';
import { countAtLeast, median, nowMs, readyContainers, sleep, stageSpoolFile, startEnv, valueRow, type BenchContext, type Row } from './support.js';

const CONTAINERS = 10;
const DEVICES = 50;

export async function run(ctx: BenchContext): Promise<Row[]> {
  const events = ctx.quick ? 2000 : 10_000;
  const rounds = ctx.quick ? 1 : 3;
  const { pipelinedCallsPerSec, fanoutCallsPerSec } = ctx.baseline;
  if (pipelinedCallsPerSec === undefined || fanoutCallsPerSec === undefined) throw new Error('throughput needs the baseline of the same run');
  const env = await startEnv(ctx);
  try {
    const containers = await readyContainers(env.bus.address, CONTAINERS, true);
    await sleep(500);
    const devs = Array.from({ length: DEVICES }, (_, i) => usbDevice(600 + i));
    let seqnum = BigInt(Date.now()) * 1000n;
    let sent = 0;
    const rates: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const done = containers.map(({ c }) => countAtLeast(c, sent + events));
      const t0 = nowMs();
      for (let i = 0; i < events; i++) {
        const k = sent + i;
        // Plug all 50, unplug all 50, ...: every event changes the table, so every one notifies.
        const action = Math.floor(k / DEVICES) % 2 === 0 ? 'add' : 'remove';
        stageSpoolFile(env.dirs.spoolDir, ++seqnum, action, devs[k % DEVICES] as Record<string, string>).commit();
      }
      const ends = await Promise.all(done);
      sent += events;
      for (const [i, e] of ends.entries()) {
        if (e.count !== sent || e.seq !== String(sent)) throw new Error(`container ${i} ended with ${e.count} events, last HMD_SEQUENCE ${e.seq}; expected ${sent}`);
      }
      const elapsedS = (Math.max(...ends.map((e) => e.t)) - t0) / 1000;
      rates.push((events * CONTAINERS) / elapsedS);
      ctx.log(`  round ${r + 1}: ${Math.round((events * CONTAINERS) / elapsedS)} deliveries/s`);
      await sleep(1000); // let the state writer and spool clean-up finish between rounds
    }
    const rate = median(rates);
    return [
      valueRow('throughput.rate', `deliveries/s, ${events} events × ${CONTAINERS} containers (median of ${rounds})`, rate, 'deliveries/s', rounds),
      valueRow('throughput.events', `events/s delivered to all ${CONTAINERS} containers (median of ${rounds})`, rate / CONTAINERS, 'events/s', rounds),
      valueRow('throughput.ratio', 'deliveries/s ÷ raw pipelined calls/s (16 in flight)', rate / pipelinedCallsPerSec, '×', rounds),
      valueRow('throughput.ratioFanout', 'deliveries/s ÷ raw fan-out calls/s (1 in flight × 10 peers)', rate / fanoutCallsPerSec, '×', rounds),
    ];
  } finally {
    await env.close();
  }
}
