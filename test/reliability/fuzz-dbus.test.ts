import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BusConnection } from '../../src/bus/types.js';
import { FakeContainer } from '../e2e/support/containers.js';
import { eventually, getStatus, useDaemonSuite } from '../e2e/support/daemon.js';
import { e2eBlocker } from '../e2e/support/dbus.js';
import { plugMany, runHelper, usbDevice } from '../e2e/support/events.js';
import { expectation, randomCall, type Caller, type FuzzCall } from './support/dbus-fuzz.js';
import { exactlyOnce } from './support/delivery.js';
import { seededRng, suiteRng } from './support/rng.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING the fuzzed D-Bus reliability test: ${blocker} ***\n`);

const CALLS_PER_CALLER = 300;
const PEER = join(import.meta.dirname, 'support/peer.mjs');
/** "Never a timeout": a reply or an error must come back well within this. */
const REPLY_DEADLINE_MS = 10_000;

interface Peer extends Caller {
  name: string;
  proc: FakeContainer;
  /** A successful Ready() of its own (fresh callers only; the Ready one is ready already). */
  readied: boolean;
}

/** `local`: the library refused to send it (a generator bug, not a daemon answer). */
type Outcome = { kind: 'reply'; body: unknown[] } | { kind: 'error'; name: string; message: string } | { kind: 'timeout' } | { kind: 'local'; message: string };

async function send(p: Peer, call: FuzzCall): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<Outcome>((res) => (timer = setTimeout(() => res({ kind: 'timeout' }), REPLY_DEADLINE_MS)));
  // iface null: container-proc leaves the interface field out (undefined would mean its default).
  const sent = p.proc.call(call.member, call.signature, call.body, { iface: call.iface ?? null, path: call.path }).then(
    (r): Outcome =>
      r['local'] !== undefined
        ? { kind: 'local', message: String(r['local']) }
        : r['error'] !== undefined
          ? { kind: 'error', name: String(r['error']), message: String(r['message'] ?? '') }
          : { kind: 'reply', body: r['body'] as unknown[] },
  );
  try {
    return await Promise.race([sent, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const describeCall = (c: FuzzCall): string =>
  `${c.iface ?? '(no interface)'}.${c.member} at ${c.path} '${c.signature}' ${JSON.stringify(c.body).slice(0, 120)}`;

/** The state a fuzzed call must not change: containers (and their delivery position) and devices. */
async function snapshot(root: BusConnection): Promise<{ containers: unknown[]; devices: unknown[] }> {
  const st = await getStatus(root);
  const containers = st.containers
    .map((c) => ({ id: c['id'], busName: c['busName'], state: c['state'], connections: c['connections'], nextSequence: c['nextSequence'] }))
    .sort((a, b) => String(a.id).localeCompare(String(b.id)));
  return { containers, devices: [...st.devices].sort((a, b) => a.id.localeCompare(b.id)) };
}

describe.skipIf(blocker !== null)('reliability: fuzzed D-Bus input', () => {
  const t = useDaemonSuite();

  it(`${CALLS_PER_CALLER} random calls from each of 5 callers (container, host, non-root): proper replies or errors, daemon alive, state unchanged`, async () => {
    const rng = suiteRng('fuzz-dbus');
    // Devices present, so a wrongful replay would show in the Ready container's sequence.
    await plugMany(t.dirs.spoolDir, 0, 3);
    await eventually(async () => (await getStatus(t.root)).devices.length === 3, 10_000, '3 devices in the table');

    const start = async (name: string, opts: Parameters<typeof FakeContainer.start>[0], kind: Caller['kind'], isRoot: boolean): Promise<Peer> => {
      const proc = await FakeContainer.start({ ...opts, command: [process.execPath, PEER] });
      return { name, proc, kind, root: isRoot, registered: false, readied: false };
    };
    const ready = await start('ready container', {}, 'container', true);
    await ready.proc.becomeReady(t.bus.address);
    ready.registered = true;
    await ready.proc.waitForEvents(3);
    const peers: Peer[] = [
      ready,
      await start('unregistered container', {}, 'container', true),
      await start('host root', { cid: null }, 'host', true),
      await start('host uid 65534', { cid: null, uid: 65534 }, 'host', false),
      await start('container uid 65534', { uid: 65534 }, 'container', false),
    ];
    for (const p of peers.slice(1)) await p.proc.connect(t.bus.address);
    const before = await snapshot(t.root);

    const failures: string[] = [];
    const tally = new Map<string, number>();
    await Promise.all(
      peers.map(async (p, k) => {
        // One stream per caller: concurrent callers must not make the inputs depend on timing.
        const prng = seededRng((rng.seed + k * 0x9e3779b9) >>> 0);
        for (let i = 0; i < CALLS_PER_CALLER; i++) {
          const call = randomCall(prng);
          const want = expectation(call, p);
          const got = await send(p, call);
          const label = got.kind === 'error' ? got.name : got.kind === 'local' ? `local: ${got.message.slice(0, 50)}` : got.kind;
          tally.set(label, (tally.get(label) ?? 0) + 1);
          const ok = got.kind === 'reply' ? want.reply !== undefined && safe(() => want.reply?.(got.body) === true) : got.kind === 'error' && want.errors.includes(got.name);
          if (!ok) {
            failures.push(`${p.name} #${i}: ${describeCall(call)} -> ${JSON.stringify(got).slice(0, 200)}; expected ${want.reply ? 'a reply' : ''}${want.errors.length ? ` ${want.errors.join('|')}` : ''}`);
          }
          // The model's memory of the contract's state machine.
          if (got.kind === 'reply' && call.iface !== undefined && call.signature === '' && call.path === '/io/veea/VeeaHub/HardwareMonitoringDaemon') {
            if (call.member === 'Register' && p.kind === 'container') p.registered = true;
            if (call.member === 'Ready' && p !== ready) p.readied = true;
          }
        }
      }),
    );
    console.info(`[fuzz-dbus] outcomes: ${JSON.stringify(Object.fromEntries([...tally].sort((a, b) => b[1] - a[1])))}`);
    expect(failures.slice(0, 15)).toEqual([]);
    expect(t.daemon.running).toBe(true);

    // Unchanged, except what a valid Register/Ready legitimately did for a container that had not.
    const after = await snapshot(t.root);
    const expected = structuredClone(before.containers) as Array<Record<string, unknown>>;
    for (const p of peers) {
      if (p === ready || p.kind !== 'container' || !p.registered) continue;
      const entry = after.containers.find((c) => (c as { id: string }).id === p.proc.cid) as Record<string, unknown> | undefined;
      expect(entry?.['state'], `${p.name} after its valid Register/Ready`).toBe(p.readied ? 'ready' : 'registered');
      expected.push(entry as Record<string, unknown>);
    }
    expected.sort((a, b) => String(a['id']).localeCompare(String(b['id'])));
    expect(after.containers).toEqual(expected);
    expect(after.devices).toEqual(before.devices);

    // The Ready container got nothing from all this (no replay), and still gets what comes next.
    expect(ready.proc.events).toHaveLength(3);
    await runHelper(t.dirs.spoolDir, 'add', usbDevice(10));
    const got = exactlyOnce(await ready.proc.waitForEvents(4));
    expect(got[3]?.deviceId).toBe(usbDevice(10).DEVPATH);
  }, 120_000);
});

function safe(f: () => boolean): boolean {
  try {
    return f();
  } catch {
    return false;
  }
}
