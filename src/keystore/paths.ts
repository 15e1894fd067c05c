import { join } from 'node:path';
import { CONTAINER_ID_RE } from '../constants.js';
import { ErrorCode, HmdError } from '../errors.js';

export const CID_PLACEHOLDER = '{cid}';

/** Every path built from a container ID goes through here: the ID becomes a path component. */
export function assertContainerId(cid: string): void {
  if (!CONTAINER_ID_RE.test(cid)) {
    throw new HmdError(ErrorCode.InvalidArgs, `not a container ID (64 lower-case hex characters): ${JSON.stringify(cid)}`);
  }
}

/** `keystore.sourceDir` with `{cid}` replaced; a template without `{cid}` would mix containers. */
export function sourceDirFor(template: string, cid: string): string {
  assertContainerId(cid);
  if (!template.includes(CID_PLACEHOLDER)) {
    throw new HmdError(ErrorCode.ConfigInvalid, `keystore.sourceDir must contain ${CID_PLACEHOLDER}: ${template}`);
  }
  return template.replaceAll(CID_PLACEHOLDER, cid);
}

/** Where a container's sealed copies live (see the format notes in store.ts). */
export function storeFiles(storeDir: string, cid: string): { current: string; previous: string } {
  assertContainerId(cid);
  return { current: join(storeDir, `${cid}.ks`), previous: join(storeDir, `${cid}.ks.prev`) };
}

/** The file that keeps each container's last save result across daemon restarts. */
export function statusFile(stateDir: string): string {
  return join(stateDir, 'keystore-status.json');
}
