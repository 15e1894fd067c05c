import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const BOOT_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The kernel's id of this boot. udev SEQNUMs restart at boot, so anything keyed on them is scoped
 * by it. When it cannot be read, a fresh random id stands in: saved SEQNUMs are then treated as
 * another boot's and dropped, which only costs the (harmless) chance to drop stale events.
 */
export function readBootId(procRoot = '/proc'): string {
  try {
    const id = readFileSync(join(procRoot, 'sys/kernel/random/boot_id'), 'utf8').trim();
    if (BOOT_ID_RE.test(id)) return id;
  } catch {
    // fall through
  }
  return `unknown-${randomUUID()}`;
}
