import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package root: the nearest folder above this module that holds package.json. Works from
 * src/ (tests), dist/ (the repository after a build) and /usr/lib/veea-hmd (installed).
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the veea-hmd package root');
    dir = up;
  }
}

/** A data file shipped with the package (dbus/…, udev-rules/…, fixtures/…), or a system fallback. */
export function packageFile(rel: string, ...fallbacks: string[]): string {
  const own = join(packageRoot(), rel);
  if (existsSync(own)) return own;
  for (const f of fallbacks) if (existsSync(f)) return f;
  return own;
}
