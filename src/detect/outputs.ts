import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { alertFields, type Alert } from './engine.js';

/** Counts kept by the outputs: everything not delivered is counted by a reason. */
export interface OutputCounters {
  stored: number;
  /** Alerts dropped before reaching Redis: queue full, or a write that failed. */
  streamDropped: number;
  webhookSent: number;
  /** Failed attempts (each retry counts). */
  webhookFailures: number;
  /** Alerts given up on: attempts exhausted, or the queue full. */
  webhookDropped: number;
}

export const newOutputCounters = (): OutputCounters => ({ stored: 0, streamDropped: 0, webhookSent: 0, webhookFailures: 0, webhookDropped: 0 });

export interface AlertStreamOptions {
  key: string;
  /** Approximate cap of the stream (XADD MAXLEN ~). */
  maxLen: number;
  /** Alerts waiting for Redis; beyond it new alerts are dropped and counted. */
  maxQueue: number;
  flushIntervalMs: number;
}

/**
 * Appends alerts to one Redis stream, off the hot path: alerts queue in memory and a timer writes them in one
 * pipeline. Consumers read the stream with XREAD or consumer groups (XREADGROUP); entries are flat field/value pairs.
 */
export class AlertStream {
  private queue: Alert[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly opts: AlertStreamOptions,
    private readonly counters: OutputCounters,
    private readonly logger: Logger,
    /** Called with each alert once stored, with its entry ID. */
    private readonly onStored?: (a: Alert) => void,
  ) {}

  push(a: Alert): void {
    if (this.queue.length >= this.opts.maxQueue) {
      this.counters.streamDropped++;
      return;
    }
    this.queue.push(a);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.opts.flushIntervalMs);
  }

  async flush(): Promise<void> {
    while (this.writing !== undefined) await this.writing;
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.writing = this.write(batch).finally(() => {
      this.writing = undefined;
    });
    await this.writing;
  }

  private async write(batch: Alert[]): Promise<void> {
    const pl = this.redis.pipeline();
    for (const a of batch) pl.xadd(this.opts.key, 'MAXLEN', '~', this.opts.maxLen, '*', ...alertFields(a));
    let replies: [Error | null, unknown][];
    try {
      replies = (await pl.exec()) ?? [];
    } catch (err) {
      this.counters.streamDropped += batch.length;
      this.logger.warn({ err, alerts: batch.length }, 'alerts not stored: Redis write failed');
      return;
    }
    batch.forEach((a, i) => {
      const [err, id] = replies[i] ?? [new Error('no reply'), null];
      if (err !== null || typeof id !== 'string') {
        this.counters.streamDropped++;
        return;
      }
      this.counters.stored++;
      this.onStored?.({ ...a, id });
    });
  }

  async close(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}

export interface WebhookOptions {
  url: string;
  maxQueue: number;
  maxAttempts: number;
  /** First retry delay; doubled per attempt. */
  backoffMs: number;
  timeoutMs: number;
}

/**
 * POSTs each alert as a JSON object, one at a time in order. A failed POST (network error, timeout, non-2xx) is
 * retried with doubling delays up to `maxAttempts`; then the alert is dropped and counted. The queue is bounded:
 * when full, the oldest waiting alert is dropped (the newest says more about now).
 */
export class Webhook {
  private readonly queue: Alert[] = [];
  private running = false;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly opts: WebhookOptions,
    private readonly counters: OutputCounters,
    private readonly logger: Logger,
  ) {}

  get queued(): number {
    return this.queue.length;
  }

  push(a: Alert): void {
    if (this.closed) return;
    if (this.queue.length >= this.opts.maxQueue) {
      // The head is being posted while running: drop the oldest waiting one, or this one when none waits.
      const oldestWaiting = this.running ? 1 : 0;
      this.counters.webhookDropped++;
      if (oldestWaiting >= this.queue.length) return;
      this.queue.splice(oldestWaiting, 1);
    }
    this.queue.push(a);
    if (!this.running) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const a = this.queue[0]!;
        let delivered = false;
        for (let attempt = 1; attempt <= this.opts.maxAttempts && !this.closed; attempt++) {
          if (await this.post(a)) {
            delivered = true;
            break;
          }
          this.counters.webhookFailures++;
          if (attempt < this.opts.maxAttempts) await this.sleep(this.opts.backoffMs * 2 ** (attempt - 1));
        }
        this.queue.shift();
        if (delivered) this.counters.webhookSent++;
        else {
          this.counters.webhookDropped++;
          this.logger.warn({ rule: a.rule, attempts: this.opts.maxAttempts }, 'webhook: alert not delivered');
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async post(a: Alert): Promise<boolean> {
    try {
      const res = await fetch(this.opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(a),
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      await res.body?.cancel();
      return res.ok;
    } catch {
      return false;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  /** Gives up waiting retries; what is queued is dropped and counted. */
  close(): void {
    this.closed = true;
    this.counters.webhookDropped += this.queue.length;
    this.queue.length = 0;
    this.wake?.();
  }
}
