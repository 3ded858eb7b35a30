import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { validateKeyPrefix } from '../store/indexer.js';
import { storeKeys, type StoreKeys } from '../store/keys.js';
import { StoreReader } from '../store/query.js';
import { bearerAuth, type AuthOptions } from './auth.js';
import { connectionRoutes } from './connections.js';
import { flowRoutes, LiveHub } from './flows.js';
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
}

/** Shared by the route plugins. */
export interface ApiContext {
  redis: Redis;
  keys: StoreKeys;
  store: StoreReader;
  logger: Logger;
  lossReport: () => Promise<LossReport>;
  now: () => number;
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
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Unknown query parameters must be rejected, not silently dropped (fastify's default removes them).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err.validation) return reply.code(400).send({ error: 'bad_request', message: describeValidation(err) });
    const status = err.statusCode ?? 500;
    if (status < 500) return reply.code(status).send({ error: status === 401 ? 'unauthorized' : 'bad_request', message: err.message });
    if (isStorageDown(err)) {
      req.log.warn({ err }, 'storage unavailable');
      return reply.code(503).send({ error: 'unavailable', message: 'storage (Redis) is unavailable' });
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: 'internal', message: 'internal error' });
  });

  if (auth !== undefined) app.addHook('onRequest', auth);
  await registerOpenApi(app);

  const ctx: ApiContext = {
    redis: deps.redis,
    keys,
    store: new StoreReader(deps.redis, keys, { retentionMs: deps.retentionMs ?? 30 * 24 * 3600_000 }),
    logger: deps.logger,
    lossReport: async () => deps.lossReport(),
    now: () => Date.now(),
  };
  const hub = new LiveHub({ store: ctx.store, logger: deps.logger });
  // Live responses are ended before the server closes, or it would wait on them forever.
  app.addHook('preClose', async () => hub.close());

  await app.register(flowRoutes(ctx, hub, { heartbeatMs: deps.liveHeartbeatMs ?? 15_000 }));
  await app.register(connectionRoutes(ctx));
  await app.register(statsRoutes(ctx));
  for (const plugin of deps.plugins ?? []) await app.register(plugin);
  return app;
}
