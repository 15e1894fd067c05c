import { Command, Option } from 'commander';
import { ADMIN_INTERFACE } from '../constants.js';
import { addCommonOptions, callAdmin, connectToDaemon, type CommonFlags } from './common.js';

interface MonitorFlags extends CommonFlags {
  json?: boolean;
}

function human(e: Record<string, unknown>): string {
  const t = String(e['time'] ?? '');
  switch (e['type']) {
    case 'event':
      return `${t} EVENT     ${String(e['action'])} ${String(e['devpath'])} (${String(e['subsystem'])})${e['notified'] ? ` -> ${String(e['notified'])}` : ''}`;
    case 'delivered':
      return `${t} DELIVERED ${String(e['kind'])} ${String(e['deviceId'])} to ${String(e['container']).slice(0, 12)} seq ${String(e['seq'])}${e['replay'] ? ' (replay)' : ''}`;
    default:
      return `${t} ${String(e['type']).toUpperCase().padEnd(9)} ${JSON.stringify(e)}`;
  }
}

/** Like `udevadm monitor`: one line per thing the daemon sees and delivers, until interrupted. */
export function monitorCommand(): Command {
  const cmd = new Command('monitor').description('watch events and deliveries live (root)');
  addCommonOptions(cmd)
    .addOption(new Option('--json', 'one JSON object a line'))
    .action(async (flags: MonitorFlags) => {
      const bus = await connectToDaemon(flags);
      bus.serve(() => undefined);
      await bus.onSignal(ADMIN_INTERFACE, 'Monitor', (body) => {
        const text = String(body[0]);
        let e: Record<string, unknown>;
        try {
          e = JSON.parse(text) as Record<string, unknown>;
        } catch {
          return;
        }
        process.stdout.write(`${flags.json ? text : human(e)}\n`);
      });
      await callAdmin(bus, 'Subscribe');
      process.stderr.write('monitoring; Ctrl-C to stop\n');
      await new Promise<void>((resolve) => {
        const done = (): void => resolve();
        process.once('SIGINT', done);
        process.once('SIGTERM', done);
        bus.onLost(done);
      });
      bus.close();
    });
  return cmd;
}
