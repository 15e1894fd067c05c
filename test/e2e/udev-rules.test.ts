// udev-rules/90-veea-hmd.rules under a real udev (udevadm test, systemd-udevd), each in a
// private mount namespace so the host's /dev, /run and rules stay untouched.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HELPER_INSTALL_PATH } from '../../src/constants.js';
import { defaultConfig } from '../../src/config/schema.js';
import { deviceInterest } from '../../src/devices/filter.js';
import { liveUdevdPids, REPO_HELPER, REPO_RULES_DIR, runUdevdTrigger, udevadmHasVerify, udevadmTest, udevAvailability, withPrivateUdevd, waitForSpoolFile } from './support/udevd.js';

const RULES_FILE = join(REPO_RULES_DIR, '90-veea-hmd.rules');
const avail = udevAvailability();
if (!avail.ok) console.warn(`udev-rules.test: SKIPPING the udev tests: ${avail.reason}`);

const work = mkdtempSync(join(tmpdir(), 'hmd-rules-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** What a udev on the host would have made; it must be the same after the tests. */
const hostUdevState = (): Record<string, unknown> => ({
  runUdev: existsSync('/run/udev') ? readdirSync('/run/udev').sort() : null,
  devChar: existsSync('/dev/char') ? readdirSync('/dev/char').length : null,
});
const hostBefore = hostUdevState();
const startedUdevds: number[] = [];
const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Lines where udev complains about our rules file (what `udevadm verify` would report). */
const ruleComplaints = (output: string): string[] => output.split('\n').filter((l) => /90-veea-hmd\.rules:\d+/.test(l) && !/ RUN '/.test(l));

describe('90-veea-hmd.rules (text)', () => {
  it('calls the installed helper path of the contract, once', () => {
    const text = readFileSync(RULES_FILE, 'utf8');
    expect(text.match(/RUN\+="([^"]+)"/g)).toEqual([`RUN+="${HELPER_INSTALL_PATH}"`]);
  });

  it('matches no sysfs attribute or parent key (a remove must match as its add did)', () => {
    const code = readFileSync(RULES_FILE, 'utf8')
      .split('\n')
      .filter((l) => !l.trimStart().startsWith('#'));
    for (const line of code) expect(line).not.toMatch(/\b(ATTRS?|SUBSYSTEMS|KERNELS|DRIVERS|TAGS|TEST)\{?[^=]*==/);
  });
});

describe.skipIf(!avail.ok)('90-veea-hmd.rules under udev', () => {
  it.skipIf(!udevadmHasVerify())('passes udevadm verify', () => {
    const r = spawnSync('udevadm', ['verify', '--resolve-names=never', RULES_FILE], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
  if (!udevadmHasVerify()) {
    const v = spawnSync('udevadm', ['--version'], { encoding: 'utf8' }).stdout.trim();
    console.warn(`udev-rules.test: udevadm ${v} has no "verify" (udev >= 253); the rules are checked by parsing them in udevadm test instead`);
  }

  it('parse without a complaint from udev (and a broken rule would be caught)', () => {
    const r = udevadmTest({ syspath: '/sys/class/tty/ttyS0' });
    // Only the rules under test were read: the namespace hides the distribution's.
    const read = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.startsWith('Reading rules file:'));
    expect(read).toEqual(['Reading rules file: /run/udev/rules.d/90-veea-hmd.rules']);
    expect(ruleComplaints(`${r.stdout}${r.stderr}`)).toEqual([]);
    // Control: the same check on a rules file with a mistake does complain.
    const broken = join(work, 'broken');
    mkdirSync(broken);
    writeFileSync(join(broken, '90-veea-hmd.rules'), `${readFileSync(RULES_FILE, 'utf8')}\nSUBSYSTEM=="tty", ATTR{x}=="1" GOTO="nowhere"\n`);
    const bad = udevadmTest({ rulesDir: broken, syspath: '/sys/class/tty/ttyS0' });
    expect(ruleComplaints(`${bad.stdout}${bad.stderr}`).length).toBeGreaterThan(0);
  });

  it.each(['add', 'remove'] as const)('RUNs the helper for a tty with a parent device (ttyS0, %s)', (action) => {
    const r = udevadmTest({ syspath: '/sys/class/tty/ttyS0', action, helperPath: REPO_HELPER });
    expect(r.properties['SUBSYSTEM']).toBe('tty');
    expect(r.properties['DEVPATH']).toMatch(/^\/devices\/(?!virtual\/).*\/tty\/ttyS0$/);
    expect(r.runs).toEqual([REPO_HELPER]);
  });

  it.each(['/sys/class/tty/tty1', '/sys/class/tty/console', '/sys/class/tty/ptmx', '/sys/class/block/loop0'])('does not RUN it for %s (virtual)', (syspath) => {
    if (!existsSync(syspath)) return expect.fail(`${syspath} missing on this machine`);
    const r = udevadmTest({ syspath });
    expect(r.properties['DEVPATH']).toMatch(/^\/devices\/virtual\//);
    expect(r.runs).toEqual([]);
  });

  it("agrees with the daemon's filter (src/devices/filter.ts) on this machine's devices", () => {
    const candidates = [
      '/sys/class/tty/ttyS0', '/sys/class/tty/tty1', '/sys/class/tty/tty', '/sys/class/tty/console',
      ...['block', 'hidraw', 'video4linux', 'sound'].flatMap((c) => (existsSync(`/sys/class/${c}`) ? readdirSync(`/sys/class/${c}`).slice(0, 6).map((d) => `/sys/class/${c}/${d}`) : [])),
    ];
    let runs = 0;
    for (const syspath of candidates) {
      const r = udevadmTest({ syspath });
      const verdict = deviceInterest(r.properties, defaultConfig().devices.subsystems);
      expect({ syspath, run: r.runs.length > 0 }).toEqual({ syspath, run: verdict.ok });
      if (verdict.ok) runs += 1;
    }
    expect(runs).toBeGreaterThan(0); // at least ttyS0 (and a real disk) pass
  });

  it('a real systemd-udevd runs the helper on a kernel uevent and the event lands in the spool', async () => {
    const spoolDir = join(work, 'spool');
    mkdirSync(spoolDir);
    const hit = await runUdevdTrigger({ spoolDir, trigger: '/sys/class/tty/ttyS0', action: 'add' });
    startedUdevds.push(hit.pid);
    expect(hit.properties['ACTION']).toBe('add');
    expect(hit.properties['SUBSYSTEM']).toBe('tty');
    expect(hit.properties['DEVPATH']).toMatch(/^\/devices\/.*\/tty\/ttyS0$/);
    expect(hit.properties['SEQNUM']).toMatch(/^\d+$/);
    expect(hit.name).toBe(`${(hit.properties['SEQNUM'] ?? '').padStart(20, '0')}-add`);
    // udevd ran the repository's helper, which succeeded, and udevd is gone again.
    expect(hit.log).toContain(`Process '${REPO_HELPER}' succeeded`);
    expect(readdirSync(spoolDir).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('the removal of that device matches too, after its add, in SEQNUM order', async () => {
    const spoolDir = join(work, 'spool-remove');
    mkdirSync(spoolDir);
    await withPrivateUdevd({ spoolDir }, async (udevd) => {
      startedUdevds.push(udevd.pid);
      await udevd.settle();
      udevd.trigger('/sys/class/tty/ttyS0', 'remove');
      udevd.trigger('/sys/class/tty/ttyS0', 'add');
      const isTtyS0 = (p: Record<string, string>): boolean => p['DEVPATH']?.endsWith('/tty/ttyS0') === true;
      const rm = await waitForSpoolFile(spoolDir, (p) => isTtyS0(p) && p['ACTION'] === 'remove');
      const add = await waitForSpoolFile(spoolDir, (p) => isTtyS0(p) && p['ACTION'] === 'add');
      expect(BigInt(add.properties['SEQNUM'] ?? 0)).toBeGreaterThan(BigInt(rm.properties['SEQNUM'] ?? 0));
      expect(rm.name < add.name).toBe(true);
      expect(rm.properties['MAJOR']).toBe('4');
    });
  });

  it("leaves the host untouched: no udevd left, the host's /run/udev and /dev/char as before", () => {
    expect(startedUdevds.length).toBeGreaterThan(0);
    expect(startedUdevds.filter(isAlive)).toEqual([]);
    expect(liveUdevdPids()).toEqual([]);
    expect(hostUdevState()).toEqual(hostBefore);
  });
});
