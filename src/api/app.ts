import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { validateKeyPrefix } from '../store/indexer.js';
import { storeKeys, type StoreKeys } from '../store/keys.js';
import { StoreReader } from '../store/query.js';
import { bearerAuth, type AuthOptions } from './auth.js';
import { connectionRoutes } from './connections.js';
import { exportRoutes } from './export.js';
import { flowRoutes, LiveHub } from './flows.js';
import { badRequest } from './filters.js';
import { hostCheck } from './host.js';
import { BusyError, newCounters, QueryGate, type ApiCounters, type ApiLimits } from './limits.js';
import { registerOpenApi } from './openapi.js';
import { statsRoutes } from './stats.js';

/** What the service knows of loss, attached to every answer that covers a time range. */
export interface LossReport {
  /** Time the counters cover (ISO 8601), typically since the service started; absent when unknown. */
  period?: { since: string; until: string };
  /** Lines received but not stored, by reason (parse skip reasons, oversize, write failures, …). */
  dropped: Record<string, number>;
  /** Datagrams the kernel dropped on the UDP socket, when the platform reports it. */
  udp_kernel_drops?: number;
  /** Records written to the local spool while Redis was unavailable. */
  spooled: number;
  /** Spooled records not yet replayed into Redis (not yet visible to queries). */
  pending: number;
}

export interface AppDeps {
  redis: Redis;
  logger: Logger;
  keyPrefix: string;
  auth: AuthOptions;
  lossReport: () => LossReport | Promise<LossReport>;
  /** More route plugins (containers, health, metrics), registered after the API's own, under the same auth. */
  plugins?: FastifyPluginAsync[];
  /** Keep-alive comment interval on live streams. */
  liveHeartbeatMs?: number;
  /** The store's retention: every query range is clamped to it. Default 30 days. */
  retentionMs?: number;
  limits: ApiLimits;
  /** Where the API counts what it refused (the service shows them in `/healthz` and `/metrics`). */
  counters?: ApiCounters;
  /** Handed a function reporting live followers and running queries, for `/healthz`. */
  load?: (current: () => { clients: number; queries: number }) => void;
}

/** Shared by the route plugins. */
export interface ApiContext {
  redis: Redis;
  keys: StoreKeys;
  store: StoreReader;
  logger: Logger;
  lossReport: () => Promise<LossReport>;
  now: () => number;
  limits: ApiLimits;
  counters: ApiCounters;
  /** Heavy queries run through it: a few at once, the rest refused with 503. */
  gate: QueryGate;
}

function describeValidation(err: FastifyError): string {
  const first = err.validation?.[0];
  if (first === undefined) return err.message;
  const where = err.validationContext ?? 'request';
  const params = first.params as Record<string, unknown>;
  if (first.keyword === 'additionalProperties') {
    return `unknown ${where === 'querystring' ? 'query parameter' : `${where} property`} '${String(params.additionalProperty)}'`;
  }
  const field = first.instancePath.replace(/^\//, '').replace(/\//g, '.');
  return `${field || where} ${first.message ?? 'is invalid'}`;
}

function isStorageDown(err: Error): boolean {
  return err.name === 'MaxRetriesPerRequestError' || /Connection is closed|ECONNREFUSED|Stream isn't writeable/.test(err.message);
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const keys = storeKeys(validateKeyPrefix(deps.keyPrefix));
  const auth = bearerAuth(deps.auth);
  const limits = deps.limits;
  const counters = deps.counters ?? newCounters();
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Idle and slow connections are closed, so a flood of them holds at most maxConnections descriptors, briefly.
    serverFactory: (handler) => {
      const server = createServer(
        {
          headersTimeout: limits.headersTimeoutMs,
          requestTimeout: limits.requestTimeoutMs,
          keepAliveTimeout: limits.keepAliveTimeoutMs,
          connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
        },
        (req: IncomingMessage, res: ServerResponse) => handler(req, res),
      );
      server.maxConnections = limits.maxConnections;
      // headersTimeout starts with the first byte: a connection that never sends one is closed by this.
      server.setTimeout(limits.idleTimeoutMs, (socket) => socket.destroy());
      server.on('drop', () => {
        counters.connectionsRefused += 1;
      });
      return server;
    },
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // Unknown query parameters must be rejected, not silently dropped (fastify's default removes them).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err.validation) return reply.code(400).send({ error: 'bad_request', message: describeValidation(err) });
    if (err instanceof BusyError) return reply.code(503).header('retry-after', String(err.retryAfterS)).send({ error: 'busy', message: err.message });
    const status = err.statusCode ?? 500;
    if (status === 421) return reply.code(421).send({ error: 'misdirected', message: err.message });
    if (status < 500) return reply.code(status).send({ error: status === 401 ? 'unauthorized' : 'bad_request', message: err.message });
    if (isStorageDown(err)) {
      req.log.warn({ err }, 'storage unavailable');
      return reply.code(503).send({ error: 'unavailable', message: 'storage (Redis) is unavailable' });
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: 'internal', message: 'internal error' });
  });

  // Without a token, a browser page from any site could reach this loopback API under a rebound name: check Host.
  if (deps.auth.token === undefined || deps.auth.token === '') app.addHook('onRequest', hostCheck(app, limits.allowedHosts, counters));
  if (auth !== undefined) app.addHook('onRequest', auth);
  // Ajv's coercion lets `1e309` through an integer schema as Infinity; no route wants a number that is not finite.
  app.addHook('preHandler', async (req) => {
    const q = req.query as Record<string, unknown> | undefined;
    if (q === undefined || q === null || typeof q !== 'object') return;
    for (const [name, v] of Object.entries(q)) {
      if (typeof v === 'number' && !Number.isFinite(v)) throw badRequest(`${name} must be a finite number`);
    }
  });
  await registerOpenApi(app);

  const ctx: ApiContext = {
    redis: deps.redis,
    keys,
    store: new StoreReader(deps.redis, keys, { retentionMs: deps.retentionMs ?? limits.retentionMs }),
    logger: deps.logger,
    lossReport: async () => deps.lossReport(),
    now: () => Date.now(),
    limits,
    counters,
    gate: new QueryGate(limits.maxConcurrentQueries, counters),
  };
  const hub = new LiveHub({ store: ctx.store, logger: deps.logger, maxClients: limits.maxLiveClients, maxRecordsPerSecond: limits.liveMaxRecordsPerSecond, counters });
  deps.load?.(() => ({ clients: hub.clients, queries: ctx.gate.active }));
  // Live responses are ended before the server closes, or it would wait on them forever.
  app.addHook('preClose', async () => hub.close());

  await app.register(flowRoutes(ctx, hub, { heartbeatMs: deps.liveHeartbeatMs ?? 15_000 }));
  await app.register(connectionRoutes(ctx));
  await app.register(exportRoutes(ctx, 'dockflow'));
  await app.register(statsRoutes(ctx));
  for (const plugin of deps.plugins ?? []) await app.register(plugin);
  return app;
}
