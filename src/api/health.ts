import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { isLoopbackIp } from '../net/ip.js';
import { tokenMatches } from './auth.js';

export interface HealthSource {
  /** Named checks; the service is healthy when every one is `ok`. */
  checks(): Record<string, { ok: boolean; detail?: string }>;
}

/**
 * Who may read the checks' detail (the Redis URL, the listeners, counters): with a token configured, only a request
 * bearing it; with none, only a loopback peer. Everyone else gets the status alone.
 */
export function mayReadDetail(req: FastifyRequest, token: string | undefined): boolean {
  if (token !== undefined && token !== '') {
    const header = req.headers.authorization;
    return header !== undefined && /^Bearer /i.test(header) && tokenMatches(header.slice(7).trim(), token);
  }
  const peer = req.socket.remoteAddress;
  return peer !== undefined && isLoopbackIp(peer);
}

/** `/healthz` for orchestrators (503 when a check fails) and `/metrics` in Prometheus' text format. */
export function healthRoutes(opts: { health: HealthSource; registry: Registry; token?: string | undefined }): FastifyPluginAsync {
  return async (app) => {
    app.get('/healthz', { schema: { hide: true } as Record<string, unknown> }, async (req, reply) => {
      const checks = opts.health.checks();
      const ok = Object.values(checks).every((c) => c.ok);
      const status = ok ? 'ok' : 'degraded';
      return reply.code(ok ? 200 : 503).send(mayReadDetail(req, opts.token) ? { status, checks } : { status });
    });
    app.get('/metrics', { schema: { hide: true } as Record<string, unknown> }, async (_req, reply) => {
      const body = await opts.registry.metrics();
      return reply.type(opts.registry.contentType).send(body);
    });
  };
}
