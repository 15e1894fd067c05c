import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { STATE_VERSION, StateStore, migrateState } from '../../src/daemon/state.js';
import { silentLogger } from '../../src/log.js';

const dir = (): string => mkdtempSync(join(tmpdir(), 'hmd-state-'));

describe('StateStore', () => {
  it('batches changes into one atomic write and runs afterDurable callbacks after it', async () => {
    const d = dir();
    let n = 0;
    const store = new StateStore({ dir: d, logger: silentLogger(), collect: () => ({ n: ++n }), flushDelayMs: 5 });
    const done: string[] = [];
    store.markDirty();
    store.afterDurable(() => done.push('a'));
    store.markDirty();
    store.afterDurable(() => done.push('b'));
    expect(done).toEqual([]);
    await vi.waitFor(() => expect(done).toEqual(['a', 'b']));
    expect(n).toBe(1);
    const doc = JSON.parse(readFileSync(join(d, 'state.json'), 'utf8')) as Record<string, unknown>;
    expect(doc).toMatchObject({ version: STATE_VERSION, n: 1 });
    expect(readdirSync(d).filter((f) => f.includes('.tmp'))).toEqual([]);
    await store.stop();
  });

  it('batches progress for longer, but an urgent change brings the write forward', async () => {
    const d = dir();
    let n = 0;
    const store = new StateStore({ dir: d, logger: silentLogger(), collect: () => ({ n: ++n }), flushDelayMs: 5, progressDelayMs: 400 });
    const saved = (): number => {
      try {
        return (JSON.parse(readFileSync(join(d, 'state.json'), 'utf8')) as { n: number }).n;
      } catch {
        return 0;
      }
    };
    for (let i = 0; i < 50; i++) store.markProgress();
    await new Promise((r) => setTimeout(r, 100));
    expect(n).toBe(0); // still waiting: progress alone is not urgent
    const done: string[] = [];
    store.afterDurable(() => done.push('urgent'));
    await vi.waitFor(() => expect(done).toEqual(['urgent']));
    expect(n).toBe(1); // one write carried the progress and the urgent change
    store.markProgress();
    await new Promise((r) => setTimeout(r, 100));
    expect(n).toBe(1);
    await vi.waitFor(() => expect(saved()).toBe(2), { timeout: 2000 });
    await store.stop();
    expect(n).toBe(2); // nothing left dirty: stop() writes nothing more
  });

  it('loads what it saved; a corrupt file is moved aside and the daemon starts empty', async () => {
    const d = dir();
    const store = new StateStore({ dir: d, logger: silentLogger(), collect: () => ({ devices: { x: 1 } }) });
    store.markDirty();
    await store.stop();
    expect(new StateStore({ dir: d, logger: silentLogger(), collect: () => ({}) }).load()).toMatchObject({ devices: { x: 1 } });
    writeFileSync(join(d, 'state.json'), '{"version":1,"devi');
    expect(new StateStore({ dir: d, logger: silentLogger(), collect: () => ({}) }).load()).toBeNull();
    expect(readdirSync(d).some((f) => f.startsWith('state.json.corrupt-'))).toBe(true);
  });

  it('refuses a state file from a newer daemon instead of misreading it', () => {
    const d = dir();
    writeFileSync(join(d, 'state.json'), JSON.stringify({ version: STATE_VERSION + 1, devices: {} }));
    expect(new StateStore({ dir: d, logger: silentLogger(), collect: () => ({}) }).load()).toBeNull();
  });

  it('migrates older formats step by step, and refuses a gap', () => {
    const steps = {
      1: ({ queues, ...rest }: Record<string, unknown>) => ({ ...rest, dispatch: queues, version: 2 }),
      2: (doc: Record<string, unknown>) => ({ ...doc, extra: true, version: 3 }),
    };
    expect(migrateState({ version: 1, devices: { a: 1 }, queues: [] }, steps, 3)).toEqual({ version: 3, devices: { a: 1 }, dispatch: [], extra: true });
    expect(migrateState({ version: 3, k: 1 }, steps, 3)).toEqual({ version: 3, k: 1 });
    expect(() => migrateState({ version: 1 }, {}, 2)).toThrow(/no migration from state version 1/);
    expect(migrateState({ version: STATE_VERSION, k: 1 })).toEqual({ version: STATE_VERSION, k: 1 });
  });

  it('keeps callbacks and retries when the write fails, without touching the good file', async () => {
    const d = dir();
    let fail = false;
    const store = new StateStore({
      dir: d,
      logger: silentLogger(),
      collect: () => {
        if (fail) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        return { ok: true };
      },
      flushDelayMs: 1,
    });
    store.markDirty();
    await store.flush();
    fail = true;
    let ran = false;
    store.afterDurable(() => (ran = true));
    await store.flush();
    expect(ran).toBe(false);
    expect(store.healthy).toBe(false);
    expect(JSON.parse(readFileSync(join(d, 'state.json'), 'utf8'))).toMatchObject({ ok: true });
    fail = false;
    await vi.waitFor(() => expect(ran).toBe(true), { timeout: 3000 });
    expect(store.healthy).toBe(true);
    await store.stop();
  });
});

describe('state format 1 -> 2', () => {
  it('turns each container\'s full list of acknowledged devices into a difference from the table', () => {
    const v1 = {
      version: 1,
      devices: { devices: [{ id: '/devices/a' }, { id: '/devices/b' }] },
      dispatch: { props: [], containers: [{ cid: 'c', told: ['/devices/a', '/devices/gone'], items: [] }] },
    };
    expect(migrateState(v1)).toEqual({
      version: 2,
      devices: v1.devices,
      dispatch: { props: [], containers: [{ cid: 'c', items: [], toldExtra: ['/devices/gone'], toldMissing: ['/devices/b'] }] },
    });
  });
});
