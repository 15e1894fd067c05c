import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageFile } from '../paths.js';

/** The project's policy file (installed to /usr/share/dbus-1/system.d/). */
export const POLICY_FILE = packageFile('dbus/io.veea.VeeaHub.HardwareMonitoringDaemon.conf', '/usr/share/dbus-1/system.d/io.veea.VeeaHub.HardwareMonitoringDaemon.conf');

/**
 * The system bus defaults (deny own, deny method calls unless allowed) plus the project's own
 * policy file, on a private socket: what the daemon meets on a hub, without touching the host.
 */
export function systemBusConfig(socket: string, extra = ''): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <limit name="max_replies_per_connection">128</limit>
  <limit name="max_connections_per_user">256</limit>
  <limit name="max_completed_connections">2048</limit>
  <limit name="max_incomplete_connections">64</limit>
  <limit name="max_match_rules_per_connection">512</limit>
  <include>${POLICY_FILE}</include>
  ${extra}
</busconfig>
`;
}

export interface PrivateBus {
  address: string;
  dir: string;
  proc: ChildProcess;
  stop(): Promise<void>;
  kill(signal?: NodeJS.Signals): void;
}

export async function startPrivateBus(opts: { extraConfig?: string } = {}): Promise<PrivateBus> {
  const dir = mkdtempSync(join(tmpdir(), 'hmd-bus-'));
  // Containers dropping to other uids must reach the socket.
  chmodSync(dir, 0o755);
  const socket = join(dir, 'bus.sock');
  const conf = join(dir, 'bus.conf');
  writeFileSync(conf, systemBusConfig(socket, opts.extraConfig));
  const proc = spawn('dbus-daemon', ['--config-file', conf, '--nofork', '--nopidfile', '--print-address'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const address = await new Promise<string>((res, rej) => {
    let out = '';
    const timer = setTimeout(() => rej(new Error(`dbus-daemon did not start: ${stderr}`)), 10_000);
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) {
        clearTimeout(timer);
        res(out.trim().split('\n')[0] as string);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`dbus-daemon exited ${code}: ${stderr}`));
    });
  });
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { address, dir, proc, stop, kill: (s = 'SIGKILL') => proc.kill(s) };
}
