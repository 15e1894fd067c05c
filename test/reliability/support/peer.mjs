// A D-Bus peer for the reliability suite, run inside a fake container. It speaks the line
// protocol of test/e2e/support/container-proc.mjs (JSON commands on stdin, replies and events
// on stdout), so FakeContainer drives it the same way, and adds what the suite needs:
//  - `call` bodies may hold variants as {"$v": [signature, value]} (JSON has no Variant);
//    errors the library raises before sending are told apart as {local} (a generator bug);
//  - `flood`: Register and Ready at full speed, `inFlight` at a time, for `ms` milliseconds.
import * as dbus from '@jellybrick/dbus-next';
import { connectRaw, out, serveCommands } from '../../e2e/support/command-loop.mjs';

const { Message, MessageType, Variant } = dbus;
const DAEMON = 'io.veea.VeeaHub.HardwareMonitoringDaemon';
const PATH = '/io/veea/VeeaHub/HardwareMonitoringDaemon';
const CONTAINER = `${DAEMON}.Container`;
let bus = null;
let serving = false;
const cycling = process.argv[2] === '--cycle';

function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === '$v') return new Variant(v.$v[0], revive(v.$v[1]));
    return Object.fromEntries(keys.map((k) => [k, revive(v[k])]));
  }
  return v;
}

async function call(member, signature = '', body = [], iface = CONTAINER, path = PATH) {
  let msg;
  try {
    msg = new Message({ destination: DAEMON, path, interface: iface ?? undefined, member, signature, body: revive(body) });
  } catch (e) {
    return { local: String(e?.message ?? e) };
  }
  try {
    const reply = await bus.call(msg);
    return { body: reply?.body ?? [] };
  } catch (e) {
    if (typeof e?.type === 'string') return { error: e.type, message: e.text ?? '' };
    return { local: String(e?.message ?? e) };
  }
}

async function flood(ms, inFlight) {
  const stop = Date.now() + ms;
  const counts = { calls: 0, errors: 0 };
  const worker = async (k) => {
    for (let i = k; Date.now() < stop; i++) {
      const r = await call(i % 2 === 0 ? 'Register' : 'Ready');
      counts.calls++;
      if (r.error !== undefined || r.local !== undefined) counts.errors++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, (_, k) => worker(k)));
  return counts;
}

async function handle(cmd) {
  switch (cmd.op) {
    case 'connect':
      bus = await connectRaw(cmd.address);
      return { name: bus.name };
    case 'call':
      return call(cmd.member, cmd.signature, cmd.body, cmd.iface === undefined ? CONTAINER : cmd.iface, cmd.path ?? PATH);
    case 'own':
      try {
        return { result: await bus.requestName(cmd.name, 4) };
      } catch (e) {
        return { error: e.type ?? String(e) };
      }
    case 'release':
      return { result: await bus.releaseName(cmd.name) };
    case 'events':
      if (!serving) {
        serving = true;
        bus.addMethodHandler((msg) => {
          if (msg.type !== MessageType.METHOD_CALL || msg.interface !== 'io.veea.VeeaHub.HardwareMonitoringAgent.Events') return false;
          if (!cycling) out({ type: 'event', member: msg.member, path: msg.path, sender: msg.sender, deviceId: msg.body[0], properties: msg.body[1], t: Number(process.hrtime.bigint()) / 1e6 });
          bus.send(Message.newMethodReturn(msg, '', []));
          return true;
        });
      }
      return { mode: 'ack' };
    case 'flood':
      return flood(cmd.ms ?? 1000, cmd.inFlight ?? 16);
    case 'exit':
      setImmediate(() => process.exit(0));
      return {};
    default:
      return { error: `unknown op ${cmd.op}` };
  }
}

// `peer.mjs --cycle ADDRESS MS`: one life of a crash-looping agent, no stdin protocol: Register,
// own the name, serve Events, Ready, then die abruptly MS milliseconds later (mid-delivery, often).
if (process.argv[2] === '--cycle') {
  const [address, ms] = [process.argv[3], Number(process.argv[4] ?? 100)];
  setTimeout(() => process.exit(0), ms + 2000).unref(); // never outlive a stuck start
  await handle({ op: 'connect', address });
  const reg = await call('Register');
  if (reg.body?.[0] === 0) {
    await handle({ op: 'own', name: reg.body[1] });
    await handle({ op: 'events' });
    void call('Ready');
  }
  setTimeout(() => process.exit(0), ms);
} else {
  serveCommands(handle);
}

