/**
 * End-to-end latency through the real daemon: event → each Ready container's ack, at 1, 10 and
 * 100 containers (fake containers in real docker cgroups: raw dbus-next peers that stamp the
 * arrival of each call with a clock shared by the processes of this host; the ack leaves right
 * after the stamp).
 *
 * Events are sent one at a time, 20 ms apart after the previous one reached everyone (latency,
 * not throughput), an add then a remove of one device, two ways, interleaved:
 * - "spool file": the event's file is renamed into the spool by this process (the helper's
 *   format and protocol); the start is taken just before the rename. This is the daemon's part,
 *   which the goals are about (spool file → ack).
 * - "helper": the real udev helper is spawned with udev's environment; the start is taken just
 *   before the spawn, so the figure includes the helper's own cost (see the helper benchmark).
 *
 * At each size the same containers also get the same call straight from a raw dbus-next client
 * in this process (no daemon): the raw fan-out floor for that many peers on this machine; and
 * once more with the client's socket corked, so all the calls leave in one writev.
 */
import { nextSeqnum, runHelper, usbDevice } from '../test/e2e/support/events.js';
import { corked, countAtLeast, nowMs, rawClient, rawInsert, readyContainers, sleep, stageSpoolFile, startEnv, summarize, type BenchContext, type ReadyContainer, type Row } from './support.js';

const SPACING_MS = 20;
const WARMUP = 10;

interface Series {
  each: number[];
  last: number[];
}

const newSeries = (): Series => ({ each: [], last: [] });

/**
 * Waits until every container got its next event; latency of each from `t0`. The containers are
 * quiet (no line per event on the pipe, which would load the 2 cores more than the calls do) and
 * answer `count` with the arrival time of their last event.
 */
async function acks(containers: ReadyContainer[], expected: number[], t0: number): Promise<number[]> {
  return Promise.all(
    containers.map(async ({ c }, i) => {
      const want = (expected[i] = (expected[i] ?? 0) + 1);
      const got = await countAtLeast(c, want);
      if (got.count !== want) throw new Error(`container ${c.cid?.slice(0, 12)} got ${got.count} events, expected ${want}`);
      return got.t - t0;
    }),
  );
}

function record(s: Series, lat: number[]): void {
  s.each.push(...lat);
  s.last.push(Math.max(...lat));
}

export async function run(ctx: BenchContext): Promise<Row[]> {
  const sizes = [1, 10, 100];
  const perSize = (n: number): number => (ctx.quick ? (n >= 100 ? 20 : 40) : n >= 100 ? 100 : 200);
  const env = await startEnv(ctx);
  const rows: Row[] = [];
  let closeClient = async (): Promise<void> => undefined;
  try {
    const client = await rawClient(env.bus.address);
    closeClient = client.close;
    const containers: ReadyContainer[] = [];
    /** Events each container has had so far (daemon's and raw calls alike). */
    const expected: number[] = [];
    const dev = usbDevice(900);
    let rawSeq = 0;
    for (const size of sizes) {
      const added = await readyContainers(env.bus.address, size - containers.length, true);
      containers.push(...added);
      expected.push(...added.map(() => 0));
      await sleep(500); // let start-up work (replays, state writes) settle
      const spool = newSeries();
      const helper = newSeries();
      const direct = newSeries();
      const directCorked = newSeries();
      const n = perSize(size);
      for (let i = 0; i < 2 * (n + WARMUP); i++) {
        // add, remove through the spool; add, remove through the helper; ... (a repeated add
        // would only update the device, not notify).
        const viaHelper = Math.floor(i / 2) % 2 === 1;
        const action = i % 2 === 0 ? 'add' : 'remove';
        const seq = nextSeqnum();
        let t0 = 0;
        if (viaHelper) {
          t0 = nowMs();
          await runHelper(env.dirs.spoolDir, action, dev, seq);
        } else {
          t0 = stageSpoolFile(env.dirs.spoolDir, seq, action, dev).commit();
        }
        const lat = await acks(containers, expected, t0);
        if (i >= 2 * WARMUP) record(viaHelper ? helper : spool, lat);
        await sleep(SPACING_MS);

        // The raw floor: the same peers called directly, all at once, as the daemon would.
        if (i % 2 === 1) {
          rawSeq++;
          const r0 = nowMs();
          await Promise.all(containers.map(({ unique }) => rawInsert(client.bus, unique, 900, rawSeq)));
          const rl = await acks(containers, expected, r0);
          if (i >= 2 * WARMUP) record(direct, rl);
          await sleep(SPACING_MS);
          if (size > 1) {
            // The same, all calls in one write: how much one syscall per message costs here.
            rawSeq++;
            const c0 = nowMs();
            await Promise.all(corked(client.bus, () => containers.map(({ unique }) => rawInsert(client.bus, unique, 900, rawSeq))));
            const cl = await acks(containers, expected, c0);
            if (i >= 2 * WARMUP) record(directCorked, cl);
            await sleep(SPACING_MS);
          }
        }
      }
      const label = `${size} container${size === 1 ? '' : 's'}`;
      ctx.log(`  ${label}: ${n} events each way measured`);
      rows.push(summarize(`latency.${size}.each`, `spool file → ack, each ack, ${label}`, spool.each));
      if (size > 1) rows.push(summarize(`latency.${size}.last`, `spool file → ack, last ack of an event, ${label}`, spool.last));
      rows.push(summarize(`latency.${size}.helper`, `helper invoked → ack, each ack, ${label}`, helper.each));
      rows.push(summarize(`latency.${size}.raw`, `raw fan-out floor (no daemon): call → ack, each, ${label}`, direct.each));
      if (size > 1) rows.push(summarize(`latency.${size}.rawlast`, `raw fan-out floor (no daemon): last ack, ${label}`, direct.last));
      if (size > 1) rows.push(summarize(`latency.${size}.rawcorked`, `raw fan-out, all calls in one write: last ack, ${label}`, directCorked.last));
    }
    return rows;
  } finally {
    await closeClient();
    await env.close();
  }
}
