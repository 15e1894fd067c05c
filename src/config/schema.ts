import { z } from 'zod';
import { CONTAINER_ID_RE, DEFAULT_SPOOL_DIR, DEFAULT_STATE_DIR } from '../constants.js';
import { CGROUP_PARENT_RE } from '../containers/identity.js';

/**
 * The configuration file (DESIGN A3). Every key is optional; the names of DESIGN A3 are fixed,
 * the rest are this daemon's additions. Unknown keys are rejected so a typo is not silently
 * ignored.
 */
const busSchema = z.string().min(1).describe('"system", "session" or a D-Bus address');

export const configSchema = z
  .object({
    bus: busSchema.default('system'),
    spoolDir: z.string().min(1).default(DEFAULT_SPOOL_DIR),
    stateDir: z.string().min(1).default(DEFAULT_STATE_DIR),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    keystore: z
      .strictObject({
        sourceDir: z.string().min(1).default('/var/lib/veea/keystore/{cid}'),
        storeDir: z.string().min(1).default('/var/lib/veea-hmd/keystore'),
        keyFile: z.string().min(1).default('/etc/veea-hmd/keystore.key'),
        limitBytes: z.number().int().positive().max(64 * 1024 * 1024).default(131072),
      })
      .prefault({}),
    delivery: z
      .strictObject({
        timeoutMs: z.number().int().positive().max(600_000).default(5000),
        /** Events kept for a stalled container before it is switched to resync. */
        queueLimit: z.number().int().positive().max(1_000_000).default(1024),
        /** Most unanswered calls one daemon connection may hold (the bus allows 128). */
        maxPendingPerConnection: z.number().int().positive().max(120).default(100),
      })
      .prefault({}),
    devices: z
      .strictObject({
        subsystems: z
          .array(z.string().regex(/^[a-z0-9_-]+$/, 'a subsystem name like "usb" or "tty"'))
          .default(['usb', 'tty', 'block', 'hidraw', 'video4linux', 'sound']),
        coldplug: z.boolean().default(true),
        source: z.enum(['spool', 'udevadm']).default('spool'),
        enrich: z.boolean().default(true),
      })
      .prefault({}),
    identity: z
      .strictObject({
        /** Container runtimes recognised in /proc/PID/cgroup; Docker always. */
        runtimes: z.array(z.enum(['docker', 'podman', 'containerd'])).default(['docker']),
        /** UID -> container ID, for user-namespaced hubs where the cgroup does not tell. */
        uidMap: z.record(z.string().regex(/^[0-9]+$/, 'a decimal uid'), z.string().regex(CONTAINER_ID_RE, 'a 64-hex container ID')).default({}),
        /** Cgroup paths given to Docker's --cgroup-parent (as /proc/PID/cgroup shows them). */
        dockerCgroupParents: z
          .array(z.string().regex(CGROUP_PARENT_RE, 'an absolute cgroup path like "/hub-apps" or "/hub.slice", outside /user.slice'))
          .default([]),
      })
      .prefault({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

export function defaultConfig(): Config {
  return configSchema.parse({});
}
