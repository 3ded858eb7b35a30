import type { Registry } from 'prom-client';
import { ConfigSchema, type Config } from '../config/index.js';
import { exportCounter, seriesOf } from '../metrics.js';
import { HttpError } from './filters.js';

/** Every bound the API enforces; built from the configuration (the defaults live in its schema only). */
export interface ApiLimits {
  /** Records older than this are gone (`store.retentionMs`); 0 = no age limit. Ranges are clamped to it. */
  retentionMs: number;
  allowedHosts: readonly string[];
  maxConnections: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  idleTimeoutMs: number;
  maxLiveClients: number;
  liveMaxRecordsPerSecond: number;
  maxConcurrentQueries: number;
  flowsScanBudget: number;
  connectionsScanBudget: number;
  topMaxRangeMs: number;
  topMaxReadEntries: number;
  cidrMaxAddresses: number;
}

export function apiLimits(config: Pick<Config, 'http' | 'store'>): ApiLimits {
  const h = config.http;
  return {
    retentionMs: config.store.retentionMs,
    allowedHosts: h.allowedHosts,
    maxConnections: h.maxConnections,
    headersTimeoutMs: h.headersTimeoutMs,
    requestTimeoutMs: h.requestTimeoutMs,
    keepAliveTimeoutMs: h.keepAliveTimeoutMs,
    idleTimeoutMs: h.idleTimeoutMs,
    maxLiveClients: h.maxLiveClients,
    liveMaxRecordsPerSecond: h.liveMaxRecordsPerSecond,
    maxConcurrentQueries: h.maxConcurrentQueries,
    flowsScanBudget: h.flowsScanBudget,
    connectionsScanBudget: h.connectionsScanBudget,
    topMaxRangeMs: h.topMaxRangeMs,
    topMaxReadEntries: h.topMaxReadEntries,
    cidrMaxAddresses: h.cidrMaxAddresses,
  };
}

/** The limits of a default configuration, with overrides (tests, benchmarks). */
export function defaultApiLimits(overrides: Partial<ApiLimits> = {}): ApiLimits {
  return { ...apiLimits(ConfigSchema.parse({})), ...overrides };
}

/** What the API refused or cut, for `/healthz` detail and `/metrics`. */
export interface ApiCounters {
  /** HTTP connections closed at accept because `maxConnections` were open. */
  connectionsRefused: number;
  /** Heavy queries answered 503 because `maxConcurrentQueries` were running. */
  queriesRefused: number;
  /** Live followers answered 503 because `maxLiveClients` were following. */
  liveRefused: number;
  /** Requests answered 421 for a Host header that is not this server's (no token set). */
  hostRejected: number;
  /** Records live followers did not get: skipped by the live tail's rate cap, or queued past a slow client's bound. */
  liveSkipped: number;
  liveDropped: number;
}

export const newCounters = (): ApiCounters => ({ connectionsRefused: 0, queriesRefused: 0, liveRefused: 0, hostRejected: 0, liveSkipped: 0, liveDropped: 0 });

/** Seconds a refused client is told to wait. */
export const RETRY_AFTER_S = 2;

/** An answer with `Retry-After`, for the 503s of the caps. */
export class BusyError extends HttpError {
  readonly retryAfterS = RETRY_AFTER_S;
  constructor(message: string) {
    super(503, message);
  }
}

/**
 * A counting semaphore for heavy queries: a request over the limit is refused at once (503, counted), not queued,
 * so a burst of expensive requests can neither pile up memory nor hold Redis busy behind each other.
 */
export class QueryGate {
  private running = 0;
  constructor(
    private readonly max: number,
    private readonly counters: ApiCounters,
  ) {}

  get active(): number {
    return this.running;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.max) {
      this.counters.queriesRefused += 1;
      throw new BusyError(`${this.max} heavy queries are running; retry shortly`);
    }
    this.running += 1;
    try {
      return await work();
    } finally {
      this.running -= 1;
    }
  }
}

/** `dockflow_api_refused_total{reason}`: the counters above, read when scraped. */
export function registerApiMetrics(registry: Registry, counters: ApiCounters): void {
  exportCounter(
    registry,
    { name: 'dockflow_api_refused_total', help: 'HTTP connections, queries, live followers and records the API refused or skipped, by reason', labelNames: ['reason'] },
    () => seriesOf('reason', Object.keys(counters) as (keyof ApiCounters)[], counters),
  );
}

/** One line for `/healthz` detail. */
export function describeCounters(c: ApiCounters, live: { clients: number; queries: number }, limits: ApiLimits): string {
  return (
    `${live.queries}/${limits.maxConcurrentQueries} queries, ${live.clients}/${limits.maxLiveClients} live followers; refused: ` +
    `${c.connectionsRefused} connections, ${c.queriesRefused} queries, ${c.liveRefused} followers, ${c.hostRejected} foreign Host; ` +
    `live records skipped ${c.liveSkipped}, dropped for slow followers ${c.liveDropped}`
  );
}
