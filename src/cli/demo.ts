import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Command, Option } from 'commander';
import { startPrivateBus, type PrivateBus } from '../bus/private-bus.js';
import { loadFixture } from '../devices/fixtures.js';
import { replayFixture } from './replay.js';
import { describeDevice } from './status.js';

const SYSTEM_SOCKET = '/run/dbus/system_bus_socket';
const POLICY_PATHS = ['/usr/share/dbus-1/system.d/io.veea.VeeaHub.HardwareMonitoringDaemon.conf', '/etc/dbus-1/system.d/io.veea.VeeaHub.HardwareMonitoringDaemon.conf'];
const DEMO_FIXTURES = ['sonoff-zbdongle-p', 'ftdi-ft232r', 'aeotec-zstick-gen5', 'sandisk-ultra-fit-flash'];

const say = (s: string): void => {
  process.stdout.write(`${s}\n`);
};

/** Whether the real system bus is there and knows our policy (installed by `make install`). */
export function systemBusUsable(): boolean {
  return existsSync(SYSTEM_SOCKET) && POLICY_PATHS.some((p) => existsSync(p));
}

interface DemoFlags {
  seconds?: string;
  private?: boolean;
}

export function demoCommand(): Command {
  return new Command('demo')
    .description('run the daemon: on the system bus when it is set up, otherwise on a private bus with a demo container and fixture devices')
    .addOption(new Option('--seconds <n>', 'stop after n seconds (default: until Ctrl-C; 30 when not on a terminal)'))
    .addOption(new Option('--private', 'always use a private bus, even where the system bus is set up'))
    .action(async (flags: DemoFlags) => {
      if (!flags.private && systemBusUsable()) {
        say('System bus found with the veea-hmd policy installed: running the daemon for real (Ctrl-C to stop).');
        const d = spawn(process.execPath, [process.argv[1] as string, 'daemon', '--bus', 'system'], { stdio: 'inherit' });
        await new Promise<void>((res) => d.once('exit', (code) => ((process.exitCode = code ?? 1), res())));
        return;
      }
      const seconds = flags.seconds !== undefined ? Number(flags.seconds) : process.stdout.isTTY ? Infinity : 30;
      await privateDemo(seconds);
    });
}

async function privateDemo(seconds: number): Promise<void> {
  say(existsSync(SYSTEM_SOCKET) ? 'The system bus has no veea-hmd policy (run `make install` to use it).' : 'No system bus here.');
  say('Starting a private bus with the system-bus policy, the daemon, and one demo container.\n');
  const root = mkdtempSync(join(tmpdir(), 'hmd-demo-'));
  const spoolDir = join(root, 'spool');
  const config = join(root, 'config.json');
  writeFileSync(config, JSON.stringify({ spoolDir, stateDir: join(root, 'state'), keystore: { sourceDir: join(root, 'keystore/{cid}'), storeDir: join(root, 'state/keystore'), keyFile: join(root, 'keystore.key') }, devices: { coldplug: false } }));
  const cid = randomBytes(32).toString('hex');
  const cgroupDir = demoCgroupDir(cid);
  const children: ChildProcess[] = [];
  let bus: PrivateBus | null = null;
  const cleanup = async (): Promise<void> => {
    for (const c of children.reverse()) if (c.exitCode === null) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    await bus?.stop();
    for (let i = 0; cgroupDir !== null && i < 20 && existsSync(cgroupDir); i++) {
      try {
        rmdirSync(cgroupDir);
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    rmSync(root, { recursive: true, force: true });
  };
  try {
    bus = await startPrivateBus();
    say(`bus:       ${bus.address}`);
    const daemon = spawn(process.execPath, [process.argv[1] as string, 'daemon', '--bus', bus.address, '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(daemon);
    await new Promise<void>((res, rej) => {
      createInterface({ input: daemon.stdout! }).on('line', (l) => {
        if (l.includes('"msg":"serving"')) res();
      });
      daemon.once('exit', (c) => rej(new Error(`daemon exited ${c}`)));
    });
    say(`daemon:    serving io.veea.VeeaHub.HardwareMonitoringDaemon (pid ${daemon.pid})`);
    if (cgroupDir === null || process.getuid?.() !== 0) {
      say('container: none (making a fake container needs root and a cgroup hierarchy)');
    } else {
      mkdirSync(cgroupDir, { recursive: true });
      const agent = spawn('sh', ['-c', `echo $$ > '${cgroupDir}/cgroup.procs' && exec "$@"`, 'sh', process.execPath, process.argv[1] as string, 'agent', '--bus', bus.address, '--log-level', 'info'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(agent);
      // The agent logs "registered and ready" once Register, RequestName and Ready are done.
      await new Promise<void>((res, rej) => {
        createInterface({ input: agent.stderr! }).on('line', (l) => {
          if (l.includes('registered and ready')) res();
          else if (l.includes('"level":"error"') || l.includes('"level":"fatal"')) say(`  agent: ${l}`);
        });
        agent.once('exit', (c) => rej(new Error(`hmd agent exited ${c}`)));
      });
      say(`container: ${cid.slice(0, 12)}… running \`hmd agent\` (pid ${agent.pid}): registered and Ready\n`);
      createInterface({ input: agent.stdout! }).on('line', (l) => {
        try {
          const n = JSON.parse(l) as { type: string; deviceId: string; properties: Record<string, string> };
          const p = n.properties;
          say(`  container ${cid.slice(0, 8)} <- ${n.type.padEnd(14)} #${p['HMD_SEQUENCE']}${p['HMD_REPLAY'] ? ' replay' : ''}  ${describeDevice(p)}  ${n.deviceId}`);
        } catch {
          say(`  container: ${l}`);
        }
      });
    }
    const until = Date.now() + seconds * 1000;
    let stop = false;
    process.once('SIGINT', () => (stop = true));
    process.once('SIGTERM', () => (stop = true));
    for (let i = 0; !stop && Date.now() < until; i++) {
      const name = DEMO_FIXTURES[i % DEMO_FIXTURES.length] as string;
      const fixture = loadFixture(name);
      say(`plug   ${fixture.description}`);
      await replayFixture({ fixture, spoolDir });
      await sleepUnless(2500, () => stop);
      say(`unplug ${fixture.description}`);
      await replayFixture({ fixture, spoolDir, remove: true });
      await sleepUnless(1500, () => stop);
    }
  } finally {
    await cleanup();
  }
}

/** Where a Docker container of this host's cgroup layout would live, as the daemon expects. */
function demoCgroupDir(cid: string): string | null {
  if (existsSync('/sys/fs/cgroup/pids')) return join('/sys/fs/cgroup/pids/docker', cid);
  if (existsSync('/sys/fs/cgroup/unified')) return join('/sys/fs/cgroup/unified/system.slice', `docker-${cid}.scope`);
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return join('/sys/fs/cgroup/system.slice', `docker-${cid}.scope`);
  return null;
}

async function sleepUnless(ms: number, stop: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end && !stop()) await new Promise((r) => setTimeout(r, 100));
}
