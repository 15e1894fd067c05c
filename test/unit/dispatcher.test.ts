import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import { ContainerQueue, restoreQueue, serializeQueues } from '../../src/dispatch/queue.js';
import { RemoteError, type BusConnection, type BusValue } from '../../src/bus/types.js';
import type { DeviceRecord } from '../../src/devices/types.js';
import { Metrics } from '../../src/daemon/metrics.js';
import { silentLogger } from '../../src/log.js';
import { agentBusName } from '../../src/constants.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);

interface SentCall {
  dest: string;
  path: string;
  member: string;
  body: BusValue[];
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** A delivery connection whose calls the test answers by hand. */
class FakeConn {
  readonly calls: SentCall[] = [];
  pending = 0;
  call(dest: string, path: string, _iface: string, member: string, _sig: string, body: BusValue[]): Promise<BusValue[]> {
    this.pending++;
    return new Promise((res, rej) => {
      this.calls.push({
        dest,
        path,
        member,
        body,
        resolve: () => {
          this.pending--;
          res([]);
        },
        reject: (e) => {
          this.pending--;
          rej(e);
        },
      });
    });
  }
  pendingCalls(): number {
    return this.pending;
  }
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

const dev = (id: string, extra: Record<string, string> = {}): DeviceRecord => ({ id, properties: { DEVPATH: id, SUBSYSTEM: 'usb', ...extra } });

/** State writes the dispatcher waits for; `saveState()` lands them. */
let durable: Array<() => void> = [];
/** What the dispatcher asked of the state store, in order. */
let saves: string[] = [];
const saveState = (): void => {
  for (const cb of durable.splice(0)) cb();
};

describe('Dispatcher', () => {
  let conn: FakeConn;
  let devices: DeviceRecord[];
  let owners: Map<string, string | null>;
  let containerOfName: Map<string, string | null>;
  let metrics: Metrics;
  let slotCap: number;
  let d: Dispatcher;

  beforeEach(() => {
    vi.useFakeTimers();
    durable = [];
    saves = [];
    conn = new FakeConn();
    devices = [];
    owners = new Map([[agentBusName(A), ':1.10'], [agentBusName(B), ':1.20']]);
    containerOfName = new Map([[':1.10', A], [':1.20', B]]);
    metrics = new Metrics();
    slotCap = 100;
    d = new Dispatcher({
      logger: silentLogger(),
      bus: { getNameOwner: async (n: string) => owners.get(n) ?? null },
      pool: { acquire: () => (conn.pending < slotCap ? (conn as unknown as BusConnection) : null) },
      containerOf: async (n) => containerOfName.get(n) ?? null,
      devices: { list: () => devices },
      timeoutMs: 1000,
      queueLimit: 4,
      metrics,
      onDirty: () => saves.push('dirty'),
      onProgress: () => saves.push('progress'),
      afterDurable: (cb) => durable.push(cb),
    });
  });
  afterEach(() => {
    d.stop();
    vi.useRealTimers();
  });

  const seqs = (): string[] => conn.calls.map((c) => (c.body[1] as Record<string, string>)['HMD_SEQUENCE'] as string);
  const ackAll = async (): Promise<void> => {
    await flush();
    for (let guard = 0; guard < 1000; guard++) {
      saveState();
      await flush();
      const open = conn.calls.filter((c) => !(c as { done?: boolean }).done);
      if (open.length === 0) return;
      for (const c of open) {
        (c as { done?: boolean }).done = true;
        c.resolve();
      }
      await flush();
    }
  };

  it('replays present devices first, then live events, sequences 1..n without gaps', async () => {
    devices = [dev('/devices/x1'), dev('/devices/x2')];
    d.ready(A, ':1.10', true);
    await flush();
    d.publish({ kind: 'insert', deviceId: '/devices/x3', properties: dev('/devices/x3').properties });
    d.publish({ kind: 'remove', deviceId: '/devices/x1', properties: dev('/devices/x1').properties });
    await ackAll();
    expect(conn.calls.map((c) => [c.member, c.body[0]])).toEqual([
      ['DeviceInserted', '/devices/x1'],
      ['DeviceInserted', '/devices/x2'],
      ['DeviceInserted', '/devices/x3'],
      ['DeviceRemoved', '/devices/x1'],
    ]);
    expect(seqs()).toEqual(['1', '2', '3', '4']);
    const replay = conn.calls.map((c) => (c.body[1] as Record<string, string>)['HMD_REPLAY']);
    expect(replay).toEqual(['1', '1', undefined, undefined]);
    expect(conn.calls.every((c) => c.dest === ':1.10' && c.path.endsWith(`C_${A}`))).toBe(true);
  });

  it('saves the ack of HMD_SEQUENCE 1 at once, later acks in batches', async () => {
    devices = [dev('/devices/x1'), dev('/devices/x2'), dev('/devices/x3')];
    d.ready(A, ':1.10', true);
    await flush();
    saves = [];
    for (let i = 0; i < 3; i++) {
      conn.calls[i]?.resolve();
      await flush();
    }
    // Each ack: the ack itself, then the next call's sequence number handed out.
    expect(saves).toEqual(['dirty', 'progress', 'progress', 'progress', 'progress']);
  });

  it('keeps at most one call in flight per container', async () => {
    d.ready(A, ':1.10', true);
    for (let i = 0; i < 5; i++) d.publish({ kind: 'insert', deviceId: `/devices/d${i}`, properties: {} });
    await flush();
    expect(conn.calls).toHaveLength(1);
    conn.calls[0]?.resolve();
    await flush();
    expect(conn.calls).toHaveLength(2);
  });

  it('a hung container is marked stalled and does not delay another', async () => {
    d.ready(A, ':1.10', true);
    d.ready(B, ':1.20', true);
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: {} });
    d.publish({ kind: 'insert', deviceId: '/devices/d2', properties: {} });
    await flush();
    // B answers everything, A nothing.
    for (let i = 0; i < 5; i++) {
      for (const c of conn.calls.filter((c) => c.dest === ':1.20' && !(c as { done?: boolean }).done)) {
        (c as { done?: boolean }).done = true;
        c.resolve();
      }
      await flush();
    }
    expect(conn.calls.filter((c) => c.dest === ':1.20')).toHaveLength(2);
    expect(conn.calls.filter((c) => c.dest === ':1.10')).toHaveLength(1);
    vi.advanceTimersByTime(1001);
    expect(d.status(A)?.['stalled']).toBe(true);
    expect(d.status(B)?.['stalled']).toBe(false);
    expect(metrics.get('timeouts')).toBe(1);
    // Still nothing more to A while its call is unanswered.
    d.publish({ kind: 'insert', deviceId: '/devices/d3', properties: {} });
    await flush();
    expect(conn.calls.filter((c) => c.dest === ':1.10')).toHaveLength(1);
    // The late answer counts, and delivery goes on.
    conn.calls.find((c) => c.dest === ':1.10')?.resolve();
    await flush();
    expect(d.status(A)?.['stalled']).toBe(false);
    expect(conn.calls.filter((c) => c.dest === ':1.10')).toHaveLength(2);
  });

  it('a stalled container whose queue overflows is resynchronised, never silently losing a change', async () => {
    devices = [dev('/devices/keep'), dev('/devices/gone')];
    d.ready(A, ':1.10', true);
    await ackAll();
    expect(conn.calls).toHaveLength(2);
    d.publish({ kind: 'insert', deviceId: '/devices/n0', properties: {} });
    await flush();
    vi.advanceTimersByTime(1001);
    expect(d.status(A)?.['stalled']).toBe(true);
    // Overflow (limit 4 while stalled); meanwhile the table changes.
    devices = [dev('/devices/keep'), dev('/devices/n0'), dev('/devices/new')];
    for (let i = 1; i <= 6; i++) d.publish({ kind: 'insert', deviceId: `/devices/n${i}`, properties: {} });
    d.publish({ kind: 'remove', deviceId: '/devices/gone', properties: { DEVPATH: '/devices/gone', LAST: 'yes' } });
    expect(d.status(A)?.['resync']).toBe(true);
    expect(metrics.get('resyncs')).toBe(1);
    // It answers: the summary is built and saved before its first item goes out.
    conn.calls[2]?.resolve();
    await flush();
    expect(conn.calls).toHaveLength(3);
    expect(durable.length).toBeGreaterThan(0);
    await ackAll();
    const after = conn.calls.slice(3).map((c) => [c.member, c.body[0], (c.body[1] as Record<string, string>)['HMD_REPLAY'] ?? '']);
    expect(after).toEqual([
      ['DeviceRemoved', '/devices/gone', ''],
      ['DeviceInserted', '/devices/new', '1'],
    ]);
    expect((conn.calls[3]?.body[1] as Record<string, string>)['LAST']).toBe('yes');
    expect(seqs()).toEqual(['1', '2', '3', '4', '5']);
  });

  it('sends nothing to a name owned by another container (squatter) and counts it', async () => {
    containerOfName.set(':1.10', B);
    d.ready(A, ':1.10', true);
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: {} });
    await flush();
    expect(conn.calls).toHaveLength(0);
    expect(metrics.get('squatAttempts')).toBe(1);
    // The real agent takes the name back.
    owners.set(agentBusName(A), ':1.11');
    containerOfName.set(':1.11', A);
    d.nameOwnerChanged(agentBusName(A), ':1.11');
    await flush();
    expect(conn.calls).toHaveLength(1);
    expect(conn.calls[0]?.dest).toBe(':1.11');
  });

  it('waits for an unowned name, then delivers in order', async () => {
    owners.set(agentBusName(A), null);
    d.ready(A, ':1.10', true);
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: {} });
    await flush();
    expect(conn.calls).toHaveLength(0);
    owners.set(agentBusName(A), ':1.10');
    d.nameOwnerChanged(agentBusName(A), ':1.10');
    await ackAll();
    expect(conn.calls.map((c) => c.body[0])).toEqual(['/devices/d1']);
  });

  it('resends an undelivered event with its HMD_SEQUENCE after a delivery error', async () => {
    d.ready(A, ':1.10', true);
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: {} });
    await flush();
    conn.calls[0]?.reject(new RemoteError('org.freedesktop.DBus.Error.NoReply', 'gone'));
    await flush();
    vi.advanceTimersByTime(200);
    await flush();
    expect(conn.calls).toHaveLength(2);
    expect(seqs()).toEqual(['1', '1']);
    expect(metrics.get('redeliveries')).toBe(1);
  });

  it('a container answering with an error still counts as delivered (no wedge)', async () => {
    d.ready(A, ':1.10', true);
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: {} });
    d.publish({ kind: 'insert', deviceId: '/devices/d2', properties: {} });
    await flush();
    conn.calls[0]?.reject(new RemoteError('org.example.Error.Whatever', 'handler failed'));
    await flush();
    expect(conn.calls.map((c) => c.body[0])).toEqual(['/devices/d1', '/devices/d2']);
  });

  it('waits for a reply slot when every connection is at its cap', async () => {
    slotCap = 1;
    d.ready(A, ':1.10', true);
    d.ready(B, ':1.20', true);
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: {} });
    await flush();
    expect(conn.calls).toHaveLength(1);
    conn.calls[0]?.resolve();
    await flush();
    expect(conn.calls).toHaveLength(2);
    expect(new Set(conn.calls.map((c) => c.dest))).toEqual(new Set([':1.10', ':1.20']));
  });

  it('a repeated Ready is idempotent; a Ready from a new connection replays afresh from 1', async () => {
    devices = [dev('/devices/x1')];
    d.ready(A, ':1.10', true);
    await ackAll();
    d.ready(A, ':1.10', false);
    await ackAll();
    expect(conn.calls).toHaveLength(1);
    owners.set(agentBusName(A), ':1.12');
    containerOfName.set(':1.12', A);
    d.ready(A, ':1.12', true);
    await ackAll();
    expect(conn.calls).toHaveLength(2);
    expect(seqs()).toEqual(['1', '1']);
    expect(conn.calls[1]?.dest).toBe(':1.12');
  });

  it('persists queues: after a restore, the unacknowledged event is resent with its old sequence', async () => {
    d.ready(A, ':1.10', true);
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: { K: 'v' } });
    d.publish({ kind: 'insert', deviceId: '/devices/d2', properties: { K: 'w' } });
    await flush();
    conn.calls[0]?.resolve();
    await flush();
    // d2 is in flight with sequence 2 when the daemon dies.
    const saved = JSON.parse(JSON.stringify(d.serialize()));
    d.stop();
    const conn2 = new FakeConn();
    const d2 = new Dispatcher({
      logger: silentLogger(),
      bus: { getNameOwner: async () => ':1.10' },
      pool: { acquire: () => conn2 as unknown as BusConnection },
      containerOf: async () => A,
      devices: { list: () => [] },
      timeoutMs: 1000,
      queueLimit: 4,
      metrics,
      onDirty: () => undefined,
      onProgress: () => undefined,
      afterDurable: (cb) => durable.push(cb),
    });
    const restored = await d2.restore(saved, async () => true);
    expect(restored).toEqual([A]);
    await flush();
    d2.publish({ kind: 'insert', deviceId: '/devices/d3', properties: {} });
    for (let i = 0; i < 5; i++) {
      for (const c of conn2.calls.filter((c) => !(c as { done?: boolean }).done)) {
        (c as { done?: boolean }).done = true;
        c.resolve();
      }
      await flush();
    }
    expect(conn2.calls.map((c) => [c.body[0], (c.body[1] as Record<string, string>)['HMD_SEQUENCE'], (c.body[1] as Record<string, string>)['K']])).toEqual([
      ['/devices/d2', '2', 'w'],
      ['/devices/d3', '3', undefined],
    ]);
    d2.stop();
  });

  it('drop() forgets a container and its queue', async () => {
    d.ready(A, ':1.10', true);
    d.drop(A, 'test');
    d.publish({ kind: 'insert', deviceId: '/devices/d1', properties: {} });
    await flush();
    expect(conn.calls).toHaveLength(0);
    expect(d.has(A)).toBe(false);
  });

  it('a container whose agent name has no owner is resynced past the limit, once an owner appears', async () => {
    devices = [dev('/devices/a')];
    owners.set(agentBusName(A), null);
    d.ready(A, ':1.10', true);
    await flush();
    for (let i = 0; i < 6; i++) d.publish({ kind: 'insert', deviceId: `/devices/n${i}`, properties: {} });
    expect(d.status(A)?.['resync']).toBe(true);
    expect(conn.calls).toHaveLength(0);
    devices = [dev('/devices/a'), dev('/devices/b')];
    owners.set(agentBusName(A), ':1.10');
    d.nameOwnerChanged(agentBusName(A), ':1.10');
    await ackAll();
    expect(conn.calls.map((c) => [c.member, c.body[0]])).toEqual([
      ['DeviceInserted', '/devices/a'],
      ['DeviceInserted', '/devices/b'],
    ]);
    expect(seqs()).toEqual(['1', '2']);
  });

  it('persists what each container acknowledged as a difference from the devices present', () => {
    const q = new ContainerQueue(A, ':1.10');
    q.told = new Set(['/devices/a', '/devices/b', '/devices/gone']);
    const present = new Set(['/devices/a', '/devices/b', '/devices/c']);
    const saved = serializeQueues([q], present);
    expect(saved.containers[0]).toMatchObject({ toldExtra: ['/devices/gone'], toldMissing: ['/devices/c'] });
    const back = restoreQueue(saved.containers[0]!, saved.props, 0, present);
    expect([...back.told].sort()).toEqual(['/devices/a', '/devices/b', '/devices/gone']);
  });
});
