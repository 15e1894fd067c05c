import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FakeContainer } from '../e2e/support/containers.js';
import { type DaemonDirs, type DaemonProcess, eventually, getStatus, rootClient, startDaemon, usePerTestBus } from '../e2e/support/daemon.js';
import { e2eBlocker, type PrivateBus } from '../e2e/support/dbus.js';
import { nextSeqnum, plugMany, runHelper, usbDevice } from '../e2e/support/events.js';
import { exactlyOnce, pairs, sleep, uniqueInOrder, writeSpoolEvent } from './support/delivery.js';
import { suiteRng } from './support/rng.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING the fault reliability tests: ${blocker} ***\n`);

const BURST = 500;
const KILLS = 5;

const expectedPairs = (events: Array<{ action: string; n: number }>): string[] => events.map((e) => `${e.action === 'add' ? '+' : '-'}${usbDevice(e.n).DEVPATH}`);

describe.skipIf(blocker !== null)('reliability: faults', () => {
  const { setup, cleanup } = usePerTestBus();
  /** Starts a daemon that is stopped after the test (whichever one is current then). */
  const daemonFor = async (bus: PrivateBus, dirs: DaemonDirs): Promise<{ current: DaemonProcess }> => {
    const ref = { current: await startDaemon(bus, dirs) };
    cleanup.push(() => ref.current.stop().then(() => undefined));
    return ref;
  };

  it(`kill -9 of the daemon at ${KILLS} random points of ${BURST}-event bursts: every Ready container ends with every event, in order, repeats only under a seen HMD_SEQUENCE`, async () => {
    const rng = suiteRng('faults/daemon-kill');
    const { bus, dirs } = await setup();
    const daemon = await daemonFor(bus, dirs);
    // Three kinds of Ready container: a prompt one, a slow one (calls in flight at the kill), and
    // the real `hmd agent`, which must ride out the restarts on its own.
    const prompt = await FakeContainer.start();
    await prompt.becomeReady(bus.address);
    const slow = await FakeContainer.start();
    await slow.becomeReady(bus.address);
    await slow.request({ op: 'events', mode: 'ack', delayMs: 3 });
    const agent = await FakeContainer.agent(bus.address);
    await eventually(async () => (await getStatus(await rootClientOnce(bus))).containers.filter((c) => c['state'] === 'ready').length === 3, 10_000, 'three Ready containers');
    const containers = [prompt, slow, agent];
    const names = ['prompt', 'slow (3 ms acks)', 'hmd agent'];

    const written: Array<{ action: string; n: number }> = [];
    let duplicates = 0;
    for (let round = 0; round < KILLS; round++) {
      // This round: adds of 250 new devices, then their removes; one kill at a seeded point,
      // counted in events written or in events the prompt container has received.
      const plan = Array.from({ length: BURST }, (_, k) => ({ action: k < BURST / 2 ? 'add' : 'remove', n: round * 1000 + (k % (BURST / 2)) }));
      const byDelivery = rng.bool();
      const at = rng.int(1, BURST - 1);
      const base = written.length;
      let killed: Promise<void> | null = null;
      const kill = (): void => {
        killed ??= (async () => {
          daemon.current.proc.kill('SIGKILL');
          await daemon.current.waitExit();
          daemon.current = await startDaemon(bus, dirs);
        })();
      };
      const watcher = byDelivery
        ? (async () => {
            await eventually(() => uniqueInOrder(prompt.events).length >= base + at || killed !== null, 60_000, 'the kill point');
            kill();
          })()
        : Promise.resolve();
      // Odd rounds go through the real helper (udev's pace), even ones are written directly
      // (same format, atomic): a backlog the daemon reads in batches when it is killed.
      const viaHelper = round % 2 === 0;
      for (const [k, e] of plan.entries()) {
        if (viaHelper) await runHelper(dirs.spoolDir, e.action, usbDevice(e.n));
        else writeSpoolEvent(dirs.spoolDir, e.action, usbDevice(e.n), nextSeqnum());
        written.push(e);
        if (!byDelivery && k + 1 === at) kill();
        else if (!viaHelper && k % 50 === 49) await sleep(1);
      }
      await watcher; // a delivery point may be reached only after the last write
      await killed;
      console.info(`[faults/daemon-kill] round ${round + 1} (${viaHelper ? 'helper' : 'direct writes'}): killed at ${at} events ${byDelivery ? 'delivered' : 'written'}`);

      const want = expectedPairs(written);
      for (const [i, c] of containers.entries()) {
        const got = await eventually(() => {
          const u = uniqueInOrder(c.events, names[i]);
          return u.length >= want.length ? u : null;
        }, 60_000, `${names[i]} to hold ${want.length} events after round ${round + 1}`);
        expect(pairs(got), names[i]).toEqual(want);
      }
    }
    await sleep(300);
    for (const [i, c] of containers.entries()) {
      duplicates += c.events.length - uniqueInOrder(c.events, names[i]).length;
      expect(uniqueInOrder(c.events, names[i])).toHaveLength(written.length);
    }
    console.info(`[faults/daemon-kill] ${written.length} events, ${KILLS} kills: ${duplicates} repeated deliveries in all (each under an HMD_SEQUENCE already seen)`);
    // Still the same three Ready containers, none re-registered from scratch.
    const st = await getStatus(await rootClientOnce(bus));
    expect(st.containers.filter((c) => c['state'] === 'ready').map((c) => c['id']).sort()).toEqual(containers.map((c) => c.cid).sort());
  }, 150_000);

  it('kill -9 of containers mid-delivery: the others get every event exactly once, in order; the killed ones are dropped', async () => {
    const rng = suiteRng('faults/container-kill');
    const { bus, dirs } = await setup({ delivery: { timeoutMs: 1000 } });
    await daemonFor(bus, dirs);
    const all = await Promise.all(Array.from({ length: 8 }, () => FakeContainer.start()));
    for (const c of all) {
      await c.becomeReady(bus.address);
      await c.request({ op: 'events', mode: 'ack', delayMs: rng.int(0, 3) });
    }
    const victims = all.slice(0, 4);
    const survivors = all.slice(4);
    // Each victim dies once it has received a seeded number of events: a call is in flight then.
    const deaths = victims.map(async (v) => {
      const at = rng.int(1, 250);
      await v.waitForEvents(at, 60_000);
      await v.kill('SIGKILL');
      return at;
    });
    await plugMany(dirs.spoolDir, 0, 150);
    await plugMany(dirs.spoolDir, 0, 150, 'remove');
    console.info(`[faults/container-kill] victims killed after ${(await Promise.all(deaths)).join(', ')} events`);
    const want = expectedPairs([...Array.from({ length: 150 }, (_, n) => ({ action: 'add', n })), ...Array.from({ length: 150 }, (_, n) => ({ action: 'remove', n }))]);
    for (const s of survivors) expect(pairs(exactlyOnce(await s.waitForEvents(300, 60_000)))).toEqual(want);
    const root = await rootClientOnce(bus);
    await eventually(async () => {
      const ids = (await getStatus(root)).containers.map((c) => c['id']);
      return victims.every((v) => !ids.includes(v.cid)) && survivors.every((s) => ids.includes(s.cid));
    }, 10_000, 'the killed containers to be dropped, the others kept');
    await sleep(300);
    for (const s of survivors) expect(s.events).toHaveLength(300);
  }, 120_000);

  it('dbus-daemon killed: the daemon exits non-zero within 5 s', async () => {
    const { bus, dirs } = await setup({ delivery: { timeoutMs: 300 } });
    const daemon = await startDaemon(bus, dirs);
    cleanup.push(() => daemon.stop().then(() => undefined));
    // Calls in flight when the bus dies: a hung container and a burst under way.
    const hung = await FakeContainer.start();
    await hung.becomeReady(bus.address, 'hang');
    const c = await FakeContainer.start();
    await c.becomeReady(bus.address);
    const burst = plugMany(dirs.spoolDir, 0, 50);
    await c.waitForEvents(5);
    const t0 = Date.now();
    bus.kill('SIGKILL');
    const code = await daemon.waitExit(5_000);
    const ms = Date.now() - t0;
    console.info(`[faults/bus-kill] daemon exited ${code} ${ms} ms after dbus-daemon was killed`);
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(ms).toBeLessThan(5_000);
    expect(daemon.logsMatching('cannot go on serving').length + daemon.logsMatching('exiting').length).toBeGreaterThan(0);
    await burst;
  }, 60_000);

  it('state dir on a full tmpfs: clear error, the last good state stays intact, delivery goes on, saved again when space returns', async () => {
    const { bus, dirs } = await setup();
    mkdirSync(dirs.stateDir, { recursive: true });
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dirs.stateDir], { encoding: 'utf8' });
    expect(mounted.status, `mount tmpfs: ${mounted.stderr}`).toBe(0);
    // Registered after setup's cleanups, so it runs before the folder is removed.
    cleanup.push(() => unmount(dirs.stateDir));
    const daemon = await daemonFor(bus, dirs);
    const stateFile = join(dirs.stateDir, 'state.json');
    const c = await FakeContainer.start();
    await c.becomeReady(bus.address);
    await plugMany(dirs.spoolDir, 0, 3);
    await c.waitForEvents(3);
    const good = await eventually(() => {
      const text = existsSync(stateFile) ? readFileSync(stateFile, 'utf8') : '';
      return [0, 1, 2].every((n) => text.includes(usbDevice(n).DEVPATH)) ? text : null;
    }, 10_000, 'the state file to hold the 3 devices');

    const filler = join(dirs.stateDir, 'filler');
    fill(filler);
    await plugMany(dirs.spoolDir, 3, 2);
    // Delivery goes on while nothing can be saved.
    expect(pairs(exactlyOnce(await c.waitForEvents(5))).slice(3)).toEqual(expectedPairs([{ action: 'add', n: 3 }, { action: 'add', n: 4 }]));
    const failure = await eventually(() => daemon.current.logsMatching('cannot save state')[0], 10_000, 'the "cannot save state" error');
    console.info(`[faults/full-disk] logged: ${JSON.stringify(failure)}`);
    expect(failure['level']).toBe('error');
    expect(JSON.stringify(failure)).toMatch(/ENOSPC|no space/i);
    const root = await rootClientOnce(bus);
    expect((await getStatus(root) as unknown as { stateHealthy: boolean }).stateHealthy).toBe(false);
    // The last good state is still there, whole; no half-written temp file is left behind.
    await sleep(1500); // at least one retry has failed meanwhile
    expect(readFileSync(stateFile, 'utf8')).toBe(good);
    expect(() => JSON.parse(good) as unknown).not.toThrow();
    expect(readdirSync(dirs.stateDir).filter((f) => f.includes('.tmp'))).toEqual([]);
    // The events not yet covered by a saved state stay in the spool (nothing lost on a crash now).
    expect(readdirSync(dirs.spoolDir).filter((f) => /^\d{20}-add$/.test(f))).toHaveLength(2);

    // A container that calls Ready now: answered once its readiness is durable (README), so not
    // before space returns. Reported, not asserted: only that it is answered and replayed after.
    const late = await FakeContainer.start();
    await late.connect(bus.address);
    const [, lateName] = (await late.call('Register'))['body'] as [number, string];
    await late.request({ op: 'events', mode: 'ack' });
    await late.request({ op: 'own', name: lateName });
    let readyAnsweredAt = 0;
    const lateReady = late.call('Ready').then((r) => {
      readyAnsweredAt = Date.now();
      return r;
    });
    await sleep(1000);
    const freedAt = Date.now();
    console.info(`[faults/full-disk] Ready called during the outage: ${readyAnsweredAt === 0 ? 'not answered while the disk was full' : 'answered while the disk was full'}`);

    unlinkSync(filler);
    await eventually(() => daemon.current.logsMatching('state is being saved again').length > 0, 10_000, 'the "saved again" line');
    expect((await lateReady)['error']).toBeUndefined();
    console.info(`[faults/full-disk] … answered ${readyAnsweredAt - freedAt} ms after space returned`);
    expect(pairs(exactlyOnce(await late.waitForEvents(5)))).toEqual(expectedPairs([0, 1, 2, 3, 4].map((n) => ({ action: 'add', n }))));
    const text = readFileSync(stateFile, 'utf8');
    expect([3, 4].every((n) => text.includes(usbDevice(n).DEVPATH))).toBe(true);
    expect((await getStatus(root) as unknown as { stateHealthy: boolean }).stateHealthy).toBe(true);
    await eventually(() => readdirSync(dirs.spoolDir).filter((f) => /^\d{20}-add$/.test(f)).length === 0, 10_000, 'the spool files to be released');
  }, 60_000);

  it('spool dir deleted while running: recreated, and new events still arrive', async () => {
    const { bus, dirs } = await setup();
    const daemon = await daemonFor(bus, dirs);
    const c = await FakeContainer.start();
    await c.becomeReady(bus.address);
    await plugMany(dirs.spoolDir, 0, 2);
    await c.waitForEvents(2);

    // Deleted, and left alone: the daemon notices, says so, and puts it back.
    rmSync(dirs.spoolDir, { recursive: true, force: true });
    await eventually(() => existsSync(dirs.spoolDir), 10_000, 'the daemon to recreate the spool directory');
    // The log line travels through a pipe: it may come in after the folder is visible.
    await eventually(() => daemon.current.logsMatching('spool directory vanished').length > 0, 10_000, 'the daemon to log that the spool directory vanished');
    await plugMany(dirs.spoolDir, 2, 3);
    await c.waitForEvents(5);

    // Deleted, and at once written to again: the helper recreates it, the daemon follows.
    rmSync(dirs.spoolDir, { recursive: true, force: true });
    await plugMany(dirs.spoolDir, 5, 3);
    const got = exactlyOnce(await c.waitForEvents(8, 15_000));
    expect(pairs(got)).toEqual(expectedPairs(Array.from({ length: 8 }, (_, n) => ({ action: 'add', n }))));
    expect(daemon.current.running).toBe(true);
  }, 60_000);

  /** Root bus connections opened by tests, closed at the end. */
  const roots = new Map<PrivateBus, Awaited<ReturnType<typeof rootClient>>>();
  async function rootClientOnce(bus: PrivateBus): Promise<Awaited<ReturnType<typeof rootClient>>> {
    let r = roots.get(bus);
    if (r === undefined) {
      r = await rootClient(bus);
      roots.set(bus, r);
      const conn = r;
      cleanup.push(() => {
        conn.close();
        roots.delete(bus);
      });
    }
    return r;
  }
});

/** Fills the filesystem of `file` to the last byte. */
function fill(file: string): void {
  for (const chunk of [1 << 20, 1 << 16, 4096, 512, 1]) {
    try {
      for (;;) appendFileSync(file, Buffer.alloc(chunk));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    }
  }
}

function unmount(dir: string): void {
  if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
}

