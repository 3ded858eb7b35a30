import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { buildApp, type LossReport } from './api/app.js';
import { containersRoutes } from './api/containers.js';
import { DASHBOARD_PUBLIC_PATHS, dashboardRoutes, defaultDashboardDir } from './api/dashboard.js';
import { healthRoutes } from './api/health.js';
import { isLoopback, type Config } from './config/index.js';
import { startAttribution } from './enrich/attribution.js';
import { DEFAULT_DOCKER_HOST } from './enrich/docker/client.js';
import { chainEnrichers, type Enricher } from './enrich/enricher.js';
import { openGeoEnricher } from './enrich/geo.js';
import { createLineOptions } from './parse/line.js';
import { IngestPipeline } from './pipeline.js';
import type { BoundAddress } from './receive/listen.js';
import { startReceivers, type Receivers } from './receive/receivers.js';
import { connectRedis, redactUrl } from './store/connect.js';
import { FlowIndexer } from './store/indexer.js';
import { startEmbeddedRedis, type EmbeddedRedis } from './store/redis-server.js';
import { SCHEMA_VERSION, storeKeys } from './store/keys.js';
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

async function waitForRedis(redis: Redis, url: string, logger: Logger): Promise<void> {
  if (redis.status === 'ready') return;
  const nag = setInterval(() => logger.warn({ redis: redactUrl(url) }, 'waiting for Redis before starting'), 5000);
  try {
    await once(redis, 'ready');
  } finally {
    clearInterval(nag);
  }
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
        writerId: config.store.writerId,
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

    const enrichers: Enricher[] = [];
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
      logger.info({ endpoints: attribution.watchers.length }, 'container attribution on');
    } else {
      logger.info('container attribution off: no Docker endpoint (set DOCKER_HOST or DOCKFLOW_DOCKER_ENDPOINTS)');
    }
    if (config.geo.enabled) {
      const geo = await openGeoEnricher(
        {
          ...(config.geo.cityDbPath !== undefined ? { cityDbPath: config.geo.cityDbPath } : {}),
          ...(config.geo.countryDbPath !== undefined ? { countryDbPath: config.geo.countryDbPath } : {}),
          ...(config.geo.asnDbPath !== undefined ? { asnDbPath: config.geo.asnDbPath } : {}),
          embeddedDefault: config.geo.embeddedDefault,
          cacheEntries: config.geo.cacheEntries,
          watch: config.geo.watch,
        },
        { logger, registry },
      );
      enrichers.push(geo);
      cleanups.push(async () => geo.close());
    }
    const enricher = chainEnrichers(enrichers);

    const pipeline = new IngestPipeline(
      // No Community ID at ingest: records are stored as their message plus what it does not determine, and the ID
      // is computed again whenever a record is read; the writer and the indexer never read it (a SHA-1 per record).
      createLineOptions({ bridges: config.parse.bridges, timeZone: config.parse.timeZone, maxLineBytes: config.syslog.maxMessageBytes, communityId: false }),
      enricher,
      writer,
      registry,
    );
    const listen = (enabled: boolean, port: number) => (enabled ? [{ host: config.syslog.host, port }] : []);
    const receivers: Receivers = await startReceivers(
      {
        udp: listen(config.syslog.udpEnabled, config.syslog.udpPort),
        tcp: listen(config.syslog.tcpEnabled, config.syslog.tcpPort),
        maxMessageBytes: config.syslog.maxMessageBytes,
        maxConnections: config.syslog.maxConnections,
        idleTimeoutMs: config.syslog.idleTimeoutMs,
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
    const health = {
      checks: () => {
        const w = writer.stats();
        return {
          redis: { ok: w.redisUp, detail: redactUrl(redisUrl) },
          queue: { ok: w.queued < config.store.maxQueueRecords, detail: `${w.queued} queued, ${w.inFlight} in flight` },
          receivers: {
            ok: receivers.addresses().length > 0 && receivers.udpRunning,
            detail: `${receivers.addresses().map((a) => `${a.transport}/${a.address}:${a.port}`).join(' ')}${receivers.udpRunning ? '' : '; UDP receive thread down, restarting'}`,
          },
        };
      },
    };
    const app: FastifyInstance = await buildApp({
      redis,
      logger,
      keyPrefix: config.store.keyPrefix,
      retentionMs: config.store.retentionMs,
      // The page and its assets load without a token (a browser cannot send one then); the page asks for it.
      auth: { token: config.http.apiToken, required: !isLoopback(config.http.host), publicPaths: ['/healthz', ...DASHBOARD_PUBLIC_PATHS] },
      lossReport,
      plugins: [healthRoutes({ health, registry }), dashboardRoutes({ distDir: defaultDashboardDir() }), ...extraRoutes],
    });
    await app.listen({ host: config.http.host, port: config.http.port });
    cleanups.push(() => app.close());
    const http = app.server.address();
    const httpAddress = typeof http === 'object' && http !== null ? { host: http.address, port: http.port } : { host: config.http.host, port: config.http.port };
    logger.info(
      { syslog: receivers.addresses(), http: `http://${httpAddress.host}:${httpAddress.port}`, redis: redactUrl(redisUrl) },
      'dockflow serving',
    );

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
