/** Counters shown under `metrics` in `hmd status --json`. */
export const COUNTERS = [
  'eventsReceived',
  'eventsIgnored',
  'quarantined',
  'delivered',
  'redeliveries',
  'timeouts',
  'resyncs',
  'squatAttempts',
  'registrations',
  'unknownCallers',
  'keystoreSaves',
  'keystoreFailures',
] as const;
export type Counter = (typeof COUNTERS)[number];

/**
 * In-memory counters and a window of recent delivery latencies (queued -> acknowledged), for
 * operators; nothing here is on a hot path beyond an increment.
 */
export class Metrics {
  private readonly counts = new Map<Counter, number>(COUNTERS.map((c) => [c, 0]));
  private readonly latencies: number[] = [];
  private next = 0;

  constructor(private readonly window = 1024) {}

  inc(c: Counter, by = 1): void {
    this.counts.set(c, (this.counts.get(c) ?? 0) + by);
  }

  get(c: Counter): number {
    return this.counts.get(c) ?? 0;
  }

  observeLatency(ms: number): void {
    if (this.latencies.length < this.window) this.latencies.push(ms);
    else this.latencies[this.next] = ms;
    this.next = (this.next + 1) % this.window;
  }

  snapshot(): Record<string, number> {
    const out: Record<string, number> = Object.fromEntries(this.counts);
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const pct = (p: number): number => (sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number));
    out['deliveryLatencyP50Ms'] = pct(0.5);
    out['deliveryLatencyP99Ms'] = pct(0.99);
    return out;
  }
}
