// A scriptable D-Bus peer that runs inside a fake container: it reads JSON commands on stdin
// and answers on stdout, one JSON object a line. It talks raw dbus-next on purpose, so the
// daemon is tested against an implementation other than its own client library.
import * as dbus from '@jellybrick/dbus-next';
import { createInterface } from 'node:readline';

const { Message, MessageType, sessionBus } = dbus;
let bus = null;
let eventsMode = 'ack';
let ackDelayMs = 0;
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

function callDaemon(member, signature = '', body = [], iface = 'io.veea.VeeaHub.HardwareMonitoringDaemon.Container', path = '/io/veea/VeeaHub/HardwareMonitoringDaemon', dest = 'io.veea.VeeaHub.HardwareMonitoringDaemon') {
  return bus.call(new Message({ destination: dest, path, interface: iface, member, signature, body }));
}

async function handle(cmd) {
  switch (cmd.op) {
    case 'connect': {
      bus = sessionBus({ busAddress: cmd.address });
      await new Promise((res, rej) => {
        bus.once('connect', res);
        bus.once('error', rej);
      });
      bus.on('error', () => {});
      return { name: bus.name };
    }
    case 'call': {
      try {
        const reply = await callDaemon(cmd.member, cmd.signature ?? '', cmd.body ?? [], cmd.iface, cmd.path, cmd.dest);
        return { body: reply?.body ?? [] };
      } catch (e) {
        return { error: e.type ?? String(e), message: e.text ?? e.message };
      }
    }
    case 'own': {
      try {
        return { result: await bus.requestName(cmd.name, 4) };
      } catch (e) {
        return { error: e.type ?? String(e), message: e.text ?? e.message };
      }
    }
    case 'release': {
      return { result: await bus.releaseName(cmd.name) };
    }
    case 'events': {
      // mode: 'ack' answers at once (after ackDelayMs), 'hang' never answers.
      eventsMode = cmd.mode ?? 'ack';
      ackDelayMs = cmd.delayMs ?? 0;
      if (!handle.serving) {
        handle.serving = true;
        bus.addMethodHandler((msg) => {
          if (msg.type !== MessageType.METHOD_CALL) return false;
          if (msg.interface !== 'io.veea.VeeaHub.HardwareMonitoringAgent.Events') return false;
          out({ type: 'event', member: msg.member, path: msg.path, sender: msg.sender, deviceId: msg.body[0], properties: msg.body[1] });
          if (eventsMode === 'hang') return true;
          const reply = () => bus.send(Message.newMethodReturn(msg, '', []));
          if (ackDelayMs > 0) setTimeout(reply, ackDelayMs);
          else reply();
          return true;
        });
      }
      return { mode: eventsMode };
    }
    case 'exit':
      setImmediate(() => process.exit(0));
      return {};
    default:
      return { error: `unknown op ${cmd.op}` };
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    return;
  }
  handle(cmd).then(
    (res) => out({ type: 'reply', id: cmd.id, ...res }),
    (e) => out({ type: 'reply', id: cmd.id, error: String(e?.message ?? e) }),
  );
});
process.stdin.on('end', () => process.exit(0));
out({ type: 'started', pid: process.pid });
