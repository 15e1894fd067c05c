import { ADMIN_INTERFACE, DAEMON_OBJECT_PATH, ERROR_ACCESS_DENIED } from '../constants.js';
import type { Logger } from '../log.js';
import { err, ret, type MethodImpl } from '../bus/router.js';
import type { BusConnection, IncomingCall } from '../bus/types.js';

/**
 * Live stream for `hmd monitor`: Monitor signals go to subscribed connections only (unicast),
 * so nothing is sent while no operator is watching, and a subscriber that leaves the bus is
 * forgotten.
 */
export class MonitorHub {
  private readonly subscribers = new Set<string>();
  private bus: Pick<BusConnection, 'emitSignal'> | null = null;

  constructor(private readonly logger: Logger) {}

  attach(bus: Pick<BusConnection, 'emitSignal'>): void {
    this.bus = bus;
  }

  subscribe(name: string): void {
    this.subscribers.add(name);
  }

  unsubscribe(name: string): void {
    this.subscribers.delete(name);
  }

  connectionGone(name: string): void {
    this.subscribers.delete(name);
  }

  /** `event` is built only when someone subscribed: most of the time nobody watches. */
  emit(event: () => Record<string, unknown>): void {
    if (this.subscribers.size === 0 || this.bus === null) return;
    const text = JSON.stringify({ time: new Date().toISOString(), ...event() });
    for (const s of this.subscribers) {
      try {
        this.bus.emitSignal(DAEMON_OBJECT_PATH, ADMIN_INTERFACE, 'Monitor', 's', [text], s);
      } catch (e) {
        this.logger.debug({ subscriber: s, err: String(e) }, 'monitor signal not sent');
      }
    }
  }
}

export interface AdminApiDeps {
  bus: Pick<BusConnection, 'getCredentials' | 'emitSignal'>;
  monitor: MonitorHub;
  status: () => Record<string, unknown>;
  logger: Logger;
}

/**
 * io.veea.VeeaHub.HardwareMonitoringDaemon.Admin: root only. The bus policy already says so;
 * the daemon checks the caller's uid too, in case the policy file is missing or edited.
 */
export function adminApi(deps: AdminApiDeps): Record<string, MethodImpl> {
  deps.monitor.attach(deps.bus);
  const rootOnly =
    (fn: (call: IncomingCall) => ReturnType<MethodImpl>): MethodImpl =>
    async (call) => {
      const creds = await deps.bus.getCredentials(call.sender).catch(() => null);
      if (creds === null || creds.uid !== 0) {
        deps.logger.warn({ sender: call.sender, uid: creds?.uid, member: call.member }, 'admin call refused: not root');
        return err(ERROR_ACCESS_DENIED, 'the Admin interface is for root only');
      }
      return fn(call);
    };
  return {
    GetStatus: rootOnly(() => ret('s', [JSON.stringify(deps.status())])),
    Subscribe: rootOnly((call) => {
      deps.monitor.subscribe(call.sender);
      return ret();
    }),
    Unsubscribe: rootOnly((call) => {
      deps.monitor.unsubscribe(call.sender);
      return ret();
    }),
  };
}
