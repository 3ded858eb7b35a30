import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { alertRoutes } from './api/alerts.js';
import { buildApp, type LossReport } from './api/app.js';
import { containersRoutes } from './api/containers.js';
import { DASHBOARD_PUBLIC_PATHS, dashboardRoutes, defaultDashboardDir } from './api/static.js';
import { healthRoutes } from './api/health.js';
import { apiLimits, describeCounters, newCounters, registerApiMetrics } from './api/limits.js';
import { statusLines, statusRoutes, type EnrichmentStatus, type ServiceStatus } from './api/status.js';
import { isLoopback, type Config } from './config/index.js';
import { startAttribution } from './enrich/attribution.js';
import { DEFAULT_DOCKER_HOST } from './enrich/docker/client.js';
import { chainEnrichers, type Enricher } from './enrich/enricher.js';
import { openGeoEnricher, type GeoDbInfo } from './enrich/geo.js';
import { createLineOptions } from './parse/line.js';
import { rulePaths, startDetection, type Detection } from './detect/live.js';
import { IngestPipeline } from './pipeline.js';
import type { BoundAddress } from './receive/listen.js';
import { startReceivers, type Receivers } from './receive/receivers.js';
import { connectRedis, parseRedisTarget, redactUrl } from './store/connect.js';
import { acquireIngesterLease, type IngesterLease } from './store/ingester-lease.js';
import { CLUSTER_SAFE_LAYOUT, SCHEMA_VERSION, storeKeys } from './store/keys.js';
import { Ledger } from './enrich/docker/ledger.js';
import { DockflowError, ErrorCode } from './errors.js';
import { FlowIndexer } from './store/indexer.js';
import { recentRecordHashes } from './store/recent-hashes.js';
import { startEmbeddedRedis, type EmbeddedRedis } from './store/redis-server.js';
import { StreamWriter } from './store/stream-writer.js';

export interface Service {
  syslogAddresses(): BoundAddress[];
  httpAddress(): { host: string; port: number };
  redisUrl: string;
  /** Stops in order within `shutdownTimeoutMs`; resolves false when the deadline cut something short. */
  close(): Promise<boolean>;
}

export interface ServiceDeps {
  logger: Logger;
  env?: NodeJS.ProcessEnv;
}

/** The syslog TCP limits at work, for /healthz: open connections and what the caps and the frame deadline refused. */
function tcpLimitsDetail(receivers: Receivers): string {
  const m = receivers.metrics;
  const d = m.tcp.dropped;
  return (
    `tcp ${m.openConnections} open; refused: ${d['max-connections']} over the connection cap, ${d['max-connections-per-source']} over the per-source cap` +
    ` (${d['refused-lines']} lines from them); ${d['frame-timeout']} closed by the frame deadline, ${m.idleTimeouts} idle`
  );
}

async function waitForRedis(redis: Redis, url: string, logger: Logger): Promise<void> {
  if (redis.status === 'ready') return;
  const nag = setInterval(() => logger.warn({ redis: redactUrl(url) }, 'waiting for Redis before starting'), 5000);
  try {
    await once(redis, 'ready');
  } finally {
    clearInterval(nag);
  }
}

/** GeoIP on with the databases in service (and their build dates), or off when none is. */
function geoipStatus(databases: readonly GeoDbInfo[]): EnrichmentStatus {
  if (databases.length === 0) return { name: 'geoip', on: false, detail: 'no database (set GEOIP_DB, GEOIP_CITY_DB or GEOIP_ASN_DB)' };
  const built = (epoch: number): string => new Date(epoch * 1000).toISOString().slice(0, 10);
  return { name: 'geoip', on: true, detail: databases.map((d) => `${d.db} from ${d.databaseType} (${basename(d.path)}, built ${built(d.buildEpoch)})`).join('; ') };
}

/** Where attribution asks Docker: the configured endpoints, else the local socket when there is one. */
function dockerEndpoint(config: Config): string | undefined {
  if (config.docker.defaultEndpoint !== undefined) return config.docker.defaultEndpoint;
  if (Object.keys(config.docker.endpoints).length > 0) return undefined;
  return existsSync(DEFAULT_DOCKER_HOST.slice('unix://'.length)) ? DEFAULT_DOCKER_HOST : undefined;
}

/**
 * Wires the pipeline the way data flows (receive → parse → enrich → store → HTTP) and tears it down in the same
 * order, so nothing accepted is left behind: listeners stop first, the writer flushes (or spools) what they handed
 * over, then HTTP and Redis go.
 */
export async function startService(config: Readonly<Config>, deps: ServiceDeps): Promise<Service> {
  const { logger } = deps;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const cleanups: Array<() => Promise<unknown>> = [];
  const undo = async (): Promise<void> => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => logger.warn({ err }, 'cleanup failed'));
  };

  try {
    let redisUrl = config.redis.url;
    if (redisUrl !== undefined && parseRedisTarget(redisUrl).kind === 'cluster' && !CLUSTER_SAFE_LAYOUT) {
      throw new DockflowError(
        ErrorCode.CONFIG_INVALID,
        `REDIS_URL names a Redis Cluster (${redactUrl(redisUrl)}), and this version's store layout does not run on one: its ` +
          'write batches, retention trim and queries touch keys of many hash slots (CROSSSLOT). Use one Redis for now; see docs/scaling.md',
      );
    }
    let embedded: EmbeddedRedis | undefined;
    if (redisUrl === undefined) {
      embedded = await startEmbeddedRedis({
        dataDir: config.redis.embeddedDataDir,
        port: config.redis.embeddedPort || undefined,
        appendFsync: config.redis.embeddedAppendFsync,
        logger,
      });
      cleanups.push(() => embedded!.stop());
      redisUrl = embedded.url;
      logger.info({ dataDir: embedded.dataDir, url: redisUrl }, 'no REDIS_URL: started a local redis-server (AOF on)');
    }
    const redis: Redis = connectRedis(redisUrl, logger);
    cleanups.push(async () => {
      await redis.quit().catch(() => redis.disconnect());
    });
    // The attribution ledger and the writer's stream IDs are loaded from Redis, so start-up waits for it; once
    // running, an outage no longer stops ingest (TCP is paused, UDP spooled).
    await waitForRedis(redis, redisUrl, logger);

    const ingest = config.ingest ? await startIngest(config, { logger, registry, redis, env: deps.env ?? process.env, cleanups }) : undefined;
    const extraRoutes: FastifyPluginAsync[] = [];
    if (ingest?.ledger !== undefined) {
      const ledger = ingest.ledger;
      extraRoutes.push(async (app) => containersRoutes(app, { ledger, hostMap: { ...config.docker.endpoints } }));
    } else if (ingest === undefined) {
      // API only: the ledger the ingesters keep, read from Redis and read again every reconciliation period.
      const ledger = new Ledger({ redis, logger });
      await ledger.load();
      const reload = setInterval(() => void ledger.reload().catch((err: unknown) => logger.warn({ err }, 'ledger: reload failed')), config.docker.reconcileIntervalMs);
      reload.unref();
      cleanups.push(async () => clearInterval(reload));
      extraRoutes.push(async (app) => containersRoutes(app, { ledger, hostMap: { ...config.docker.endpoints } }));
      logger.info('API only (--no-ingest): no syslog listeners, no writer, no Docker watchers');
    }
    const attributionStatus: EnrichmentStatus = ingest?.attributionStatus ?? { name: 'attribution', on: false, detail: 'API only (--no-ingest): no Docker watchers' };
    const geoStatus = ingest?.geoStatus ?? ((): EnrichmentStatus => ({ name: 'geoip', on: false, detail: 'API only (--no-ingest): nothing enriched here' }));
    if (config.detect.enabled) {
      extraRoutes.push(alertRoutes({ redis, key: storeKeys(config.store.keyPrefix).alerts, logger, maxClients: config.detect.liveMaxClients }));
    }

    const startedAt = new Date().toISOString();
    const lossReport = async (): Promise<LossReport> => {
      const period = { since: startedAt, until: new Date().toISOString() };
      if (ingest === undefined) return { period, dropped: {}, spooled: 0, pending: 0 };
      const { writer, receivers, pipeline } = ingest;
      const w = writer.stats();
      const r = receivers.metrics;
      return {
        period,
        dropped: { ...pipeline.skipped, ...r.droppedByReason(), ...w.dropped },
        udp_kernel_drops: await r.udpKernelDrops(),
        spooled: w.spooled,
        pending: w.spoolBytes > 0 ? w.spooled - w.replayed : 0,
      };
    };
    const limits = apiLimits(config);
    const apiCounters = newCounters();
    registerApiMetrics(registry, apiCounters);
    let apiLoad = (): { clients: number; queries: number } => ({ clients: 0, queries: 0 });
    const health = {
      checks: (): Record<string, { ok: boolean; detail?: string }> => {
        if (ingest === undefined) return { redis: { ok: redis.status === 'ready', detail: redactUrl(redisUrl) }, api: { ok: true, detail: describeCounters(apiCounters, apiLoad(), limits) } };
        const { writer, receivers, lease } = ingest;
        const w = writer.stats();
        return {
          redis: { ok: w.redisUp, detail: redactUrl(redisUrl) },
          queue: { ok: w.queued < config.store.maxQueueRecords, detail: `${w.queued} queued, ${w.inFlight} in flight` },
          receivers: {
            ok: receivers.addresses().length > 0 && receivers.udpRunning,
            detail: `${receivers.addresses().map((a) => `${a.transport}/${a.address}:${a.port}`).join(' ')}${receivers.udpRunning ? '' : '; UDP receive thread down, restarting'}; ${tcpLimitsDetail(receivers)}`,
          },
          ...(config.syslog.tlsEnabled
            ? {
                tls: {
                  ok: true,
                  detail: `${receivers.metrics.connections.tls} connections; ${receivers.metrics.tls.dropped['tls-handshake']} failed handshakes, ${receivers.metrics.tls.dropped['subject-not-allowed']} subjects refused; certificate reloads ${receivers.metrics.tlsCounts.reloads} ok, ${receivers.metrics.tlsCounts.reloadFailures} failed`,
                },
              }
            : {}),
          ...(config.syslog.relpEnabled
            ? {
                relp: {
                  ok: true,
                  detail: `${receivers.metrics.connections.relp} connections; ${receivers.metrics.relpCounts.unanswered} frames awaiting storage; ${receivers.metrics.relpCounts.acknowledged} acknowledged, ${receivers.metrics.relpCounts.refused} refused (500), ${receivers.metrics.relpCounts.duplicates} duplicates`,
                },
              }
            : {}),
          ingester: { ok: lease.held, detail: lease.held ? lease.id : `${lease.id}: lease held by another process` },
          api: { ok: true, detail: describeCounters(apiCounters, apiLoad(), limits) },
          ...(ingest?.detection !== undefined ? { detections: ingest.detection.health() } : {}),
        };
      },
    };
    // Known once the API listens (its address); the route answers only after that.
    let status = (): ServiceStatus => ({ syslog: [], api: '', docs: '', dashboard: '', enrichments: [attributionStatus, geoStatus()] });
    const app: FastifyInstance = await buildApp({
      redis,
      logger,
      keyPrefix: config.store.keyPrefix,
      retentionMs: config.store.retentionMs,
      // The page and its assets load without a token (a browser cannot send one then); the page asks for it.
      auth: { token: config.http.apiToken, required: !isLoopback(config.http.host), publicPaths: ['/healthz', ...DASHBOARD_PUBLIC_PATHS] },
      lossReport,
      limits,
      counters: apiCounters,
      load: (l) => {
        apiLoad = l;
      },
      plugins: [healthRoutes({ health, registry, token: config.http.apiToken }), statusRoutes(() => status()), dashboardRoutes({ distDir: defaultDashboardDir() }), ...extraRoutes],
    });
    await app.listen({ host: config.http.host, port: config.http.port });
    cleanups.push(() => app.close());
    const http = app.server.address();
    const httpAddress = typeof http === 'object' && http !== null ? { host: http.address, port: http.port } : { host: config.http.host, port: config.http.port };
    const base = `http://${httpAddress.host.includes(':') ? `[${httpAddress.host}]` : httpAddress.host}:${httpAddress.port}/`;
    status = () => ({
      syslog: (ingest?.receivers.addresses() ?? []).map((a) => ({ transport: a.transport, address: a.address, port: a.port })),
      api: `${base}api/`,
      docs: `${base}docs`,
      dashboard: base,
      enrichments: [attributionStatus, geoStatus()],
    });
    for (const line of statusLines(status())) logger.info(line);
    logger.info({ syslog: ingest?.receivers.addresses() ?? [], ingesterId: ingest?.lease.id, http: base, redis: redactUrl(redisUrl) }, 'dockflow serving');

    return {
      syslogAddresses: () => ingest?.receivers.addresses() ?? [],
      httpAddress: () => httpAddress,
      redisUrl,
      close: async () => {
        const deadline = Date.now() + config.shutdownTimeoutMs;
        const left = (): number => Math.max(0, deadline - Date.now());
        // Listeners first, so nothing new arrives while the writer drains.
        await ingest?.receivers.close();
        // The writer spools to disk whatever it cannot write to Redis in time; keep a share of the deadline for the rest.
        await ingest?.writer.close(Math.max(0, left() - 500));
        // Open alert groups are closed and the alerts and baselines written while Redis is still there.
        await ingest?.detection?.close();
        const stats = ingest?.writer.stats();
        await app.close();
        await ingest?.enricher.close?.();
        // Only once nothing writes as this ingester any more.
        await ingest?.lease.release();
        await redis.quit().catch(() => redis.disconnect());
        await embedded?.stop();
        const clean = left() > 0;
        logger.info({ accepted: ingest?.pipeline.parsed.records ?? 0, stored: stats?.stored ?? 0, spooled: stats?.spooled ?? 0, dropped: stats?.dropped ?? {}, clean }, 'stopped');
        return clean;
      },
    };
  } catch (err) {
    await undo();
    throw err;
  }
}

interface Ingest {
  lease: IngesterLease;
  writer: StreamWriter;
  pipeline: IngestPipeline;
  receivers: Receivers;
  enricher: Enricher;
  ledger: Ledger | undefined;
  attributionStatus: EnrichmentStatus;
  geoStatus: () => EnrichmentStatus;
  detection: Detection | undefined;
}

/** The ingest side (identity lease, writer, enrichers, pipeline, listeners), each pushing its cleanup as it starts. */
async function startIngest(
  config: Readonly<Config>,
  deps: { logger: Logger; registry: Registry; redis: Redis; env: NodeJS.ProcessEnv; cleanups: Array<() => Promise<unknown>> },
): Promise<Ingest> {
  const { logger, registry, redis, cleanups } = deps;
  const lease = await acquireIngesterLease({
    redis,
    logger,
    key: storeKeys(config.store.keyPrefix).ingesterLease(config.store.ingesterId),
    id: config.store.ingesterId,
    ttlMs: config.store.ingesterLeaseMs,
  });
  cleanups.push(() => lease.release());

  const indexer = new FlowIndexer({ keyPrefix: config.store.keyPrefix });
  const writer = new StreamWriter(
    redis,
    {
      keyPrefix: config.store.keyPrefix,
      singleStream: config.store.singleStream,
      maxQueueRecords: config.store.maxQueueRecords,
      batchMaxRecords: config.store.batchMaxRecords,
      flushIntervalMs: config.store.flushIntervalMs,
      replyTimeoutMs: config.store.replyTimeoutMs,
      writerId: config.store.ingesterId,
      keepOriginal: config.store.keepOriginal,
      maxRecords: config.store.maxRecords,
      retentionMs: config.store.retentionMs,
      spoolDir: config.store.spoolDir,
      spoolMaxBytes: config.store.spoolMaxBytes,
    },
    { logger, registry, indexer: config.store.singleStream === undefined ? indexer : undefined },
  );
  await redis.set(storeKeys(config.store.keyPrefix).schema, String(SCHEMA_VERSION));
  await writer.start();
  cleanups.push(() => writer.close(0));

  let ledger: Ledger | undefined;
  const enrichers: Enricher[] = [];
  let attributionStatus: EnrichmentStatus;
  let geoStatus = (): EnrichmentStatus => ({ name: 'geoip', on: false, detail: 'turned off (GEOIP=false)' });
  const endpoint = dockerEndpoint(config);
  if (config.docker.enabled && (endpoint !== undefined || Object.keys(config.docker.endpoints).length > 0)) {
    const attribution = await startAttribution({
      redis,
      logger,
      registry,
      ...(endpoint !== undefined ? { defaultEndpoint: endpoint } : {}),
      endpoints: { ...config.docker.endpoints },
      reconcileIntervalMs: config.docker.reconcileIntervalMs,
      env: deps.env,
    });
    enrichers.push(attribution.enricher);
    cleanups.push(async () => attribution.enricher.close?.());
    ledger = attribution.ledger;
    const targets = [...new Set([...(endpoint !== undefined ? [endpoint] : []), ...Object.values(config.docker.endpoints)])];
    attributionStatus = { name: 'attribution', on: true, detail: `containers named through the Docker API at ${targets.join(', ')}` };
  } else {
    attributionStatus = {
      name: 'attribution',
      on: false,
      detail: config.docker.enabled
        ? `no Docker endpoint (no ${DEFAULT_DOCKER_HOST.slice('unix://'.length)}; set DOCKER_HOST or DOCKFLOW_DOCKER_ENDPOINTS)`
        : 'turned off (DOCKFLOW_DOCKER=false)',
    };
  }
  if (config.geo.enabled) {
    const geo = await openGeoEnricher(
      {
        ...(config.geo.cityDbPath !== undefined ? { cityDbPath: config.geo.cityDbPath } : {}),
        ...(config.geo.countryDbPath !== undefined ? { countryDbPath: config.geo.countryDbPath } : {}),
        ...(config.geo.asnDbPath !== undefined ? { asnDbPath: config.geo.asnDbPath } : {}),
        embeddedDefault: config.geo.embeddedDefault,
        ...(config.geo.embeddedAsn ? { embeddedAsn: { cacheDir: config.geo.asnCacheDir } } : {}),
        cacheEntries: config.geo.cacheEntries,
        watch: config.geo.watch,
      },
      { logger, registry },
    );
    enrichers.push(geo);
    cleanups.push(async () => geo.close());
    geoStatus = () => geoipStatus(geo.databases);
  }
  const enricher = chainEnrichers(enrichers);

  let detection: Detection | undefined;
  if (config.detect.enabled) {
    const d = config.detect;
    const keys = storeKeys(config.store.keyPrefix);
    detection = await startDetection(
      {
        paths: rulePaths({ shipped: d.shippedRules, rules: d.rules }),
        groupWindowMs: d.groupWindowMs,
        maxGroups: d.maxGroups,
        maxStateKeys: d.maxStateKeys,
        alertsKey: keys.alerts,
        baselinesKey: keys.detectBaselines,
        alertsMaxLen: d.alertsMaxLen,
        alertsMaxQueue: d.alertsMaxQueue,
        baselineFlushMs: d.baselineFlushMs,
        reloadDebounceMs: d.reloadDebounceMs,
        ...(d.webhookUrl !== undefined
          ? { webhook: { url: d.webhookUrl, maxQueue: d.webhookMaxQueue, maxAttempts: d.webhookMaxAttempts, backoffMs: d.webhookBackoffMs, timeoutMs: d.webhookTimeoutMs } }
          : {}),
      },
      { redis, logger, registry },
    );
    const det = detection;
    cleanups.push(() => det.close());
  }

  const pipeline = new IngestPipeline(
    // No Community ID at ingest: records are stored as their message plus what it does not determine, and the ID
    // is computed again whenever a record is read; the writer and the indexer never read it (a SHA-1 per record).
    createLineOptions({ bridges: config.parse.bridges, timeZone: config.parse.timeZone, maxLineBytes: config.syslog.maxMessageBytes, communityId: false }),
    enricher,
    writer,
    registry,
    detection,
  );
  const listen = (enabled: boolean, port: number) => (enabled ? [{ host: config.syslog.host, port }] : []);
  const receivers: Receivers = await startReceivers(
    {
      udp: listen(config.syslog.udpEnabled, config.syslog.udpPort),
      tcp: listen(config.syslog.tcpEnabled, config.syslog.tcpPort),
      maxMessageBytes: config.syslog.maxMessageBytes,
      maxConnections: config.syslog.maxConnections,
      maxConnectionsPerSource: config.syslog.maxConnectionsPerSource,
      idleTimeoutMs: config.syslog.idleTimeoutMs,
      frameTimeoutMs: config.syslog.frameTimeoutMs,
      receiveBufferBytes: config.syslog.udpReceiveBufferBytes,
      udpReader: config.syslog.udpReader,
      udpBacklogMemoryBytes: config.syslog.udpBacklogMemoryBytes,
      udpBacklogDir: config.syslog.udpBacklogDiskBytes > 0 ? join(config.store.spoolDir, 'udp') : undefined,
      udpBacklogDiskBytes: config.syslog.udpBacklogDiskBytes,
      allow: config.syslog.allowedSenders,
      tls: config.syslog.tlsEnabled
        ? {
            listen: [{ host: config.syslog.host, port: config.syslog.tlsPort }],
            credentials: {
              certFile: config.syslog.tlsCertFile as string,
              keyFile: config.syslog.tlsKeyFile as string,
              caFile: config.syslog.tlsCaFile,
              allowedSubjects: config.syslog.tlsAllowedSubjects,
              reloadIntervalMs: config.syslog.tlsReloadIntervalMs,
              handshakeTimeoutMs: config.syslog.tlsHandshakeTimeoutMs,
            },
          }
        : undefined,
      relp: config.syslog.relpEnabled
        ? {
            listen: [{ host: config.syslog.host, port: config.syslog.relpPort }],
            windowFrames: config.syslog.relpWindowFrames,
            recentHashes: config.syslog.relpRecentHashes,
            // What a sender may resend after a crash is at most its window per connection: the streams' tails hold it.
            seedHashes: () =>
              recentRecordHashes(redis, {
                keyPrefix: config.store.keyPrefix,
                singleStream: config.store.singleStream,
                perStream: Math.min(config.syslog.relpRecentHashes, config.syslog.relpWindowFrames * 16),
              }),
            // Half the shutdown deadline: the writer needs the rest to store or spool what the answers wait for.
            closeWaitMs: Math.floor(config.shutdownTimeoutMs / 2),
          }
        : undefined,
    },
    pipeline,
    { logger, registry },
  );
  cleanups.push(() => receivers.close());

  return { lease, writer, pipeline, receivers, enricher, ledger, attributionStatus, geoStatus, detection };
}
