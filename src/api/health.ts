import type { FastifyPluginAsync } from 'fastify';
import type { Registry } from 'prom-client';

export interface HealthSource {
  /** Named checks; the service is healthy when every one is `ok`. */
  checks(): Record<string, { ok: boolean; detail?: string }>;
}

/** `/healthz` for orchestrators (503 when a check fails) and `/metrics` in Prometheus' text format. */
export function healthRoutes(opts: { health: HealthSource; registry: Registry }): FastifyPluginAsync {
  return async (app) => {
    app.get('/healthz', { schema: { hide: true } as Record<string, unknown> }, async (_req, reply) => {
      const checks = opts.health.checks();
      const ok = Object.values(checks).every((c) => c.ok);
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'degraded', checks });
    });
    app.get('/metrics', { schema: { hide: true } as Record<string, unknown> }, async (_req, reply) => {
      const body = await opts.registry.metrics();
      return reply.type(opts.registry.contentType).send(body);
    });
  };
}
