import { Command, Option } from 'commander';
import { HmdError, ErrorCode } from '../errors.js';
import { addCommonOptions, callAdmin, connectToDaemon, type CommonFlags } from './common.js';

interface StatusFlags extends CommonFlags {
  json?: boolean;
}

export interface StatusDoc {
  containers: Array<{ id: string; busName: string; state: string; queueLength?: number; stalled?: boolean; resync?: boolean; lagMs?: number; lastDeliveryAt?: string | null; delivered?: number }>;
  devices: Array<{ id: string; properties: Record<string, string> }>;
  metrics?: Record<string, number>;
}

export async function fetchStatus(flags: CommonFlags): Promise<StatusDoc> {
  const bus = await connectToDaemon(flags);
  try {
    const [text] = await callAdmin(bus, 'GetStatus');
    if (typeof text !== 'string') throw new HmdError(ErrorCode.Internal, 'the daemon answered GetStatus with no text');
    return JSON.parse(text) as StatusDoc;
  } finally {
    bus.close();
  }
}

const short = (cid: string): string => cid.slice(0, 12);

/** A device line an operator recognises: vendor/model where udev knows them. */
export function describeDevice(p: Record<string, string>): string {
  const vendor = p['ID_VENDOR_FROM_DATABASE'] ?? p['ID_VENDOR'] ?? p['ID_VENDOR_ID'] ?? '';
  const model = p['ID_MODEL_FROM_DATABASE'] ?? p['ID_MODEL'] ?? p['ID_MODEL_ID'] ?? '';
  return [p['SUBSYSTEM'] ?? '?', p['DEVNAME'] ?? '', `${vendor} ${model}`.trim()].filter((s) => s !== '').join('  ');
}

export function renderStatus(doc: StatusDoc): string {
  const lines: string[] = [];
  lines.push(`CONTAINERS (${doc.containers.length})`);
  if (doc.containers.length > 0) {
    lines.push(['CONTAINER', 'STATE', 'QUEUE', 'LAG', 'DELIVERED', 'LAST DELIVERY', 'FLAGS'].join('\t'));
    for (const c of doc.containers) {
      const flags = [c.stalled ? 'stalled' : '', c.resync ? 'resync' : ''].filter((f) => f !== '').join(',') || '-';
      lines.push([short(c.id), c.state, c.queueLength ?? 0, `${c.lagMs ?? 0}ms`, c.delivered ?? 0, c.lastDeliveryAt ?? '-', flags].join('\t'));
    }
  }
  lines.push('', `DEVICES (${doc.devices.length})`);
  for (const d of doc.devices) lines.push(`${d.id}\t${describeDevice(d.properties)}`);
  if (doc.metrics) {
    lines.push('', 'METRICS');
    for (const [k, v] of Object.entries(doc.metrics)) lines.push(`${k}\t${v}`);
  }
  return `${lines.join('\n')}\n`;
}

export function statusCommand(): Command {
  const cmd = new Command('status').description('containers and devices as the running daemon sees them (root)');
  addCommonOptions(cmd)
    .addOption(new Option('--json', 'print JSON: {"containers":[…],"devices":[…],"metrics":{…}}'))
    .action(async (flags: StatusFlags) => {
      const doc = await fetchStatus(flags);
      process.stdout.write(flags.json ? `${JSON.stringify(doc)}\n` : renderStatus(doc));
    });
  return cmd;
}

export function devicesCommand(): Command {
  const cmd = new Command('devices').description('the devices the daemon knows are present (root)');
  addCommonOptions(cmd)
    .addOption(new Option('--json', 'print JSON'))
    .action(async (flags: StatusFlags) => {
      const doc = await fetchStatus(flags);
      if (flags.json) process.stdout.write(`${JSON.stringify(doc.devices)}\n`);
      else process.stdout.write(doc.devices.map((d) => `${d.id}\t${describeDevice(d.properties)}\n`).join(''));
    });
  return cmd;
}
