import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Config } from '../config/schema.js';
import type { DeviceTable } from '../devices/table.js';
import type { DeviceEvent, DeviceNotification, DeviceRecord } from '../devices/types.js';
import { Enricher } from '../devices/enrich.js';
import { enumeratePresent } from '../sources/coldplug.js';
import { SpoolSource } from '../sources/spool.js';
import { UdevadmMonitorSource } from '../sources/udevadm.js';
import type { Metrics } from './metrics.js';
import type { StateStore } from './state.js';

export interface PipelineOptions {
  config: Config;
  logger: Logger;
  table: DeviceTable;
  metrics: Metrics;
  state: StateStore;
  publish: (n: DeviceNotification) => void;
  /** For `hmd monitor`: the event is built only when someone is watching. */
  monitor: (e: () => Record<string, unknown>) => void;
  /** The devices present now, for the start-up reconcile; default: the udev database. */
  enumerate?: () => Promise<DeviceRecord[] | null>;
}

/**
 * Sources -> enrichment -> device table -> publish. Spool files are deleted only once the
 * state that covers their events is on disk, so a crash never loses an accepted event.
 */
export class DevicePipeline {
  private readonly enricher: Enricher | null;
  private spool: SpoolSource | null = null;
  private udevadm: UdevadmMonitorSource | null = null;
  /** Batches that arrived during the start-up reconcile, handled right after it. */
  private held: DeviceEvent[][] | null = null;

  constructor(private readonly opts: PipelineOptions) {
    this.enricher = opts.config.devices.enrich ? new Enricher({ logger: opts.logger.child({ component: 'enrich' }) }) : null;
  }

  async start(): Promise<void> {
    const { config, logger } = this.opts;
    await this.enricher?.start();
    // The spool's backlog first: events accepted before a restart (or a crash) are replayed
    // in the order they were first handled, so a container's queue hands them the same
    // HMD_SEQUENCE numbers as before; and history is applied before the reconcile with the
    // present, never on top of it (a stale "add" would bring back a device that is gone).
    // The spool is read in both modes: events queued while the daemon was down are never lost.
    this.spool = new SpoolSource({
      dir: config.spoolDir,
      logger: logger.child({ component: 'spool' }),
      onEvents: (events) => this.handle(events),
      onQuarantine: () => this.opts.metrics.inc('quarantined'),
    });
    await this.spool.start();
    if (config.devices.coldplug) {
      // Events that arrive while the present is enumerated wait until it is applied: an older
      // snapshot must not undo them.
      this.held = [];
      try {
        await this.coldplug();
      } finally {
        const held = this.held;
        this.held = null;
        for (const batch of held) this.handle(batch);
      }
    }
    if (config.devices.source === 'udevadm') {
      this.udevadm = new UdevadmMonitorSource({ logger: logger.child({ component: 'udevadm' }), onEvents: (events) => this.handle(events) });
      await this.udevadm.start();
    }
  }

  /** Reconciles the table with the devices really present (udev database). */
  private async coldplug(): Promise<void> {
    const present = await (this.opts.enumerate ?? (() => enumeratePresent({ subsystems: this.opts.config.devices.subsystems, logger: this.opts.logger.child({ component: 'coldplug' }) })))();
    if (present === null) return;
    const enriched = present.map((d) => ({ id: d.id, properties: this.enrich(d.properties) }));
    const changes = this.opts.table.reconcile(enriched);
    for (const n of changes) this.opts.publish(n);
    this.opts.logger.info({ present: present.length, inserted: changes.filter((c) => c.kind === 'insert').length, removed: changes.filter((c) => c.kind === 'remove').length }, 'reconciled with the devices present');
    this.opts.state.markDirty();
  }

  private enrich(props: Record<string, string>): Record<string, string> {
    if (this.enricher === null) return props;
    try {
      const extra = this.enricher.enrich(props);
      return Object.keys(extra).length === 0 ? props : { ...props, ...extra };
    } catch (err) {
      this.opts.logger.debug({ err: describeError(err) }, 'enrichment failed; delivering without it');
      return props;
    }
  }

  handle(events: DeviceEvent[]): void {
    if (this.held !== null) {
      this.held.push(events);
      return;
    }
    const files: string[] = [];
    for (const e of events) {
      this.opts.metrics.inc('eventsReceived');
      if (e.spoolFile !== undefined) files.push(e.spoolFile);
      const n = this.opts.table.apply(e.action === 'remove' ? e : { ...e, properties: this.enrich(e.properties) });
      if (n === null) this.opts.metrics.inc('eventsIgnored');
      else this.opts.publish(n);
      this.opts.monitor(() => ({ type: 'event', action: e.action, devpath: e.devpath, subsystem: e.subsystem, seqnum: e.seqnum?.toString() ?? null, source: e.source, notified: n?.kind ?? null }));
    }
    if (files.length > 0) {
      const spool = this.spool;
      this.opts.state.afterDurable(() => {
        spool?.release(files).catch((err: unknown) => this.opts.logger.warn({ err: describeError(err) }, 'cannot delete processed spool files'));
      });
    } else {
      this.opts.state.markDirty();
    }
  }

  async stop(): Promise<void> {
    await this.spool?.stop();
    await this.udevadm?.stop();
    await this.enricher?.stop();
  }
}
