import { ERROR_FAILED, ERROR_NOT_IMPLEMENTED, ERROR_NOT_REGISTERED, Status } from '../constants.js';
import { describeError, isHmdError } from '../errors.js';
import type { Logger } from '../log.js';
import { err, ret, type MethodImpl } from '../bus/router.js';
import type { IncomingCall, CallReply } from '../bus/types.js';
import type { CallerIdentifier, Identity } from '../containers/identity.js';
import type { Registry } from '../containers/registry.js';
import type { Metrics } from './metrics.js';

/** What the Container interface needs of the keystore (absent until it is configured). */
export interface KeystoreService {
  startSave(cid: string): Promise<number>;
  getStatus(cid: string): number;
}

export interface ContainerApiDeps {
  identifier: Pick<CallerIdentifier, 'identify'>;
  registry: Registry;
  keystore: KeystoreService | null;
  metrics: Metrics;
  logger: Logger;
  /** Resolves once the state that covers the changes made so far is on disk. */
  durable: () => Promise<void>;
  /** Resolves when start-up is complete: calls that come earlier wait for it, so a container
   * restored from the saved state is never registered afresh by a racing Ready. */
  started: Promise<void>;
}

/**
 * io.veea.VeeaHub.HardwareMonitoringDaemon.Container: every method first identifies the caller
 * from its bus credentials; nothing a caller sends can name another container.
 */
export function containerApi(deps: ContainerApiDeps): Record<string, MethodImpl> {
  const { identifier, registry, logger, metrics } = deps;

  const who = async (call: IncomingCall): Promise<Extract<Identity, { kind: 'container' }> | null> => {
    await deps.started;
    const id = await identifier.identify(call.sender);
    if (id.kind === 'container') return id;
    metrics.inc('unknownCallers');
    logger.info({ sender: call.sender, member: call.member, reason: id.reason, pid: id.pid, uid: id.uid }, 'caller is not a known container');
    return null;
  };

  const withKeystore = async (call: IncomingCall, op: (cid: string, ks: KeystoreService) => Promise<number> | number): Promise<CallReply> => {
    const id = await who(call);
    if (id === null) return ret('i', [Status.ENODATA]);
    if (deps.keystore === null) return err(ERROR_NOT_IMPLEMENTED, 'keystore saving is not available in this daemon');
    try {
      return ret('i', [await op(id.cid, deps.keystore)]);
    } catch (e) {
      logger.error({ cid: id.cid, member: call.member, err: describeError(e) }, 'keystore operation failed');
      return ret('i', [Status.EAGAIN]);
    }
  };

  return {
    Register: async (call) => {
      const id = await who(call);
      if (id === null) return ret('is', [Status.ENODATA, '']);
      const entry = registry.register(id.cid, call.sender);
      metrics.inc('registrations');
      logger.debug({ cid: id.cid, sender: call.sender, via: id.via }, 'registered');
      return ret('is', [Status.OK, entry.busName]);
    },

    Ready: async (call) => {
      const id = await who(call);
      if (id === null) return err(ERROR_NOT_REGISTERED, 'the caller is not in a container known to the daemon');
      let fresh: boolean;
      try {
        fresh = registry.ready(id.cid, call.sender).fresh;
      } catch (e) {
        if (isHmdError(e, 'NOT_REGISTERED')) return err(ERROR_NOT_REGISTERED, 'call Register() before Ready()');
        logger.error({ cid: id.cid, err: describeError(e) }, 'Ready failed');
        return err(ERROR_FAILED, 'internal error');
      }
      // Answer a new readiness once it is durable: a daemon killed right after still knows it.
      // A repeated Ready changes nothing, so it costs no write.
      if (fresh) await deps.durable();
      return ret();
    },

    StartKeystoreSave: (call) =>
      withKeystore(call, async (cid, ks) => {
        const status = await ks.startSave(cid);
        if (status === Status.OK) metrics.inc('keystoreSaves');
        return status;
      }),

    GetKeystoreStatus: (call) => withKeystore(call, (cid, ks) => ks.getStatus(cid)),
  };
}
