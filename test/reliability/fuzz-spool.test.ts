import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { FakeContainer, killAllContainers } from '../e2e/support/containers.js';
import { cleanupDirs, daemonDirs, eventually, getStatus, rootClient, startDaemon, useDaemonSuite } from '../e2e/support/daemon.js';
import { e2eBlocker, startPrivateBus } from '../e2e/support/dbus.js';
import { nextSeqnum, runHelper, usbDevice } from '../e2e/support/events.js';
import { exactlyOnce, pairs, sleep } from './support/delivery.js';
import { suiteRng } from './support/rng.js';
import { planGarbage, serialize, spoolName, validRecs, type Garbage, type Rec } from './support/spool-garbage.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING the fuzzed-spool reliability test: ${blocker} ***\n`);

/** The quarantine keeps the newest 1000 entries (src/sources/quarantine.ts): exactly that many. */
const GARBAGE = 1000;
/** Of which made by the real helper from an event it cannot name (it writes invalid-<ns>-<pid>). */
const HELPER_INVALID = 10;
const VALID_DEVICES = 60;
const VALID_REMOVES = 40;

/** What the reason must say, for the kinds where the cause is unambiguous. */
const REASON: Record<string, RegExp> = {
  fifo: /FIFO/,
  symlink: /symbolic link/,
  directory: /directory/,
  'device node': /device/,
  socket: /socket/,
  'bad name': /file name/,
  'stale dot-file': /temporary file/,
  empty: /empty/,
  'huge file': /too large|larger than/,
  'huge value': /longer than 4096 bytes|too large|larger than/,
  'too many keys': /more than 512 properties/,
  'duplicate keys': /duplicate key/,
  'name/content mismatch': /file name says/,
};

/** Where the quarantine puts a name: as it is, or shortened with a hash when over 200 bytes. */
const quarantinedAs = (entries: Set<string>, name: string): string | undefined =>
  Buffer.byteLength(name) <= 200 ? (entries.has(name) ? name : undefined) : [...entries].find((e) => e.startsWith(`${name.slice(0, 40)}~`));

describe.skipIf(blocker !== null)('reliability: fuzzed spool', () => {
  afterAll(killAllContainers);

  it(`${GARBAGE} hostile spool entries interleaved with valid events: daemon alive, every one quarantined with a reason, valid events all delivered in order`, async () => {
    const rng = suiteRng('fuzz-spool');
    const bus = await startPrivateBus();
    const dirs = daemonDirs();
    const daemon = await startDaemon(bus, dirs);
    const root = await rootClient(bus);
    try {
      const c = await FakeContainer.start();
      await c.becomeReady(bus.address);
      const spool = dirs.spoolDir;

      // Valid events, in their own order: adds of every device, removes of some after their add.
      const odd = ['Wébcam_日本語_🎥', 'line1\nline2=with=equals "quoted"', 'v'.repeat(4096)];
      const valid: Array<{ action: 'add' | 'remove'; n: number; props: Record<string, string> }> = [];
      for (let n = 0; n < VALID_DEVICES; n++) {
        // Odd but valid values pass through untouched; an outside HMD_ key is dropped, never a reason to refuse.
        const extra: Record<string, string> = n < odd.length ? { ID_MODEL: odd[n] as string } : n === odd.length ? { HMD_SEQUENCE: '999' } : {};
        valid.push({ action: 'add', n, props: usbDevice(n, extra) });
      }
      for (const m of rng.shuffle(Array.from({ length: VALID_DEVICES }, (_, n) => n)).slice(0, VALID_REMOVES)) {
        const after = valid.findIndex((v) => v.n === m) + 1;
        valid.splice(rng.int(after, valid.length), 0, { action: 'remove', n: m, props: usbDevice(m) });
      }
      expect(valid.filter((v) => v.action === 'remove').length).toBe(VALID_REMOVES);

      const plan = planGarbage(rng, spool, GARBAGE - HELPER_INVALID);
      console.info(`[fuzz-spool] garbage by kind: ${JSON.stringify({ ...plan.counts, 'helper invalid name': HELPER_INVALID })}`);
      // One random merge of the three streams (valid order kept), each entry with the next SEQNUM.
      type Step = { kind: 'garbage'; make: (seq: bigint, n: number) => Garbage } | { kind: 'valid'; v: (typeof valid)[number] } | { kind: 'helper-invalid' };
      const steps: Step[] = [
        ...plan.makers.map((make): Step => ({ kind: 'garbage', make })),
        ...Array.from({ length: HELPER_INVALID }, (): Step => ({ kind: 'helper-invalid' })),
      ];
      rng.shuffle(steps);
      const positions = Array.from({ length: valid.length }, () => rng.int(0, steps.length)).sort((a, b) => b - a);
      positions.forEach((pos, i) => steps.splice(pos, 0, { kind: 'valid', v: valid[valid.length - 1 - i] as (typeof valid)[number] }));

      const garbage: Garbage[] = [];
      for (const [i, step] of steps.entries()) {
        const seq = nextSeqnum();
        if (step.kind === 'garbage') garbage.push(step.make(seq, i));
        else if (step.kind === 'valid') await runHelper(spool, step.v.action, step.v.props, seq);
        else await runHelper(spool, rng.pick(['Add', 'add-on', '']), usbDevice(900), seq); // the helper names it invalid-…
        if (i % 50 === 49) plan.flushNonRegular();
      }
      plan.flushNonRegular();
      expect(garbage).toHaveLength(GARBAGE - HELPER_INVALID);

      // Every valid event, once, in order (a single writer: SEQNUM order is udev order).
      const got = exactlyOnce(await c.waitForEvents(valid.length, 60_000));
      const leaked = got.filter((e) => e.deviceId.includes('/usb9/')).map((e) => garbage.find((g) => e.deviceId.endsWith(`/9-${g.n}`)));
      expect(leaked, 'garbage delivered as events').toEqual([]);
      expect(pairs(got)).toEqual(valid.map((v) => `${v.action === 'add' ? '+' : '-'}${v.props['DEVPATH']}`));
      odd.forEach((value, n) => expect(got.find((e) => e.deviceId === usbDevice(n).DEVPATH)?.properties['ID_MODEL']).toBe(value));

      // Every bad entry is in the quarantine, with a reason; nothing else is.
      const q = join(spool, 'quarantine');
      const entries = await eventually(() => {
        const names = existsSync(q) ? readdirSync(q) : [];
        const moved = new Set(names.filter((n) => !n.endsWith('.reason')));
        return moved.size >= GARBAGE && names.length >= 2 * GARBAGE ? moved : null;
      }, 60_000, `${GARBAGE} quarantined entries with reasons`);
      expect(entries.size).toBe(GARBAGE);
      const missing: string[] = [];
      const wrongReason: string[] = [];
      for (const g of garbage) {
        const entry = quarantinedAs(entries, g.name);
        if (entry === undefined) {
          missing.push(`${g.kind}: ${JSON.stringify(g.name)}`);
          continue;
        }
        entries.delete(entry);
        const reason = readFileSync(join(q, `${entry}.reason`), 'utf8').trim();
        if (reason === '' || !(REASON[g.kind] ?? /./).test(reason)) wrongReason.push(`${g.kind} ${JSON.stringify(g.name)}: ${JSON.stringify(reason)}`);
      }
      expect(missing).toEqual([]);
      expect(wrongReason).toEqual([]);
      // What is left are the helper's own invalid-<ns>-<pid> files.
      expect([...entries].filter((e) => /^invalid-\d{10,}-\d+$/.test(e))).toHaveLength(HELPER_INVALID);

      // The daemon counted them, still serves, and kept nothing from the garbage.
      await sleep(300);
      expect(daemon.running).toBe(true);
      expect(c.events).toHaveLength(valid.length);
      const st = await getStatus(root);
      expect(st.metrics['quarantined']).toBe(GARBAGE);
      const present = new Set(valid.map((v) => v.props['DEVPATH']));
      for (const v of valid) if (v.action === 'remove') present.delete(v.props['DEVPATH']);
      expect(st.devices.map((d) => d.id).sort()).toEqual([...present].sort());
      expect((await c.call('Register'))['body']).toEqual([0, `io.veea.VeeaHub.HardwareMonitoringAgent.C_${c.cid}`]);
      // Processed files were deleted: only the quarantine is left in the spool.
      await eventually(() => readdirSync(spool).join() === 'quarantine', 10_000, 'the spool to hold only the quarantine');
    } finally {
      root.close();
      await daemon.stop();
      await bus.stop();
      cleanupDirs(dirs);
    }
  }, 150_000);
});

describe.skipIf(blocker !== null)('reliability: spool entries the fuzz does not cover in bulk', () => {
  const t = useDaemonSuite();
  let c: FakeContainer;
  // The suite kills every container after each test: a fresh Ready one for each.
  beforeEach(async () => {
    c = await FakeContainer.start();
    await c.becomeReady(t.bus.address);
  });

  /** Puts raw bytes under a raw (possibly non-UTF-8) name into the spool, whole. */
  const put = (name: Buffer, content: Buffer): void => {
    const tmp = join(t.dirs.root, 'staging-file');
    writeFileSync(tmp, content);
    renameSync(tmp, Buffer.concat([Buffer.from(`${t.dirs.spoolDir}/`), name]));
  };
  const quarantined = (name: Buffer): boolean => {
    const q = join(t.dirs.spoolDir, 'quarantine');
    return existsSync(q) && readdirSync(q, { encoding: 'buffer' }).some((n) => n.equals(name));
  };
  /** A valid event after the bad one: delivered, so the daemon has looked at the spool since. */
  let probes = 0;
  const probe = async (): Promise<void> => {
    const n = c.events.length;
    await runHelper(t.dirs.spoolDir, 'add', usbDevice(500 + probes++));
    await c.waitForEvents(n + 1);
  };

  // The spool is listed as bytes: decoded as UTF-8, such a name would come back with U+FFFD in
  // it and name a file that does not exist, so it would stay in the spool for good.
  it('a file whose name is not valid UTF-8 is quarantined with a reason', async () => {
    const name = Buffer.concat([Buffer.from('00000000000000000042-add'), Buffer.from([0xff, 0xfe])]);
    put(name, serialize(validRecs(42n, 'add', 1)));
    await probe();
    await eventually(() => quarantined(name), 3_000, 'the non-UTF-8 name to be quarantined');
    expect(existsSync(Buffer.concat([Buffer.from(join(t.dirs.spoolDir, 'quarantine/')), name, Buffer.from('.reason')]))).toBe(true);
    expect(t.daemon.running).toBe(true);
  });

  // zod 4's z.record() skips a `__proto__` key without running the key or value schema, so the
  // parser refuses it before zod sees it: otherwise its value would escape the 4096-byte bound.
  it('a spool file with a `__proto__` key (here with a 20 000-byte value) is refused, not delivered', async () => {
    const seq = nextSeqnum();
    const name = Buffer.from(spoolName(seq));
    const recs: Rec[] = [...validRecs(seq, 'add', 7).slice(0, -1), ['__proto__', 'p'.repeat(20_000)], ['SEQNUM', seq.toString()]];
    put(name, serialize(recs));
    await probe();
    await eventually(() => quarantined(name), 3_000, 'the __proto__ file to be quarantined');
    expect(c.events.some((e) => e.deviceId.endsWith('/9-7'))).toBe(false);
  });
});
