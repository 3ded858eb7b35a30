import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { exportCounter, seriesOf } from '../metrics.js';
import type { ContainerRef, Endpoint, FlowRecord } from '../record.js';
import { DockerClient, dockerOptionsFromEnv } from './docker/client.js';
import { Ledger, type ContainerMeta, type LedgerOptions, type MatchKind } from './docker/ledger.js';
import { dockerMetrics } from './docker/metrics.js';
import { DockerWatcher } from './docker/watcher.js';
import type { Enricher } from './enricher.js';

export interface AttributionOptions {
  ledger: Ledger;
  registry: Registry;
  /** Syslog hostname (`host.name`) → the Docker host's name in the ledger. */
  hostMap?: Record<string, string>;
  /** The ledger host for records whose syslog hostname is not in `hostMap` (or that have none). */
  defaultHost?: string;
  /** Runs on `close()`: stops what feeds the ledger (watchers) before the enricher goes away. */
  onClose?: () => Promise<void>;
}

type UnattributedReason = 'no-holder' | 'unmapped-host' | 'no-time' | 'no-address';

const MATCH_KINDS: readonly MatchKind[] = ['ip+mac', 'ip+physdev', 'ip', 'ip-nearby'];
const UNATTRIBUTED: ContainerRef = Object.freeze({ unattributed: true });
const UNATTRIBUTED_REASONS: readonly UnattributedReason[] = ['no-holder', 'unmapped-host', 'no-time', 'no-address'];

/**
 * Names the container on the container side of each record as of the record's own time, from the in-memory ledger.
 * Records nobody can be named for are flagged `container.unattributed` and flow on.
 */
export class AttributionEnricher implements Enricher {
  private readonly ledger: Ledger;
  private readonly hostMap: Map<string, string>;
  private readonly defaultHost: string | undefined;
  private readonly onClose: (() => Promise<void>) | undefined;
  // Plain numbers on the hot path, read by the metrics at scrape time (src/metrics.ts).
  private readonly attributed: Record<MatchKind, number> = { 'ip+mac': 0, 'ip+physdev': 0, ip: 0, 'ip-nearby': 0 };
  private readonly unattributed: Record<UnattributedReason, number> = { 'no-holder': 0, 'unmapped-host': 0, 'no-time': 0, 'no-address': 0 };
  private readonly hourCache = { prefix: '', ms: 0 };
  /**
   * One frozen answer per container (the ledger replaces its meta object, never edits it) and kind of match, shared by
   * every record it names: no object per record, and the context JSON writes its text once (encode.ts).
   */
  private readonly refs = new WeakMap<ContainerMeta, Partial<Record<MatchKind, ContainerRef>>>();

  constructor(opts: AttributionOptions) {
    this.ledger = opts.ledger;
    this.hostMap = new Map(Object.entries(opts.hostMap ?? {}));
    this.defaultHost = opts.defaultHost;
    this.onClose = opts.onClose;
    exportCounter(opts.registry, { name: 'dockflow_attributed_total', help: 'Container sides named, by how the match was made', labelNames: ['match'] }, () =>
      seriesOf('match', MATCH_KINDS, this.attributed),
    );
    exportCounter(
      opts.registry,
      { name: 'dockflow_unattributed_total', help: 'Container sides that could not be named (the record is stored, flagged)', labelNames: ['reason'] },
      () => seriesOf('reason', UNATTRIBUTED_REASONS, this.unattributed),
    );
  }

  enrich(record: FlowRecord): void {
    const direction = record.network.direction;
    let side: Endpoint;
    let physdev: string | undefined;
    if (direction === 'egress' || direction === 'container-to-host' || direction === 'internal') {
      side = record.source;
      physdev = record.iptables.physin;
    } else if (direction === 'ingress' || direction === 'host-to-container') {
      side = record.destination;
      physdev = record.iptables.physout;
    } else {
      return;
    }
    const name = record.host?.name;
    const host = (name === undefined ? undefined : this.hostMap.get(name)) ?? this.defaultHost;
    if (host === undefined) {
      this.flag(record, direction === 'internal', 'unmapped-host');
      return;
    }
    const timeMs = this.timeMs(record['@timestamp']);
    if (Number.isNaN(timeMs)) {
      this.flag(record, direction === 'internal', 'no-time');
      return;
    }
    record.container = this.attribute(host, side, timeMs, physdev);
    if (direction === 'internal') record.peer_container = this.attribute(host, record.destination, timeMs, record.iptables.physout);
  }

  async close(): Promise<void> {
    await this.onClose?.();
  }

  /**
   * `Date.parse` is most of the cost of a lookup; records' `YYYY-MM-DDTHH:MM:SS.sssZ` share their hour, so the hour is
   * parsed once and the rest read digit by digit. Any other form goes to `Date.parse`.
   */
  private timeMs(ts: string): number {
    if (ts.length !== 24 || ts.charCodeAt(23) !== 90 /* Z */ || ts.charCodeAt(19) !== 46 /* . */ || ts.charCodeAt(16) !== 58 /* : */) {
      return Date.parse(ts);
    }
    const cache = this.hourCache;
    if (!ts.startsWith(cache.prefix) || cache.prefix === '') {
      const base = Date.parse(`${ts.slice(0, 13)}:00:00.000Z`);
      if (Number.isNaN(base)) return Date.parse(ts);
      cache.prefix = ts.slice(0, 13);
      cache.ms = base;
    }
    const d = (i: number): number => {
      const c = ts.charCodeAt(i) - 48;
      return c >= 0 && c <= 9 ? c : Number.NaN;
    };
    const min = d(14) * 10 + d(15);
    const sec = d(17) * 10 + d(18);
    const ms = d(20) * 100 + d(21) * 10 + d(22);
    if (!(min < 60 && sec < 61)) return Date.parse(ts); // NaN fails too
    return cache.ms + min * 60_000 + sec * 1000 + ms;
  }

  private flag(record: FlowRecord, internal: boolean, reason: UnattributedReason): void {
    record.container = UNATTRIBUTED;
    this.unattributed[reason]++;
    if (internal) {
      record.peer_container = UNATTRIBUTED;
      this.unattributed[reason]++;
    }
  }

  /** Answers are shared between records and frozen: records are serialized, not edited. */
  private attribute(host: string, ep: Endpoint, timeMs: number, physdev: string | undefined): ContainerRef {
    if (ep.ip === undefined) {
      this.unattributed['no-address']++;
      return UNATTRIBUTED;
    }
    const found = this.ledger.lookup(host, ep.ip, timeMs, { mac: ep.mac === undefined ? undefined : ledgerMac(ep.mac), physdev });
    if (found === undefined) {
      this.unattributed['no-holder']++;
      return UNATTRIBUTED;
    }
    const { holding, match } = found;
    // Learn the veth only from unambiguous matches; a reused veth name would otherwise mislead later lookups.
    if (physdev !== undefined && holding.physdev === undefined && (match === 'ip' || match === 'ip+mac')) {
      this.ledger.notePhysdev(holding, physdev);
    }
    this.attributed[match]++;
    return this.ref(holding.container, match);
  }

  private ref(c: ContainerMeta, match: MatchKind): ContainerRef {
    let byMatch = this.refs.get(c);
    if (byMatch === undefined) this.refs.set(c, (byMatch = {}));
    return (byMatch[match] ??= Object.freeze({ id: c.id, name: c.name, image: Object.freeze({ name: c.image }), labels: Object.freeze({ ...c.labels }), ...(c.ports !== undefined && c.ports.length > 0 ? { ports: Object.freeze([...c.ports]) } : {}), match }));
  }
}

export interface StartAttributionOptions {
  redis: Redis;
  logger: Logger;
  registry: Registry;
  /** DOCKER_HOST-style endpoint for records whose syslog hostname is not in `endpoints`. */
  defaultEndpoint?: string;
  /** Syslog hostname → Docker endpoint. */
  endpoints?: Record<string, string>;
  reconcileIntervalMs?: number;
  /** TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION) are read from here, as the CLI does. */
  env?: NodeJS.ProcessEnv;
  ledger?: Omit<LedgerOptions, 'redis' | 'logger'>;
}

export interface Attribution {
  enricher: AttributionEnricher;
  ledger: Ledger;
  watchers: DockerWatcher[];
}

/**
 * Loads the ledger from Redis and starts one watcher per Docker endpoint; the ledger host of each is the endpoint
 * string. Does not wait for Docker: records are attributed from what the ledger knows, flagged when it knows nothing.
 */
export async function startAttribution(opts: StartAttributionOptions): Promise<Attribution> {
  const ledger = new Ledger({ ...opts.ledger, redis: opts.redis, logger: opts.logger });
  await ledger.load();
  const endpoints = new Set(Object.values(opts.endpoints ?? {}));
  if (opts.defaultEndpoint) endpoints.add(opts.defaultEndpoint);
  const metrics = dockerMetrics(opts.registry);
  const envOptions = dockerOptionsFromEnv(opts.env ?? process.env);
  const watchers = [...endpoints].map(
    (endpoint) =>
      new DockerWatcher({
        host: endpoint,
        client: new DockerClient({ ...envOptions, host: endpoint }),
        ledger,
        logger: opts.logger,
        metrics,
        ...(opts.reconcileIntervalMs ? { reconcileIntervalMs: opts.reconcileIntervalMs } : {}),
      }),
  );
  for (const w of watchers) w.start();
  const enricher = new AttributionEnricher({
    ledger,
    registry: opts.registry,
    hostMap: opts.endpoints ?? {},
    ...(opts.defaultEndpoint ? { defaultHost: opts.defaultEndpoint } : {}),
    onClose: async () => {
      await Promise.all(watchers.map((w) => w.stop()));
      await ledger.close();
    },
  });
  return { enricher, ledger, watchers };
}

/** Records carry MACs in ECS form (`02-42-AC-11-00-02`); the ledger keeps Docker's (`02:42:ac:11:00:02`). */
function ledgerMac(mac: string): string {
  return mac.toLowerCase().replaceAll('-', ':');
}
