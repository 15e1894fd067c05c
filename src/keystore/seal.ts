/**
 * AES-256-GCM sealing of a serialized snapshot. The container ID is additional authenticated
 * data, so a blob sealed for container A fails authentication when opened as container B's.
 * Blob layout: see the notes at the top of store.ts.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ErrorCode, HmdError } from '../errors.js';
import { KEY_BYTES } from './key.js';
import { assertContainerId } from './paths.js';

const MAGIC = Buffer.from('HMDKSEAL', 'latin1');
const VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = MAGIC.length + 1;
export const SEAL_OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES;

function aad(header: Buffer, cid: string): Buffer {
  return Buffer.concat([header, Buffer.from(cid, 'latin1')]);
}

function checkKey(key: Buffer): void {
  if (key.length !== KEY_BYTES) throw new HmdError(ErrorCode.KeystoreKey, `sealing key must be ${KEY_BYTES} bytes`);
}

export function seal(plaintext: Buffer, key: Buffer, cid: string): Buffer {
  assertContainerId(cid);
  checkKey(key);
  const header = Buffer.concat([MAGIC, Buffer.of(VERSION)]);
  // A random 96-bit nonce per save: safe for far more saves than a hub will ever make with one key.
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad(header, cid));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([header, nonce, cipher.getAuthTag(), body]);
}

/** Opens a blob; any mismatch (tampering, wrong key, wrong container) is KEYSTORE_AUTH. */
export function unseal(blob: Buffer, key: Buffer, cid: string): Buffer {
  assertContainerId(cid);
  checkKey(key);
  if (blob.length < SEAL_OVERHEAD || !blob.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new HmdError(ErrorCode.KeystoreAuth, 'not a sealed keystore (bad header or truncated)');
  }
  const version = blob[MAGIC.length];
  if (version !== VERSION) throw new HmdError(ErrorCode.KeystoreAuth, `unsupported sealed keystore version ${String(version)}`);
  const header = blob.subarray(0, HEADER_BYTES);
  const nonce = blob.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES);
  const tag = blob.subarray(HEADER_BYTES + NONCE_BYTES, SEAL_OVERHEAD);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad(header, cid));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(blob.subarray(SEAL_OVERHEAD)), decipher.final()]);
  } catch (err) {
    throw new HmdError(
      ErrorCode.KeystoreAuth,
      'authentication failed: the file was altered, sealed with another key, or belongs to another container',
      { cause: err },
    );
  }
}
