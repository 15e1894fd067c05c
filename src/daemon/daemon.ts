import { ADMIN_INTERFACE, CONTAINER_INTERFACE, DAEMON_BUS_NAME, DAEMON_OBJECT_PATH, agentBusName } from '../constants.js';
import { HmdError, ErrorCode, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { BusConnection, BusFactory } from '../bus/types.js';
import { loadInterface } from '../bus/introspect.js';
import { createRouter } from '../bus/router.js';
import { CallerIdentifier } from '../containers/identity.js';
import { Registry } from '../containers/registry.js';
import { DeviceTable } from '../devices/table.js';
import { readBootId } from '../devices/boot.js';
import { Dispatcher } from '../dispatch/dispatcher.js';
import { DeliveryPool } from '../dispatch/pool.js';
import { dispatchStateSchema } from '../dispatch/queue.js';
import { containerApi, type KeystoreService } from './container-api.js';
import { adminApi, MonitorHub } from './admin-api.js';
import { Metrics } from './metrics.js';
import { StateStore } from './state.js';
import { DevicePipeline } from './pipeline.js';

export interface DaemonOptions {
  config: Config;
  logger: Logger;
  busFactory: BusFactory;
  /** Keystore saving; null leaves the keystore methods answering NotImplemented. */
  keystore?: (KeystoreService & { start(): Promise<void>; stop(): Promise<void>; describe(): unknown[] }) | null;
  procRoot?: string;
  /** Called once when the daemon can no longer serve (bus lost): the process exits non-zero. */
  onFatal?: (reason: string) => void;
}

/**
 * Wires the components together: sources -> device table -> dispatcher -> containers, and the
 * D-Bus service in front of registry, keystore and status. Owns start-up order and shutdown.
 */
export class Daemon {
  readonly metrics = new Metrics();
  private bus: BusConnection | null = null;
  private pool: DeliveryPool | null = null;
  private state!: StateStore;
  private table!: DeviceTable;
  private dispatcher!: Dispatcher;
  private registry!: Registry;
  private identifier!: CallerIdentifier;
  private pipeline: DevicePipeline | null = null;
  private readonly monitor: MonitorHub;
  private stopping = false;
  private fatalSent = false;
  private markStarted!: () => void;
  private readonly started = new Promise<void>((res) => (this.markStarted = res));

  constructor(private readonly opts: DaemonOptions) {
    this.monitor = new MonitorHub(opts.logger);
  }

  private fatal(reason: string): void {
    if (this.stopping || this.fatalSent) return;
    this.fatalSent = true;
    this.opts.logger.fatal({ reason }, 'cannot go on serving');
    this.opts.onFatal?.(reason);
  }

  async start(): Promise<void> {
    const { config, logger } = this.opts;
    const bootId = readBootId(this.opts.procRoot ?? '/proc');
    this.state = new StateStore({ dir: config.stateDir, logger, collect: () => this.collectState() });
    const saved = this.state.load();

    const bus = await this.opts.busFactory();
    this.bus = bus;
    bus.onLost((reason) => this.fatal(`lost the bus: ${reason}`));

    this.identifier = new CallerIdentifier({
      bus,
      procRoot: this.opts.procRoot ?? '/proc',
      runtimes: config.identity.runtimes,
      uidMap: config.identity.uidMap,
      dockerCgroupParents: config.identity.dockerCgroupParents,
      logger: logger.child({ component: 'identity' }),
    });
    this.registry = new Registry({ logger: logger.child({ component: 'registry' }) });
    this.table = this.restoreTable(saved?.['devices'], bootId);
    this.pool = new DeliveryPool({
      factory: this.opts.busFactory,
      logger: logger.child({ component: 'pool' }),
      maxPendingPerConnection: config.delivery.maxPendingPerConnection,
      onLost: (reason) => this.fatal(reason),
    });
    this.pool.onGrown = () => this.dispatcher.slotsAvailable();
    this.dispatcher = new Dispatcher({
      logger: logger.child({ component: 'dispatch' }),
      bus,
      pool: this.pool,
      containerOf: async (name) => {
        const id = await this.identifier.identify(name);
        return id.kind === 'container' ? id.cid : null;
      },
      devices: this.table,
      timeoutMs: config.delivery.timeoutMs,
      queueLimit: config.delivery.queueLimit,
      metrics: this.metrics,
      onDirty: () => this.state.markDirty(),
      onProgress: () => this.state.markProgress(),
      afterDurable: (cb) => this.state.afterDurable(cb),
      onMonitor: (e) => this.monitor.emit(e),
    });
    this.registry.on('ready', (entry, info) => {
      if (!info?.restored) this.dispatcher.ready(entry.cid, entry.readyConnection ?? '', info?.fresh ?? true);
    });
    this.registry.on('unready', (entry) => this.dispatcher.drop(entry.cid, 'its agent left the bus'));
    this.registry.on('gone', (entry) => this.dispatcher.drop(entry.cid, 'all its connections left the bus'));

    bus.serve(
      createRouter([
        {
          path: DAEMON_OBJECT_PATH,
          interfaces: [
            {
              def: loadInterface(CONTAINER_INTERFACE),
              impl: containerApi({
                identifier: this.identifier,
                registry: this.registry,
                keystore: this.opts.keystore ?? null,
                metrics: this.metrics,
                logger,
                durable: () => new Promise<void>((res) => this.state.afterDurable(res)),
                started: this.started,
              }),
            },
            { def: loadInterface(ADMIN_INTERFACE), impl: adminApi({ bus, monitor: this.monitor, status: () => this.status(), logger }) },
          ],
        },
      ]),
    );
    await bus.onNameOwnerChanged((name, _old, newOwner) => {
      if (name.startsWith(':') && newOwner === '') {
        this.identifier.forget(name);
        this.registry.connectionGone(name);
        this.monitor.connectionGone(name);
      } else {
        this.dispatcher.nameOwnerChanged(name, newOwner);
      }
    });

    // Claim the name before touching the spool: a second daemon must not eat the first's events.
    const got = await bus.requestName(DAEMON_BUS_NAME, { doNotQueue: true });
    if (got !== 'primary' && got !== 'already') {
      const owner = await bus.getNameOwner(DAEMON_BUS_NAME).catch(() => null);
      throw new HmdError(ErrorCode.NameTaken, `${DAEMON_BUS_NAME} is already owned by ${owner ?? 'another connection'}: is another hmd daemon running?`);
    }

    await this.pool.start();
    await this.opts.keystore?.start();
    await this.restoreQueues(saved?.['dispatch']);

    this.pipeline = new DevicePipeline({
      config,
      logger,
      table: this.table,
      metrics: this.metrics,
      state: this.state,
      publish: (n) => this.dispatcher.publish(n),
      monitor: (e) => this.monitor.emit(e),
    });
    await this.pipeline.start();
    this.state.markDirty();
    this.markStarted();
    logger.info({ name: DAEMON_BUS_NAME, unique: bus.uniqueName, devices: this.table.size }, 'serving');
  }

  private restoreTable(saved: unknown, bootId: string): DeviceTable {
    const opts = { subsystems: this.opts.config.devices.subsystems, bootId, logger: this.opts.logger.child({ component: 'devices' }) };
    if (saved === undefined) return new DeviceTable(opts);
    try {
      return DeviceTable.restore(saved, opts);
    } catch (err) {
      this.opts.logger.error({ err: describeError(err) }, 'saved device table is unusable; starting empty');
      return new DeviceTable(opts);
    }
  }

  /** Containers that were Ready before a restart and whose agent is still on the bus go on. */
  private async restoreQueues(saved: unknown): Promise<void> {
    if (saved === undefined) return;
    const parsed = dispatchStateSchema.safeParse(saved);
    if (!parsed.success) {
      this.opts.logger.error({ err: parsed.error.message }, 'saved delivery state is unusable; containers must call Ready again');
      return;
    }
    const bus = this.bus as BusConnection;
    const restored = await this.dispatcher.restore(parsed.data, async (cid, owner) => {
      const now = await bus.getNameOwner(agentBusName(cid)).catch(() => null);
      if (now !== owner) return false;
      const id = await this.identifier.identify(owner);
      if (id.kind !== 'container' || id.cid !== cid) return false;
      this.registry.restoreReady(cid, owner);
      return true;
    });
    this.opts.logger.info({ restored: restored.length, saved: parsed.data.containers.length }, 'delivery state restored');
  }

  /**
   * SIGHUP: applies what can change without dropping containers — log level, delivery
   * deadlines and limits, reported subsystems. Paths and the bus need a restart (logged).
   */
  reload(next: Config): void {
    const cur = this.opts.config;
    this.opts.logger.level = next.logLevel;
    this.dispatcher.configure({ timeoutMs: next.delivery.timeoutMs, queueLimit: next.delivery.queueLimit });
    this.table.setSubsystems(next.devices.subsystems);
    const needRestart: string[] = (['bus', 'spoolDir', 'stateDir'] as const).filter((k) => next[k] !== cur[k]);
    if (JSON.stringify(next.keystore) !== JSON.stringify(cur.keystore)) needRestart.push('keystore');
    if (JSON.stringify(next.identity) !== JSON.stringify(cur.identity)) needRestart.push('identity');
    if (needRestart.length > 0) this.opts.logger.warn({ keys: needRestart }, 'these settings take effect at the next restart');
    this.opts.logger.info({ logLevel: next.logLevel, delivery: next.delivery, subsystems: next.devices.subsystems }, 'configuration reloaded');
  }

  private collectState(): Record<string, unknown> {
    return { devices: this.table.serialize(), dispatch: this.dispatcher.serialize() };
  }

  status(): Record<string, unknown> {
    const containers = this.registry.list().map((e) => ({
      id: e.cid,
      busName: e.busName,
      state: e.state,
      connections: e.connections.size,
      ...(this.dispatcher.status(e.cid) ?? {}),
    }));
    const devices = this.table.list().map((d) => ({ id: d.id, properties: d.properties }));
    return {
      containers,
      devices,
      metrics: this.metrics.snapshot(),
      keystore: this.opts.keystore?.describe() ?? [],
      delivery: this.pool?.stats(),
      stateHealthy: this.state.healthy,
    };
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.pipeline?.stop();
    this.dispatcher?.stop();
    await this.opts.keystore?.stop();
    await this.state?.stop();
    if (this.bus) {
      await this.bus.releaseName(DAEMON_BUS_NAME).catch(() => undefined);
      this.bus.close();
    }
    this.pool?.close();
  }
}
