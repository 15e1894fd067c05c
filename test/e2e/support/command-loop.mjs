// The stdin/stdout protocol of the scriptable test peers: one JSON command a line in, one JSON
// object a line out ({"type":"reply","id",...} for each command), "started" once listening.
import { createInterface } from 'node:readline';
import { sessionBus } from '@jellybrick/dbus-next';

export const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

/** Answers every command line with `handle(cmd)`; exits when stdin closes. */
export function serveCommands(handle) {
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
}

/** A raw dbus-next connection to `address`, once the bus has said Hello; errors after that are ignored. */
export async function connectRaw(address) {
  const bus = sessionBus({ busAddress: address });
  await new Promise((res, rej) => {
    bus.once('connect', res);
    bus.once('error', rej);
  });
  bus.on('error', () => {});
  return bus;
}
