import { spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectBus } from '../../src/bus/connection.js';
import { loadInterface } from '../../src/bus/introspect.js';
import { createRouter, ret } from '../../src/bus/router.js';
import { RemoteError, type BusConnection, type CallReply } from '../../src/bus/types.js';
import { agentCommand, runAgent } from '../../src/cli/agent.js';
import { SequenceTracker, connectAgent, parseNotice, type Agent, type AgentOptions, type AgentState, type DeviceNotice } from '../../src/client/index.js';
import {
  CONTAINER_INTERFACE,
  DAEMON_BUS_NAME,
  DAEMON_OBJECT_PATH,
  EVENTS_INTERFACE,
  Status,
  agentBusName,
  agentObjectPath,
} from '../../src/constants.js';
import { ErrorCode, HmdError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { startPrivateBus, type PrivateBus } from './support/dbus.js';

function whyNot(): string | null {
  if (process.getuid?.() !== 0) return 'the fake daemon must own a root-only bus name: run as root';
  if (spawnSync('dbus-daemon', ['--version']).status !== 0) return 'dbus-daemon is not installed (run `make setup`)';
  return null;
}
const blocker = whyNot();
if (blocker !== null) console.warn(`\n*** SKIPPING test/e2e/client.test.ts: ${blocker} ***\n`);

const CID = 'c0ffee'.padEnd(64, '7');
const NAME = agentBusName(CID);
const logger = silentLogger();

async function waitUntil(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Stands in for the real daemon: owns its name as root and answers the Container interface. */
class FakeDaemon {
  readonly calls: Array<{ member: string; sender: string }> = [];
  register: [number, string] = [Status.OK, NAME];
  startSave: number = Status.OK;
  /** Register never answers (a hung daemon). */
  hangRegister = false;
  /** Answers to GetKeystoreStatus in turn; the last one repeats. */
  saveStatuses: number[] = [Status.OK];

  private constructor(readonly conn: BusConnection) {}

  static async start(address: string): Promise<FakeDaemon> {
    const conn = await connectBus({ bus: address, logger });
    const d = new FakeDaemon(conn);
    const answer = (member: string, reply: () => CallReply | Promise<CallReply>) => (call: { sender: string }) => {
      d.calls.push({ member, sender: call.sender });
      return reply();
    };
    conn.serve(
      createRouter([
        {
          path: DAEMON_OBJECT_PATH,
          interfaces: [
            {
              def: loadInterface(CONTAINER_INTERFACE),
              impl: {
                Register: answer('Register', () => (d.hangRegister ? new Promise<never>(() => undefined) : ret('is', d.register))),
                Ready: answer('Ready', () => ret()),
                StartKeystoreSave: answer('StartKeystoreSave', () => ret('i', [d.startSave])),
                GetKeystoreStatus: answer('GetKeystoreStatus', () => ret('i', [d.saveStatuses.length > 1 ? d.saveStatuses.shift() : d.saveStatuses[0]])),
              },
            },
          ],
        },
      ]),
    );
    expect(await conn.requestName(DAEMON_BUS_NAME, { doNotQueue: true })).toBe('primary');
    return d;
  }

  count(member: string): number {
    return this.calls.filter((c) => c.member === member).length;
  }

  /** Calls the agent's Events object on its unique name, as the daemon does. */
  async send(member: 'DeviceInserted' | 'DeviceRemoved', deviceId: string, properties: Record<string, string>): Promise<void> {
    const owner = await this.conn.getNameOwner(NAME);
    if (owner === null) throw new Error(`${NAME} has no owner`);
    await this.conn.call(owner, agentObjectPath(CID), EVENTS_INTERFACE, member, 'sa{ss}', [deviceId, properties], { timeoutMs: 10_000 });
  }

  close(): void {
    this.conn.close();
  }
}

const usb = (seq: number, extra: Record<string, string> = {}): Record<string, string> => ({
  SUBSYSTEM: 'usb',
  DEVPATH: '/devices/pci0000:00/0000:00:14.0/usb1/1-2',
  ID_VENDOR_ID: '0403',
  HMD_SEQUENCE: String(seq),
  ...extra,
});
const DEV = '/devices/pci0000:00/0000:00:14.0/usb1/1-2';

describe.skipIf(blocker !== null)('client library against a private dbus-daemon', () => {
  let bus: PrivateBus;
  let daemon: FakeDaemon;
  const open: Agent[] = [];
  const others: BusConnection[] = [];

  beforeEach(async () => {
    bus = await startPrivateBus();
    daemon = await FakeDaemon.start(bus.address);
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((a) => a.close()));
    for (const c of others.splice(0)) c.close();
    daemon.close();
    await bus.stop();
  });

  const agentWith = async (o: Omit<AgentOptions, 'bus' | 'logger'> = {}): Promise<Agent> => {
    const a = await connectAgent({ bus: bus.address, logger, ...o });
    open.push(a);
    return a;
  };
  const recorder = () => {
    const seen: Array<{ type: string } & DeviceNotice> = [];
    return {
      seen,
      onInserted: (n: DeviceNotice) => void seen.push({ type: 'insert', ...n }),
      onRemoved: (n: DeviceNotice) => void seen.push({ type: 'remove', ...n }),
    };
  };

  it('registers, owns its name, exports Events and calls Ready, from one connection', async () => {
    const states: AgentState[] = [];
    const agent = await agentWith({ onStateChange: (s) => states.push(s) });
    expect(agent.cid).toBe(CID);
    expect(agent.busName).toBe(NAME);
    expect(states).toEqual(['connecting', 'registered', 'ready']);
    const owner = await daemon.conn.getNameOwner(NAME);
    expect(owner).toMatch(/^:/);
    expect(daemon.calls.map((c) => c.member)).toEqual(['Register', 'Ready']);
    expect(daemon.calls.every((c) => c.sender === owner)).toBe(true);
    // The router enforces the contract's signature.
    await expect(daemon.conn.call(owner as string, agentObjectPath(CID), EVENTS_INTERFACE, 'DeviceInserted', 's', [DEV])).rejects.toSatisfy(
      (e) => e instanceof RemoteError && e.dbusName === 'org.freedesktop.DBus.Error.InvalidArgs',
    );
  });

  it('passes notices on in order, with sequence and replay parsed and raw properties kept', async () => {
    const r = recorder();
    await agentWith(r);
    await daemon.send('DeviceInserted', DEV, usb(1, { HMD_REPLAY: '1' }));
    await daemon.send('DeviceInserted', '/devices/platform/serial8250/tty/ttyS0', { SUBSYSTEM: 'tty', HMD_SEQUENCE: '2' });
    await daemon.send('DeviceRemoved', DEV, usb(3));
    expect(r.seen.map((n) => [n.type, n.deviceId, n.sequence, n.replay])).toEqual([
      ['insert', DEV, 1, true],
      ['insert', '/devices/platform/serial8250/tty/ttyS0', 2, false],
      ['remove', DEV, 3, false],
    ]);
    expect(r.seen[0]?.properties).toEqual(usb(1, { HMD_REPLAY: '1' }));
    expect(r.seen[2]?.properties['ID_VENDOR_ID']).toBe('0403');
  });

  it('acknowledges only once the handler has finished', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let handled = false;
    await agentWith({
      onInserted: async () => {
        await gate;
        handled = true;
      },
    });
    let acked = false;
    const delivery = daemon.send('DeviceInserted', DEV, usb(1)).then(() => (acked = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(acked).toBe(false);
    release();
    await delivery;
    expect(handled).toBe(true);
  });

  it('drops a repeated sequence, and acknowledges a notice whose handler throws', async () => {
    const seen: number[] = [];
    await agentWith({
      onInserted: (n) => {
        seen.push(n.sequence);
        if (n.sequence === 2) throw new Error('application bug');
      },
    });
    for (const s of [1, 2, 2, 3, 3]) await daemon.send('DeviceInserted', DEV, usb(s));
    expect(seen).toEqual([1, 2, 3]);
  });

  it('registers again and calls Ready when the daemon restarts; drops repeats, follows a fresh replay', async () => {
    const states: AgentState[] = [];
    const r = recorder();
    const agent = await agentWith({ ...r, onStateChange: (s) => states.push(s) });
    for (const s of [1, 2, 3]) await daemon.send('DeviceInserted', DEV, usb(s));
    const agentConn = await daemon.conn.getNameOwner(NAME);

    daemon.close();
    await waitUntil('the agent to notice the daemon left', () => agent.state === 'connecting');
    daemon = await FakeDaemon.start(bus.address);
    await waitUntil('Ready on the new daemon', () => daemon.count('Ready') === 1);
    expect(daemon.calls.map((c) => c.member)).toEqual(['Register', 'Ready']);
    expect(daemon.calls[0]?.sender).toBe(agentConn);
    await waitUntil('state ready', () => agent.state === 'ready');
    expect(states).toEqual(['connecting', 'registered', 'ready', 'connecting', 'registered', 'ready']);
    expect(await daemon.conn.getNameOwner(NAME)).toBe(agentConn);

    // A restored daemon continues the sequence, resending what it had no ack recorded for.
    await daemon.send('DeviceInserted', DEV, usb(3));
    await daemon.send('DeviceRemoved', DEV, usb(4));
    // A daemon that starts afresh replays from sequence 1.
    await daemon.send('DeviceInserted', DEV, usb(1, { HMD_REPLAY: '1' }));
    await daemon.send('DeviceRemoved', DEV, usb(2));
    expect(r.seen.map((n) => `${n.type}${n.sequence}${n.replay ? 'r' : ''}`)).toEqual(['insert1', 'insert2', 'insert3', 'remove4', 'insert1r', 'remove2']);
  });

  it('saveKeystore starts a save and polls until it ends', async () => {
    const agent = await agentWith();
    daemon.saveStatuses = [Status.EBUSY, Status.EBUSY, Status.OK];
    expect(await agent.saveKeystore({ pollMs: 20 })).toBe(Status.OK);
    expect(daemon.count('StartKeystoreSave')).toBe(1);
    expect(daemon.count('GetKeystoreStatus')).toBe(3);

    daemon.saveStatuses = [Status.EBUSY, Status.EIO];
    expect(await agent.saveKeystore({ pollMs: 20 })).toBe(Status.EIO);

    daemon.startSave = Status.EFBIG;
    const polls = daemon.count('GetKeystoreStatus');
    expect(await agent.saveKeystore({ pollMs: 20 })).toBe(Status.EFBIG);
    expect(daemon.count('GetKeystoreStatus')).toBe(polls);

    daemon.startSave = Status.OK;
    daemon.saveStatuses = [Status.EBUSY];
    expect(await agent.saveKeystore({ pollMs: 20, timeoutMs: 200 })).toBe(Status.EBUSY);
    expect(await agent.keystoreStatus()).toBe(Status.EBUSY);
  });

  it('reports ENODATA from Register as "not in a container"', async () => {
    daemon.register = [Status.ENODATA, ''];
    const err = await connectAgent({ bus: bus.address, logger }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HmdError);
    expect((err as HmdError).code).toBe(ErrorCode.NotAContainer);
    expect((err as HmdError).message).toMatch(/not in a container the daemon recognises/);
    expect(daemon.count('Ready')).toBe(0);
  });

  it('refuses to start when another process owns the container name', async () => {
    const squatter = await connectBus({ bus: bus.address, logger });
    others.push(squatter);
    expect(await squatter.requestName(NAME, { doNotQueue: true })).toBe('primary');
    await expect(connectAgent({ bus: bus.address, logger })).rejects.toMatchObject({ code: ErrorCode.NameTaken });
    expect(daemon.count('Ready')).toBe(0);
  });

  it('says so when the daemon is not running', async () => {
    const watcher = await connectBus({ bus: bus.address, logger });
    others.push(watcher);
    daemon.close();
    await waitUntil('the daemon name to go', async () => (await watcher.getNameOwner(DAEMON_BUS_NAME)) === null);
    await expect(connectAgent({ bus: bus.address, logger })).rejects.toMatchObject({ code: ErrorCode.DaemonNotRunning });
  });

  it('reports a lost bus as daemon-gone and rejects pending operations', async () => {
    const states: AgentState[] = [];
    const agent = await agentWith({ onStateChange: (s) => states.push(s) });
    daemon.saveStatuses = [Status.EBUSY];
    const saving = agent.saveKeystore({ pollMs: 50, timeoutMs: 60_000 });
    await waitUntil('polling', () => daemon.count('GetKeystoreStatus') >= 1);
    bus.kill('SIGKILL');
    await expect(saving).rejects.toMatchObject({ code: ErrorCode.BusLost });
    expect(states.at(-1)).toBe('daemon-gone');
    await expect(agent.keystoreStatus()).rejects.toMatchObject({ code: ErrorCode.BusLost });
  });

  describe('hmd agent', () => {
    it('prints one JSON line per notification with exactly type, deviceId and properties', async () => {
      const lines: string[] = [];
      const stop = new AbortController();
      const running = runAgent({ bus: bus.address, logger, signal: stop.signal }, (l) => void lines.push(l));
      await waitUntil('Ready', () => daemon.count('Ready') === 1);
      await daemon.send('DeviceInserted', DEV, usb(1, { HMD_REPLAY: '1' }));
      await daemon.send('DeviceRemoved', DEV, usb(2));
      expect(lines.every((l) => l.endsWith('\n') && l.indexOf('\n') === l.length - 1)).toBe(true);
      const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(parsed).toEqual([
        { type: 'DeviceInserted', deviceId: DEV, properties: usb(1, { HMD_REPLAY: '1' }) },
        { type: 'DeviceRemoved', deviceId: DEV, properties: usb(2) },
      ]);
      expect(parsed.map((p) => Object.keys(p))).toEqual([
        ['type', 'deviceId', 'properties'],
        ['type', 'deviceId', 'properties'],
      ]);
      stop.abort();
      expect(await running).toBe(0);
      expect(await daemon.conn.getNameOwner(NAME)).toBeNull();
    });

    it('exits non-zero when the bus goes away', async () => {
      const running = runAgent({ bus: bus.address, logger }, () => undefined);
      await waitUntil('Ready', () => daemon.count('Ready') === 1);
      bus.kill('SIGKILL');
      expect(await running).toBe(1);
    });

    it('exits non-zero when it cannot register', async () => {
      daemon.register = [Status.ENODATA, ''];
      expect(await runAgent({ bus: bus.address, logger }, () => undefined)).toBe(1);
    });

    it('stops promptly and cleanly when told to while the daemon is not answering', async () => {
      daemon.hangRegister = true;
      const stop = new AbortController();
      const running = runAgent({ bus: bus.address, logger, signal: stop.signal }, () => undefined);
      await waitUntil('Register', () => daemon.count('Register') === 1);
      stop.abort();
      expect(await running).toBe(0);
      expect(await daemon.conn.getNameOwner(NAME)).toBeNull();
    });

    it('wires its options: a bad --bus is an error exit, not a crash', async () => {
      const before = process.exitCode;
      try {
        await agentCommand().exitOverride().parseAsync(['--bus', 'nonsense', '--log-level', 'silent'], { from: 'user' });
        expect(process.exitCode).toBe(1);
      } finally {
        process.exitCode = before;
      }
    });
  });
});

describe('notification parsing (no bus needed)', () => {
  it('reads HMD_SEQUENCE and HMD_REPLAY strictly', () => {
    expect(parseNotice([DEV, { HMD_SEQUENCE: '42', HMD_REPLAY: '1' }])).toMatchObject({ sequence: 42, replay: true });
    expect(parseNotice([DEV, { HMD_SEQUENCE: '007', HMD_REPLAY: 'yes' }])).toMatchObject({ sequence: 0, replay: false });
    expect(parseNotice([DEV, {}])).toMatchObject({ sequence: 0, replay: false, properties: {} });
    expect(() => parseNotice(['', {}])).toThrow(HmdError);
  });

  it('tracks sequences: repeats dropped, 1 opens a new run, gaps flagged but delivered', () => {
    const t = new SequenceTracker();
    const verdicts = [1, 2, 2, 1, 2, 5, 4, 0].map((s) => t.accept(s));
    expect(verdicts.map((v) => (v.deliver ? (v.note ?? 'ok') : 'drop'))).toEqual(['ok', 'ok', 'drop', 'restart', 'ok', 'gap', 'drop', 'unsequenced']);
    expect(t.lastSeen).toBe(5);
  });
});
