/** Shared fixtures for the keystore tests: a private tree of source, store, key and state dirs. */
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseConfig } from '../../../src/config/load.js';
import type { Config } from '../../../src/config/schema.js';
import { Status } from '../../../src/constants.js';
import { silentLogger } from '../../../src/log.js';
import { KeystoreManager, type KeystoreManagerOptions } from '../../../src/keystore/manager.js';

export const CID_A = 'a'.repeat(64);
export const CID_B = 'b'.repeat(64);

export interface Env {
  root: string;
  config: Config['keystore'];
  stateDir: string;
  /** The host directory holding `cid`'s keystore (created on demand by `writeTree`). */
  source(cid: string): string;
  manager(extra?: Partial<KeystoreManagerOptions>): KeystoreManager;
  cleanup(): void;
}

export function makeEnv(limitBytes = 131072): Env {
  const root = mkdtempSync(join(tmpdir(), 'hmd-ks-'));
  chmodSync(root, 0o700);
  const config = parseConfig({
    keystore: {
      sourceDir: join(root, 'containers', '{cid}', 'keystore'),
      storeDir: join(root, 'store'),
      keyFile: join(root, 'etc', 'keystore.key'),
      limitBytes,
    },
  }).keystore;
  const stateDir = join(root, 'state');
  return {
    root,
    config,
    stateDir,
    source: (cid) => config.sourceDir.replace('{cid}', cid),
    manager: (extra = {}) => new KeystoreManager({ config, stateDir, logger: silentLogger(), ...extra }),
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
}

/** A tree description: path -> file content (string/Buffer) or { mode } for a directory. */
export type TreeSpec = Record<string, string | Buffer | { dir: true; mode?: number } | { data: string | Buffer; mode: number }>;

export function writeTree(dir: string, spec: TreeSpec): void {
  mkdirSync(dir, { recursive: true });
  for (const [rel, v] of Object.entries(spec)) {
    const p = join(dir, rel);
    if (typeof v === 'object' && 'dir' in v) {
      mkdirSync(p, { recursive: true });
      if (v.mode !== undefined) chmodSync(p, v.mode);
    } else if (typeof v === 'object' && 'data' in v) {
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, v.data);
      chmodSync(p, v.mode);
    } else {
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, v);
    }
  }
}

/** Everything in a tree, for byte-for-byte comparison: path -> kind, permission bits, content. */
export function readTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, r));
      const mode = (st.mode & 0o777).toString(8);
      if (st.isDirectory()) {
        out[r] = `dir ${mode}`;
        walk(r);
      } else if (st.isSymbolicLink()) {
        out[r] = `link -> ${readlinkSync(join(dir, r))}`;
      } else {
        out[r] = `file ${mode} ${readFileSync(join(dir, r)).toString('hex')}`;
      }
    }
  };
  walk('');
  return out;
}

/** All bytes of every file under `dir`, concatenated (to search for leaked content). */
export function allBytes(dir: string): Buffer {
  const parts: Buffer[] = [];
  const walk = (p: string): void => {
    for (const name of readdirSync(p)) {
      const q = join(p, name);
      const st = lstatSync(q);
      if (st.isDirectory()) walk(q);
      else if (st.isFile()) parts.push(readFileSync(q), Buffer.from(name));
    }
  };
  try {
    walk(dir);
  } catch {
    /* no such dir: nothing stored */
  }
  return Buffer.concat(parts);
}

/** Polls GetKeystoreStatus until the save is no longer in progress (the container's view). */
export async function settledStatus(m: KeystoreManager, cid: string, deadlineMs = 20_000): Promise<number> {
  const end = Date.now() + deadlineMs;
  while (m.getStatus(cid) === Status.EBUSY) {
    if (Date.now() > end) throw new Error(`keystore save of ${cid} still in progress after ${deadlineMs} ms`);
    await sleep(5);
  }
  return m.getStatus(cid);
}

/** The last error recorded for a container. */
export function lastError(m: KeystoreManager, cid: string): string {
  return m.describe().find((d) => d.cid === cid)?.lastError ?? '';
}
