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
import { connectRedis, redactUrl } from './store/connect.js';
import { FlowIndexer } from './store/indexer.js';
import { startEmbeddedRedis, type EmbeddedRedis } from './store/redis-server.js';
import { storeKeys } from './store/keys.js';
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
        maxLenPerStream: config.store.maxLenPerStream,
        retentionMs: config.store.retentionMs,
        spoolDir: config.store.spoolDir,
        spoolMaxBytes: config.store.spoolMaxBytes,
      },
      { logger, registry, indexer: config.store.singleStream === undefined ? indexer : undefined },
    );
    await writer.start();
    cleanups.push(() => writer.close(0));

    const enrichers: Enricher[] = [];
    let attributionStatus: EnrichmentStatus;
    let geoStatus = (): EnrichmentStatus => ({ name: 'geoip', on: false, detail: 'turned off (GEOIP=false)' });
    const extraRoutes: FastifyPluginAsync[] = [];
    const endpoint = dockerEndpoint(config);
    if (config.docker.enabled && (endpoint !== undefined || Object.keys(config.docker.endpoints).length > 0)) {
      const attribution = await startAttribution({
        redis,
        logger,
        registry,
        ...(endpoint !== undefined ? { defaultEndpoint: endpoint } : {}),
        endpoints: { ...config.docker.endpoints },
        reconcileIntervalMs: config.docker.reconcileIntervalMs,
        env: deps.env ?? process.env,
      });
      enrichers.push(attribution.enricher);
      cleanups.push(async () => attribution.enricher.close?.());
      extraRoutes.push(async (app) => containersRoutes(app, { ledger: attribution.ledger, hostMap: { ...config.docker.endpoints } }));
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
      extraRoutes.push(alertRoutes({ redis, key: keys.alerts, logger, maxClients: d.liveMaxClients }));
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
      },
      pipeline,
      { logger, registry },
    );
    cleanups.push(() => receivers.close());

    const startedAt = new Date().toISOString();
    const lossReport = async (): Promise<LossReport> => {
      const w = writer.stats();
      const r = receivers.metrics;
      return {
        period: { since: startedAt, until: new Date().toISOString() },
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
      checks: () => {
        const w = writer.stats();
        return {
          redis: { ok: w.redisUp, detail: redactUrl(redisUrl) },
          queue: { ok: w.queued < config.store.maxQueueRecords, detail: `${w.queued} queued, ${w.inFlight} in flight` },
          receivers: {
            ok: receivers.addresses().length > 0 && receivers.udpRunning,
            detail: `${receivers.addresses().map((a) => `${a.transport}/${a.address}:${a.port}`).join(' ')}${receivers.udpRunning ? '' : '; UDP receive thread down, restarting'}; ${tcpLimitsDetail(receivers)}`,
          },
          api: { ok: true, detail: describeCounters(apiCounters, apiLoad(), limits) },
          ...(detection !== undefined ? { detections: detection.health() } : {}),
        };
      },
    };
    // Known once the API listens (its address); the route answers only after that.
    let status = (): ServiceStatus => ({ syslog: [], api: '', docs: '', dashboard: '', enrichments: [attributionStatus, geoStatus()] });
    const app: FastifyInstance = await buildApp({
      redis,
      logger,
      keyPrefix: config.store.keyPrefix,
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
      syslog: receivers.addresses().map((a) => ({ transport: a.transport, address: a.address, port: a.port })),
      api: `${base}api/`,
      docs: `${base}docs`,
      dashboard: base,
      enrichments: [attributionStatus, geoStatus()],
    });
    for (const line of statusLines(status())) logger.info(line);
    logger.info({ syslog: receivers.addresses(), http: base, redis: redactUrl(redisUrl) }, 'dockflow serving');

    return {
      syslogAddresses: () => receivers.addresses(),
      httpAddress: () => httpAddress,
      redisUrl,
      close: async () => {
        const deadline = Date.now() + config.shutdownTimeoutMs;
        const left = (): number => Math.max(0, deadline - Date.now());
        // Listeners first, so nothing new arrives while the writer drains.
        await receivers.close();
        // The writer spools to disk whatever it cannot write to Redis in time; keep a share of the deadline for the rest.
        await writer.close(Math.max(0, left() - 500));
        // Open alert groups are closed and the alerts and baselines written while Redis is still there.
        await detection?.close();
        const stats = writer.stats();
        await app.close();
        await enricher.close?.();
        await redis.quit().catch(() => redis.disconnect());
        await embedded?.stop();
        const clean = left() > 0;
        logger.info({ accepted: pipeline.parsed.records, stored: stats.stored, spooled: stats.spooled, dropped: stats.dropped, clean }, 'stopped');
        return clean;
      },
    };
  } catch (err) {
    await undo();
    throw err;
  }
}
