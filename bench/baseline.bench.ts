/**
 * The floor the daemon is compared with: raw `@jellybrick/dbus-next` on both sides of the same
 * kind of private dbus-daemon, no daemon in between. The client runs in this process; the
 * services are the fake-container peer (test/e2e/support/container-proc.mjs, raw dbus-next, in
 * quiet mode: it acks without printing), as host processes. The call is exactly the one the
 * daemon makes: `Events.DeviceInserted(s, a{ss})` with 16 properties, from root, to the peer's
 * unique name, through the same bus policy.
 *
 * - sequential: one call at a time, round trip p50/p99/max;
 * - pipelined: 16 calls in flight to one service, calls/s (median of rounds);
 * - fan-out: 10 services, one call in flight to each (the daemon's own pattern with 10 Ready
 *   containers), calls/s (median of rounds).
 */
import { performance } from 'node:perf_hooks';
import { FakeContainer } from '../test/e2e/support/containers.js';
import { median, rawClient, rawInsert, startBus, summarize, valueRow, type BenchContext, type Row } from './support.js';

/** Runs `total` calls with `inFlight` concurrent chains, destinations round-robin; calls/s. */
async function rate(call: (dest: string, i: number) => Promise<unknown>, dests: string[], total: number, inFlight: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async (_, w) => {
      const dest = dests[w % dests.length] as string;
      while (next < total) await call(dest, next++);
    }),
  );
  return total / ((performance.now() - t0) / 1000);
}

export async function run(ctx: BenchContext): Promise<Row[]> {
  const sequential = ctx.quick ? 300 : 2000;
  const perRound = ctx.quick ? 3000 : 20_000;
  const rounds = ctx.quick ? 1 : 3;
  const { bus, stopBus } = await startBus();
  const services: FakeContainer[] = [];
  let closeClient = async (): Promise<void> => undefined;
  try {
    const names: string[] = [];
    for (let i = 0; i < 10; i++) {
      const s = await FakeContainer.start({ cid: null });
      services.push(s);
      names.push((await s.connect(bus.address))['name'] as string);
      await s.request({ op: 'events', mode: 'ack', quiet: true });
    }
    const client = await rawClient(bus.address);
    closeClient = client.close;
    const call = (dest: string, i: number): Promise<unknown> => rawInsert(client.bus, dest, i % 64, i + 1);
    const first = names[0] as string;

    for (let i = 0; i < 200; i++) await call(first, i); // warm-up: JIT, socket buffers
    const rtt: number[] = [];
    for (let i = 0; i < sequential; i++) {
      const t0 = performance.now();
      await call(first, i);
      rtt.push(performance.now() - t0);
    }

    const pipelined: number[] = [];
    const fanout: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Interleaved rounds, so a busy moment of the machine hits both alike.
      pipelined.push(await rate(call, [first], perRound, 16));
      fanout.push(await rate(call, names, perRound, names.length));
    }
    ctx.baseline.pipelinedCallsPerSec = median(pipelined);
    ctx.baseline.fanoutCallsPerSec = median(fanout);
    return [
      summarize('baseline.rtt', `raw dbus-next call round trip, sequential (a{ss} of 16)`, rtt),
      valueRow('baseline.pipelined', `raw calls/s, 16 in flight to one peer (median of ${rounds} × ${perRound})`, median(pipelined), 'calls/s', rounds),
      valueRow('baseline.fanout', `raw calls/s, 1 in flight to each of 10 peers (median of ${rounds} × ${perRound})`, median(fanout), 'calls/s', rounds),
    ];
  } finally {
    await closeClient();
    await Promise.all(services.map((s) => s.kill()));
    await stopBus();
  }
}
