// A scriptable D-Bus peer that runs inside a fake container: it reads JSON commands on stdin
// and answers on stdout, one JSON object a line. It talks raw dbus-next on purpose, so the
// daemon is tested against an implementation other than its own client library.
import * as dbus from '@jellybrick/dbus-next';
import { connectRaw, out, serveCommands } from './command-loop.mjs';

const { Message, MessageType } = dbus;
let bus = null;
let eventsMode = 'ack';
let ackDelayMs = 0;
// Benchmarks: `quiet` stops the line per event (the pipe would cost more than the call);
// `count` then tells how many arrived and when the last one did.
let quiet = false;
let received = 0;
let lastT = 0;
let lastSeq = null;
let countWaiters = [];

function callDaemon(member, signature = '', body = [], iface = 'io.veea.VeeaHub.HardwareMonitoringDaemon.Container', path = '/io/veea/VeeaHub/HardwareMonitoringDaemon', dest = 'io.veea.VeeaHub.HardwareMonitoringDaemon') {
  return bus.call(new Message({ destination: dest, path, interface: iface, member, signature, body }));
}

async function handle(cmd) {
  switch (cmd.op) {
    case 'connect': {
      bus = await connectRaw(cmd.address);
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
      quiet = cmd.quiet === true;
      if (!handle.serving) {
        handle.serving = true;
        bus.addMethodHandler((msg) => {
          if (msg.type !== MessageType.METHOD_CALL) return false;
          if (msg.interface !== 'io.veea.VeeaHub.HardwareMonitoringAgent.Events') return false;
          // Arrival time in ms of CLOCK_MONOTONIC, which every process of the host shares (the
          // wall clock behind performance.timeOrigin can be stepped between two process starts).
          const t = Number(process.hrtime.bigint()) / 1e6;
          received++;
          lastT = t;
          lastSeq = msg.body[1]?.HMD_SEQUENCE ?? null;
          if (!quiet) out({ type: 'event', member: msg.member, path: msg.path, sender: msg.sender, deviceId: msg.body[0], properties: msg.body[1], t });
          if (countWaiters.length > 0) countWaiters = countWaiters.filter((w) => !w());
          if (eventsMode === 'hang') return true;
          const reply = () => bus.send(Message.newMethodReturn(msg, '', []));
          if (ackDelayMs > 0) setTimeout(reply, ackDelayMs);
          else reply();
          return true;
        });
      }
      return { mode: eventsMode };
    }
    case 'count': {
      // Answers once at least `atLeast` events arrived: { count, t (last arrival), seq (its HMD_SEQUENCE) }.
      const atLeast = cmd.atLeast ?? 0;
      return new Promise((res) => {
        const check = () => received >= atLeast && (res({ count: received, t: lastT, seq: lastSeq }), true);
        if (!check()) countWaiters.push(check);
      });
    }
    case 'exit':
      setImmediate(() => process.exit(0));
      return {};
    default:
      return { error: `unknown op ${cmd.op}` };
  }
}

serveCommands(handle);
