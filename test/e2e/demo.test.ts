import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { e2eBlocker, REPO } from './support/dbus.js';

const blocker = e2eBlocker();
if (blocker) console.warn(`\n*** SKIPPING the demo e2e test: ${blocker} ***\n`);

describe.skipIf(blocker !== null)('make demo', () => {
  it('the Makefile target runs `hmd demo`', () => {
    const r = spawnSync('make', ['-n', 'demo', 'DEMO_SECONDS=3'], { cwd: REPO, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('node dist/main.js demo --seconds 3');
  });

  it('on a private bus, a demo container sees fixture devices plugged and unplugged, in sequence', () => {
    const r = spawnSync(process.execPath, [join(REPO, 'dist/main.js'), 'demo', '--private', '--seconds', '3'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('registered and Ready');
    expect(r.stdout).toMatch(/<- DeviceInserted #1 .*usb/);
    expect(r.stdout).toMatch(/<- DeviceInserted #2 .*tty/);
    expect(r.stdout).toMatch(/<- DeviceRemoved {2}#3 .*tty/);
    expect(r.stdout).toMatch(/<- DeviceRemoved {2}#4 .*usb/);
  });
});
