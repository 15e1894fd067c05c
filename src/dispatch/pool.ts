import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { BusConnection, BusFactory } from '../bus/types.js';

export interface PoolOptions {
  factory: BusFactory;
  logger: Logger;
  /** Most unanswered calls one connection may hold; the bus refuses the 129th. */
  maxPendingPerConnection: number;
  /** Most connections to open: root's connection budget is shared with root containers. */
  maxConnections?: number;
  onLost: (reason: string) => void;
}

/**
 * The connections notifications leave on. A hung container keeps its call's reply slot on the
 * bus until it answers or leaves, and one container has at most one call in flight, so by
 * spreading calls over connections with a per-connection cap, hung containers can never use up
 * the slots healthy containers need: each ~100 hung containers cost one more connection.
 */
export class DeliveryPool {
  private readonly conns: BusConnection[] = [];
  private opening: Promise<void> | null = null;
  private closed = false;

  constructor(private readonly opts: PoolOptions) {}

  async start(): Promise<void> {
    await this.open();
  }

  private async open(): Promise<void> {
    const conn = await this.opts.factory();
    if (this.closed) {
      conn.close();
      return;
    }
    conn.onLost((reason) => this.opts.onLost(`delivery connection ${conn.uniqueName}: ${reason}`));
    this.conns.push(conn);
    this.opts.logger.debug({ connection: conn.uniqueName, total: this.conns.length }, 'delivery connection opened');
  }

  /**
   * A connection with a free reply slot, or null when all are at the cap (one more is then
   * being opened; `onSlotsMaybeFree` callers retry).
   */
  acquire(): BusConnection | null {
    let best: BusConnection | null = null;
    for (const c of this.conns) {
      const p = c.pendingCalls();
      if (p < this.opts.maxPendingPerConnection && (best === null || p < best.pendingCalls())) best = c;
    }
    if (best === null) this.grow();
    return best;
  }

  private grow(): void {
    if (this.opening !== null || this.closed) return;
    if (this.conns.length >= (this.opts.maxConnections ?? 16)) return;
    this.opening = this.open()
      .catch((err: unknown) => this.opts.logger.error({ err: describeError(err) }, 'cannot open another delivery connection'))
      .finally(() => {
        this.opening = null;
        this.onGrown?.();
      });
  }

  /** Called when a new connection is available (the dispatcher then retries waiting queues). */
  onGrown?: () => void;

  stats(): { connections: number; pending: number[] } {
    return { connections: this.conns.length, pending: this.conns.map((c) => c.pendingCalls()) };
  }

  close(): void {
    this.closed = true;
    for (const c of this.conns) c.close();
    this.conns.length = 0;
  }
}
