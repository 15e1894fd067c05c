import { beforeEach, describe, expect, it } from 'vitest';
import { Registry, type ContainerEntry, type ReadyInfo, type RegistryEvent } from '../../src/containers/registry.js';
import { isHmdError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';

const A = '3f1c9a0b7e2d4c5f8a6b1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b';
const B = 'aa5e2b7c19d84f3e6a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f';

describe('Registry', () => {
  let now: number;
  let reg: Registry;
  let events: Array<{ event: RegistryEvent; cid: string; info?: ReadyInfo }>;

  beforeEach(() => {
    now = 1000;
    reg = new Registry({ logger: silentLogger(), clock: () => now });
    events = [];
    for (const event of ['ready', 'unready', 'gone'] as const) {
      reg.on(event, (entry, info) => events.push(info === undefined ? { event, cid: entry.cid } : { event, cid: entry.cid, info }));
    }
  });

  const readyThrows = (cid: string, sender: string): boolean => {
    try {
      reg.ready(cid, sender);
      return false;
    } catch (e) {
      return isHmdError(e, 'NOT_REGISTERED');
    }
  };

  it('register creates one entry with the agent bus name, idempotently', () => {
    const e1 = reg.register(A, ':1.1');
    expect(e1).toMatchObject({ cid: A, busName: `io.veea.VeeaHub.HardwareMonitoringAgent.C_${A}`, state: 'registered', registeredAt: 1000 });
    now = 2000;
    const e2 = reg.register(A, ':1.1');
    expect(e2).toBe(e1);
    expect(e2.registeredAt).toBe(1000);
    expect([...e2.connections]).toEqual([':1.1']);
    expect(reg.list()).toHaveLength(1);
  });

  it('Ready without Register throws NOT_REGISTERED', () => {
    expect(readyThrows(A, ':1.1')).toBe(true);
    reg.register(B, ':1.2');
    expect(readyThrows(A, ':1.1')).toBe(true);
    expect(events).toEqual([]);
  });

  it('Ready: fresh first, then idempotent, fresh again from another connection', () => {
    reg.register(A, ':1.1');
    now = 1500;
    const r1 = reg.ready(A, ':1.1');
    expect(r1.fresh).toBe(true);
    expect(r1.entry).toMatchObject({ state: 'ready', readyConnection: ':1.1', readyAt: 1500 });
    now = 1600;
    const r2 = reg.ready(A, ':1.1');
    expect(r2.fresh).toBe(false);
    expect(r2.entry.readyAt).toBe(1500);
    // A restarted agent on a new connection of the same container: replay afresh.
    reg.register(A, ':1.3');
    expect(reg.register(A, ':1.3').state).toBe('ready');
    const r3 = reg.ready(A, ':1.3');
    expect(r3.fresh).toBe(true);
    expect(r3.entry).toMatchObject({ readyConnection: ':1.3', readyAt: 1600 });
    expect(events).toEqual([
      { event: 'ready', cid: A, info: { fresh: true } },
      { event: 'ready', cid: A, info: { fresh: false } },
      { event: 'ready', cid: A, info: { fresh: true } },
    ]);
  });

  it('a process of a registered container may call Ready without having registered itself', () => {
    reg.register(A, ':1.1');
    const { entry, fresh } = reg.ready(A, ':1.2');
    expect(fresh).toBe(true);
    expect([...entry.connections].sort()).toEqual([':1.1', ':1.2']);
  });

  it('two connections of one container are one entry, gone only after the last leaves', () => {
    reg.register(A, ':1.1');
    reg.register(A, ':1.2');
    reg.register(B, ':1.3');
    expect(reg.list().map((e) => e.cid)).toEqual([A, B]);
    expect(reg.get(A)?.connections.size).toBe(2);
    expect(reg.connectionGone(':1.1')).toBeUndefined();
    expect(reg.get(A)?.connections).toEqual(new Set([':1.2']));
    const gone = reg.connectionGone(':1.2');
    expect(gone?.cid).toBe(A);
    expect(reg.get(A)).toBeUndefined();
    expect(reg.get(B)).toBeDefined();
    expect(events).toEqual([{ event: 'gone', cid: A }]);
  });

  it('an unknown connection leaving changes nothing', () => {
    reg.register(A, ':1.1');
    expect(reg.connectionGone(':1.99')).toBeUndefined();
    expect(reg.get(A)?.connections.size).toBe(1);
    expect(events).toEqual([]);
  });

  it('a container that registers again after all its connections left starts afresh', () => {
    reg.register(A, ':1.1');
    reg.ready(A, ':1.1');
    reg.connectionGone(':1.1');
    now = 5000;
    const e = reg.register(A, ':1.7');
    expect(e).toMatchObject({ state: 'registered', registeredAt: 5000 });
    expect(e.readyConnection).toBeUndefined();
    expect(reg.ready(A, ':1.7').fresh).toBe(true);
    expect(events.map((x) => x.event)).toEqual(['ready', 'gone', 'ready']);
  });

  it('the ready agent leaving while another process stays: back to registered', () => {
    reg.register(A, ':1.1');
    reg.register(A, ':1.2');
    reg.ready(A, ':1.2');
    expect(reg.connectionGone(':1.2')).toBeUndefined();
    const e = reg.get(A);
    expect(e).toMatchObject({ state: 'registered', connections: new Set([':1.1']) });
    expect(e?.readyConnection).toBeUndefined();
    expect(e?.readyAt).toBeUndefined();
    expect(events.map((x) => x.event)).toEqual(['ready', 'unready']);
    expect(reg.ready(A, ':1.1').fresh).toBe(true);
  });

  it('a late Register/Ready from a connection that already left is not kept', () => {
    reg.register(A, ':1.1');
    reg.connectionGone(':1.1');
    const detached = reg.register(A, ':1.1');
    expect(detached.busName).toContain(A);
    expect(reg.get(A)).toBeUndefined();
    reg.register(A, ':1.2');
    expect(readyThrows(A, ':1.1')).toBe(true);
    expect(reg.get(A)?.connections).toEqual(new Set([':1.2']));
    expect(reg.get(A)?.state).toBe('registered');
  });

  it('restoreReady brings back a ready container without a fresh replay', () => {
    now = 7000;
    const e = reg.restoreReady(A, ':1.40');
    expect(e).toMatchObject({ cid: A, state: 'ready', readyConnection: ':1.40', readyAt: 7000, connections: new Set([':1.40']) });
    expect(reg.ready(A, ':1.40').fresh).toBe(false);
    expect(reg.restoreReady(A, ':1.40')).toBe(e);
    expect(events).toEqual([
      { event: 'ready', cid: A, info: { fresh: false, restored: true } },
      { event: 'ready', cid: A, info: { fresh: false } },
    ]);
    expect(reg.connectionGone(':1.40')?.cid).toBe(A);
    expect(reg.list()).toEqual([]);
  });

  it('containerOf finds the container of a connection', () => {
    reg.register(A, ':1.1');
    expect(reg.containerOf(':1.1')?.cid).toBe(A);
    expect(reg.containerOf(':1.2')).toBeUndefined();
  });

  it('refuses a connection switching containers, and bad container IDs', () => {
    reg.register(A, ':1.1');
    expect(() => reg.register(B, ':1.1')).toThrow(/already attached/);
    expect(reg.get(B)).toBeUndefined();
    expect(() => reg.restoreReady(B, ':1.1')).toThrow(/already attached/);
    expect(reg.get(B)).toBeUndefined();
    for (const bad of [A.toUpperCase(), A.slice(1), `${A}0`, '', 'x'.repeat(64)]) {
      expect(() => reg.register(bad, ':1.5')).toThrow(/not a 64-hex container ID/);
    }
  });

  it('a throwing listener does not break the state change or other listeners; unsubscribe works', () => {
    const seen: string[] = [];
    reg.on('ready', () => {
      throw new Error('boom');
    });
    const off = reg.on('ready', (e: ContainerEntry) => seen.push(e.cid));
    reg.register(A, ':1.1');
    expect(reg.ready(A, ':1.1').fresh).toBe(true);
    expect(seen).toEqual([A]);
    off();
    reg.ready(A, ':1.1');
    expect(seen).toEqual([A]);
  });
});
