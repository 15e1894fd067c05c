import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONTAINER_INTERFACE, DAEMON_BUS_NAME, DAEMON_OBJECT_PATH } from '../../src/constants.js';
import { FakeContainer } from '../e2e/support/containers.js';
import { eventually, getStatus, useDaemonSuite } from '../e2e/support/daemon.js';
import { e2eBlocker } from '../e2e/support/dbus.js';
import { nextSeqnum, usbDevice } from '../e2e/support/events.js';
import { arrival, exactlyOnce, pairs, percentile, sleep, writeSpoolEvent } from './support/delivery.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING the hostile-containers reliability test: ${blocker} ***\n`);

const HUNG = 140;
const LOOPERS = 20;
/** Of the loopers, these also go through Ready and die mid-delivery (a Node start each time). */
const FULL_CYCLE_LOOPERS = 4;
const PROBES = 200;
const SPACING_MS = 12;
/** The generous bound on the hostile/quiet p99 ratio (machines here are shared and noisy)... */
const MAX_RATIO = 20;
/** ...which only applies once the hostile p99 looks like starvation (a second), not like a busy
 * 2-core machine: the figures are reported, and judged in BENCHMARKS.md, not here. */
const RATIO_FLOOR_MS = 1000;
const PEER = join(import.meta.dirname, 'support/peer.mjs');

/**
 * A container that restarts for ever: each life is `dbus-send Register` (register, exit), or
 * for the full-cycle ones every 5th life a Node agent that registers, owns its name, calls
 * Ready and dies 50-300 ms later. Stops (between lives) once `stopFile` exists.
 */
function looper(address: string, full: boolean, stopFile: string): Promise<FakeContainer> {
  const script = `
    addr=$1; node=$2; peer=$3; full=$4; stop=$5; i=0
    while [ ! -e "$stop" ]; do
      i=$((i + 1))
      if [ "$full" = 1 ] && [ $((i % 5)) = 0 ]; then
        "$node" "$peer" --cycle "$addr" $((50 + (i * 37) % 250)) >/dev/null 2>&1
      else
        dbus-send --bus="$addr" --print-reply --dest=${DAEMON_BUS_NAME} ${DAEMON_OBJECT_PATH} ${CONTAINER_INTERFACE}.Register >/dev/null 2>&1
      fi
      echo '{"type":"life"}'
      sleep 0.2
    done`;
  return FakeContainer.start({ command: ['sh', '-c', script, 'looper', address, process.execPath, PEER, full ? '1' : '0', stopFile] });
}

describe.skipIf(blocker !== null)('reliability: hostile containers', () => {
  const t = useDaemonSuite();

  /** PROBES events written at a steady pace; per healthy container, their latency (write → arrival). */
  async function probeRun(healthy: FakeContainer[], run: number): Promise<number[]> {
    const base = healthy.map((h) => h.events.length);
    const writes: Array<{ pair: string; t: number }> = [];
    for (let i = 0; i < PROBES; i++) {
      const action = i % 2 === 0 ? 'add' : 'remove';
      const dev = usbDevice(3000 + run * 1000 + Math.floor(i / 2));
      writes.push({ pair: `${action === 'add' ? '+' : '-'}${dev.DEVPATH}`, t: writeSpoolEvent(t.dirs.spoolDir, action, dev, nextSeqnum()) });
      await sleep(SPACING_MS);
    }
    const latencies: number[] = [];
    for (const [k, h] of healthy.entries()) {
      const got = (await h.waitForEvents((base[k] as number) + PROBES, 60_000)).slice(base[k]);
      expect(pairs(got), `healthy container ${k}, run ${run}`).toEqual(writes.map((w) => w.pair));
      got.forEach((e, i) => latencies.push(arrival(e) - (writes[i] as { t: number }).t));
    }
    // Both ends stamp CLOCK_MONOTONIC: anything else would show here, not as a quiet wrong ratio.
    expect(latencies.filter((l) => !(l >= 0 && l < 60_000))).toEqual([]);
    return latencies;
  }

  const summary = (l: number[]): string => `p50 ${percentile(l, 50).toFixed(1)} ms, p99 ${percentile(l, 99).toFixed(1)} ms, max ${Math.max(...l).toFixed(1)} ms`;

  it(`2 healthy containers get every event in order among ${HUNG} hung, ${LOOPERS} crash-looping, 5 squatters and a Register/Ready flood; p99 latency quiet vs hostile`, async () => {
    const address = t.bus.address;
    const healthy = [await FakeContainer.start(), await FakeContainer.start()];
    for (const h of healthy) await h.becomeReady(address);
    const quiet = await probeRun(healthy, 0);

    // 140 hung agents: Ready, and never acknowledge anything.
    const hung: FakeContainer[] = [];
    for (let wave = 0; wave < HUNG / 20; wave++) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => FakeContainer.start()));
      await Promise.all(batch.map((c) => c.becomeReady(address, 'hang')));
      hung.push(...batch);
    }

    // 5 squatters: 3 take a victim's name before it calls Ready, 2 right after it released it.
    const squatters: FakeContainer[] = [];
    const victims: FakeContainer[] = [];
    for (let i = 0; i < 5; i++) {
      const victim = await FakeContainer.start();
      const squatter = await FakeContainer.start();
      await squatter.connect(address);
      await squatter.request({ op: 'events', mode: 'ack' });
      if (i < 3) {
        await victim.connect(address);
        const [, name] = (await victim.call('Register'))['body'] as [number, string];
        expect((await squatter.request({ op: 'own', name }))['result']).toBe(1);
        await victim.request({ op: 'events', mode: 'ack' });
        expect((await victim.request({ op: 'own', name }))['result']).toBe(3); // taken
        expect((await victim.call('Ready'))['error']).toBeUndefined();
      } else {
        const name = await victim.becomeReady(address);
        await victim.request({ op: 'release', name });
        expect((await squatter.request({ op: 'own', name }))['result']).toBe(1);
      }
      squatters.push(squatter);
      victims.push(victim);
    }
    const victimEvents = victims.map((v) => v.events.length);

    // 20 crash-looping containers, restarted for the whole hostile run.
    const stopFile = join(t.dirs.root, 'stop-loopers');
    const loopers = await Promise.all(Array.from({ length: LOOPERS }, (_, i) => looper(address, i < FULL_CYCLE_LOOPERS, stopFile)));
    let lives = 0;
    for (const l of loopers) l.onLine = (msg) => void (msg['type'] === 'life' && lives++);

    // 1 container calling Register/Ready at full speed, 16 calls in flight, through the whole run.
    const flooder = await FakeContainer.start({ command: [process.execPath, PEER] });
    await flooder.connect(address);
    const flood = flooder.request({ op: 'flood', ms: PROBES * SPACING_MS + 4000, inFlight: 16 });
    // Warm-up, not measured: the first events after 140 new Ready containers fan out to all of
    // them (owner checks, one call each), a one-off cost of having 140 containers, hung or not.
    const warm = Date.now();
    for (let i = 0; i < 4; i++) writeSpoolEvent(t.dirs.spoolDir, i % 2 === 0 ? 'add' : 'remove', usbDevice(2900), nextSeqnum());
    for (const h of healthy) await h.waitForEvents(PROBES + 4, 30_000);
    console.info(`[hostile] first events after the hostile containers arrived: delivered in ${Date.now() - warm} ms`);
    await eventually(() => hung.every((c) => c.events.length === 1), 30_000, 'every hung container to hold its one call');
    await sleep(300);

    const hostile = await probeRun(healthy, 1);
    const flooded = await flood;
    writeFileSync(stopFile, '');
    await Promise.all(loopers.map((l) => (l.exited ? undefined : new Promise((r) => l.proc.once('exit', r)))));

    const ratio = percentile(hostile, 99) / percentile(quiet, 99);
    console.info(`[hostile] quiet:   ${summary(quiet)}`);
    console.info(`[hostile] hostile: ${summary(hostile)}  (p99 ratio ${ratio.toFixed(1)}×)`);
    console.info(`[hostile] flood: ${String(flooded['calls'])} Register/Ready calls (${String(flooded['errors'])} errors); crash-loopers: ${lives} lives`);

    // Every event, once, in order, to both healthy containers across both runs.
    for (const h of healthy) exactlyOnce(h.events);
    expect(t.daemon.running).toBe(true);
    // Squatters got nothing; their victims nothing since the squat.
    expect(squatters.map((s) => s.events.length)).toEqual([0, 0, 0, 0, 0]);
    expect(victims.map((v) => v.events.length)).toEqual(victimEvents);
    const st = await getStatus(t.root);
    expect(st.metrics['squatAttempts']).toBeGreaterThanOrEqual(5);
    // The hung ones each hold one unanswered call, no more.
    expect(hung.every((c) => c.events.length <= 1)).toBe(true);
    expect(Number(flooded['calls'])).toBeGreaterThan(100);
    expect(lives).toBeGreaterThan(LOOPERS);
    // Generous: latency is reported above; only a collapse fails the test.
    if (percentile(hostile, 99) > RATIO_FLOOR_MS) expect(ratio).toBeLessThan(MAX_RATIO);

    // The crash-loopers are forgotten once gone.
    for (const l of loopers) await l.kill();
    await eventually(async () => {
      const ids = new Set((await getStatus(t.root)).containers.map((c) => c['id']));
      return loopers.every((l) => !ids.has(l.cid));
    }, 15_000, 'the crash-loopers to be forgotten');
  }, 170_000);
});
