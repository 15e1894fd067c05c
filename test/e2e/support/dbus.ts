import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

export { startPrivateBus, systemBusConfig, POLICY_FILE, type PrivateBus } from '../../../src/bus/private-bus.js';

export const REPO = resolve(import.meta.dirname, '../../..');

/** Why e2e tests cannot run here, or null when they can. Printed loudly by the suites. */
export function e2eBlocker(): string | null {
  if (process.getuid?.() !== 0) return 'e2e tests need root (fake containers are real cgroups)';
  if (spawnSync('dbus-daemon', ['--version']).status !== 0) return 'dbus-daemon is not installed (run `make setup`)';
  if (!existsSync('/sys/fs/cgroup/pids') && !existsSync('/sys/fs/cgroup/unified')) return 'no cgroup hierarchy to make fake containers in';
  if (!existsSync(join(REPO, 'dist/main.js'))) return 'dist/ is not built (run `make build`)';
  return null;
}
