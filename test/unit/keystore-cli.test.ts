/** `hmd keystore restore|status|list|prune`, run in-process through commander. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { keystoreCommand } from '../../src/cli/keystore.js';
import { Status } from '../../src/constants.js';
import { isHmdError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { CID_A, CID_B, makeEnv, readTree, settledStatus, writeTree, type Env } from './keystore/helpers.js';

describe('hmd keystore', () => {
  let env: Env;
  let configFile: string;

  async function run(...args: string[]): Promise<string> {
    let out = '';
    await keystoreCommand({ write: (t) => (out += t), logger: silentLogger() }).parseAsync([...args, '--config', configFile], { from: 'user' });
    return out;
  }

  async function save(cid: string): Promise<number> {
    const m = env.manager();
    await m.start();
    expect(await m.startSave(cid)).toBe(Status.OK);
    const status = await settledStatus(m, cid);
    await m.stop();
    return status;
  }

  beforeEach(() => {
    env = makeEnv();
    configFile = join(env.root, 'config.json');
    writeFileSync(configFile, JSON.stringify({ stateDir: env.stateDir, keystore: env.config }));
  });
  afterEach(() => env.cleanup());

  it('restores the last good save into a directory', async () => {
    writeTree(env.source(CID_A), { 'k/key.pem': { data: 'PEM', mode: 0o600 }, top: 'x' });
    expect(await save(CID_A)).toBe(Status.OK);
    const to = join(env.root, 'out');
    const text = await run('restore', '--container', CID_A, '--to', to);
    expect(text).toMatch(/^restored 2 files and 1 directory \(4 bytes\) from the newest copy .* into /);
    expect(readTree(to)).toEqual(readTree(env.source(CID_A)));

    const json = JSON.parse(await run('restore', '--container', CID_A, '--to', join(env.root, 'out2'), '--json')) as Record<string, unknown>;
    expect(json).toMatchObject({ container: CID_A, copy: 'newest', files: 2, dirs: 1, bytes: 4 });
  });

  it('shows statuses, lists saves and prunes a container', async () => {
    writeTree(env.source(CID_A), { f: 'a' });
    writeTree(env.source(CID_B), { f: 'b' });
    expect(await save(CID_A)).toBe(Status.OK);
    expect(await save(CID_A)).toBe(Status.OK);
    expect(await save(CID_B)).toBe(Status.OK);
    execFileSync('mkfifo', [join(env.source(CID_B), 'pipe')]);
    expect(await save(CID_B)).toBe(Status.EIO);

    const all = JSON.parse(await run('status', '--json')) as { containers: { cid: string; status: number; lastError?: string }[] };
    expect(all.containers.map((c) => [c.cid, c.status])).toEqual([
      [CID_A, 0],
      [CID_B, 5],
    ]);
    expect(all.containers[1]?.lastError).toContain('FIFO');
    expect(await run('status', '--container', CID_B)).toMatch(new RegExp(`^${CID_B}  5 \\(failed\\).*FIFO`));
    const never = JSON.parse(await run('status', '--container', 'c'.repeat(64), '--json')) as Record<string, unknown>;
    expect(never).toMatchObject({ status: 0, state: 'never saved' });

    const listed = JSON.parse(await run('list', '--json')) as { keystores: { cid: string; status: number; newest?: object; previous?: object }[] };
    expect(listed.keystores.map((k) => [k.cid, k.status, !!k.newest, !!k.previous])).toEqual([
      [CID_A, 0, true, true],
      [CID_B, 5, true, false],
    ]);

    const pruned = await run('prune', '--container', CID_A);
    expect(pruned.trim().split('\n')).toHaveLength(2);
    expect(await run('list')).toMatch(new RegExp(`^${CID_B}  failed  newest: \\S+ \\(\\d+ bytes\\)  previous: -\\n$`));
    expect(await run('prune', '--container', CID_A)).toContain('no saved keystore');
  });

  it('fails with a clear error on a bad container ID, a missing save or a missing config file', async () => {
    const fail = async (args: string[], code: string): Promise<string> => {
      try {
        await run(...args);
      } catch (err) {
        expect(isHmdError(err) ? err.code : err).toBe(code);
        return (err as Error).message;
      }
      throw new Error('command unexpectedly succeeded');
    };
    expect(await fail(['restore', '--container', 'nope', '--to', env.root], 'INVALID_ARGS')).toContain('--container');
    mkdirSync(dirname(env.config.keyFile), { recursive: true });
    writeFileSync(env.config.keyFile, Buffer.alloc(32), { mode: 0o600 });
    expect(await fail(['restore', '--container', CID_A, '--to', join(env.root, 'o')], 'KEYSTORE_NOT_FOUND')).toContain(CID_A);
    configFile = join(env.root, 'missing.json');
    expect(await fail(['list'], 'CONFIG_UNREADABLE')).toContain('missing.json');
  });
});
