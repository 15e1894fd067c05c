import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { isHmdError } from '../../src/errors.js';

describe('config', () => {
  it('fills every default of DESIGN A3', () => {
    const c = parseConfig({});
    expect(c.bus).toBe('system');
    expect(c.spoolDir).toBe('/run/veea-hmd/spool');
    expect(c.stateDir).toBe('/var/lib/veea-hmd');
    expect(c.keystore).toEqual({
      sourceDir: '/var/lib/veea/keystore/{cid}',
      storeDir: '/var/lib/veea-hmd/keystore',
      keyFile: '/etc/veea-hmd/keystore.key',
      limitBytes: 131072,
    });
    expect(c.delivery.timeoutMs).toBe(5000);
    expect(c.devices.subsystems).toEqual(['usb', 'tty', 'block', 'hidraw', 'video4linux', 'sound']);
    expect(c.devices.coldplug).toBe(true);
    expect(c.identity.dockerCgroupParents).toEqual([]);
  });

  it('keeps given values and defaults the rest of a section', () => {
    const c = parseConfig({ keystore: { limitBytes: 10 }, delivery: { timeoutMs: 50 } });
    expect(c.keystore.limitBytes).toBe(10);
    expect(c.keystore.keyFile).toBe('/etc/veea-hmd/keystore.key');
    expect(c.delivery.timeoutMs).toBe(50);
  });

  it('names the bad key and the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hmd-cfg-'));
    const f = join(dir, 'c.json');
    writeFileSync(f, JSON.stringify({ keystore: { limitBytes: 'big' }, devices: { colplug: true }, identity: { dockerCgroupParents: ['/user.slice/mine'] } }));
    let msg = '';
    try {
      loadConfig(f);
    } catch (e) {
      expect(isHmdError(e, 'CONFIG_INVALID')).toBe(true);
      msg = (e as Error).message;
    }
    expect(msg).toContain(f);
    expect(msg).toContain('keystore.limitBytes');
    expect(msg).toContain('colplug');
    expect(msg).toContain('identity.dockerCgroupParents.0');
  });

  it('rejects a file that is not JSON, and a named file that is missing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hmd-cfg-'));
    const f = join(dir, 'c.json');
    writeFileSync(f, '{ nope');
    expect(() => loadConfig(f)).toThrow(/not JSON/);
    expect(() => loadConfig(join(dir, 'missing.json'))).toThrow(/cannot read/);
    expect(loadConfig(undefined, { defaultFile: join(dir, 'missing.json') }).bus).toBe('system');
  });
});
