import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { inventory, topN } from '../store/aggregate.js';
import { TOP_DIMENSIONS, type TopDimension } from '../store/indexer.js';
import { resolveContainers } from '../store/query.js';
import type { Direction } from '../record.js';
import type { ApiContext } from './app.js';
import { MAX_LIMIT, badRequest, clampRange, filterProperties, HttpError, parseTime, toFlowFilter } from './filters.js';
import { errorSchema, lossReportSchema, rangeSchema } from './openapi.js';

interface TopQuery {
  by: TopDimension;
  direction?: string;
  since?: string;
  until?: string;
  limit?: number;
}

interface InventoryQuery {
  new_since?: string;
  limit?: number;
}

const DEFAULT_WINDOW_MS = 3_600_000;

export function statsRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/api/stats/top',
      {
        schema: {
          tags: ['stats'],
          summary: 'Top destinations, ports, countries, ASNs or containers by record count',
          description:
            'Counted from per-partition counters: the range is widened to whole 10-minute buckets (`covered`); `partial` when the range held more partitions than one answer reads (the newest were counted). `dst` is the destination address, `port` is `<transport>/<destination port>`, `country` and `asn` are those of the remote side, `container` the attributed container. Default range: the last hour.',
          querystring: {
            type: 'object',
            additionalProperties: false,
            required: ['by'],
            properties: {
              by: { type: 'string', enum: [...TOP_DIMENSIONS] },
              direction: filterProperties.direction,
              since: filterProperties.since,
              until: filterProperties.until,
              limit: { type: 'integer', minimum: 1, maximum: 1000, default: 10 },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: {
                by: { type: 'string' },
                range: rangeSchema,
                covered: { ...rangeSchema, type: ['object', 'null'] },
                distinct: { type: 'integer' },
                exact: { type: 'boolean', description: 'False when the read budget ran out before the ranking settled' },
                partial: { type: 'boolean', description: 'True when the answer covers less than asked (see partial_reasons)' },
                partial_reasons: { type: 'array', items: { type: 'string' } },
                top: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: { value: { type: 'string' }, count: { type: 'integer' }, name: { type: 'string' }, service: { type: 'string' } },
                  },
                },
                loss: lossReportSchema,
              },
            },
            400: errorSchema,
            401: errorSchema,
          },
        },
      },
      async (req: FastifyRequest<{ Querystring: TopQuery }>) => {
        const { by, limit = 10, ...fq } = req.query;
        const now = ctx.now();
        const f = toFlowFilter(fq, now, { sinceMs: now - DEFAULT_WINDOW_MS });
        const range = { since: new Date(f.sinceMs!).toISOString(), until: new Date(f.untilMs ?? now).toISOString() };
        // One counter key per bucket and direction: the range is bounded before any key is named.
        const c = clampRange(f.sinceMs!, f.untilMs ?? now, now, { retentionMs: ctx.limits.retentionMs, maxSpanMs: ctx.limits.topMaxRangeMs });
        const loss = await ctx.lossReport();
        if (c.sinceMs > c.untilMs) {
          return { by, range, covered: null, distinct: 0, exact: true, partial: true, partial_reasons: c.reasons, top: [], loss };
        }
        const res = await ctx.gate.run(() =>
          topN(ctx.store, {
            by,
            ...(f.directions ? { directions: f.directions as Direction[] } : {}),
            sinceMs: c.sinceMs,
            untilMs: c.untilMs,
            limit,
            maxReadEntries: ctx.limits.topMaxReadEntries,
          }),
        );
        const reasons = [...c.reasons];
        if (res.partial) reasons.push(`the range holds more partitions than one answer reads: only the newest were counted (see covered)`);
        if (!res.exact) reasons.push(`read budget (${ctx.limits.topMaxReadEntries} counter entries) spent before the ranking settled: the counts are exact, values may be missing; narrow the range`);
        return {
          by,
          range,
          covered: { since: new Date(res.coveredSinceMs).toISOString(), until: new Date(res.coveredUntilMs).toISOString() },
          distinct: res.distinct,
          exact: res.exact,
          partial: reasons.length > 0,
          partial_reasons: reasons,
          top: res.entries,
          loss,
        };
      },
    );

    app.get(
      '/api/containers/:key/inventory',
      {
        schema: {
          tags: ['stats'],
          summary: "A container's destination inventory",
          description:
            'Every remote address and service port the container exchanged packets with, with first and last seen, newest first; `new_since` keeps those first seen at or after it. `key` is a container name or an ID prefix; a name reused by several containers answers for each.',
          params: {
            type: 'object',
            additionalProperties: false,
            properties: { key: filterProperties.container },
            required: ['key'],
          },
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              new_since: { ...filterProperties.since, description: `Only entries first seen since then. ${filterProperties.since.description}` },
              limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT, default: 1000 },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: {
                new_since: { type: ['string', 'null'] },
                containers: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: {
                      id: { type: 'string' },
                      name: { type: 'string' },
                      service: { type: 'string' },
                      total: { type: 'integer' },
                      partial: { type: 'boolean' },
                      destinations: {
                        type: 'array',
                        items: {
                          type: 'object',
                          properties: {
                            direction: { type: 'string' },
                            ip: { type: 'string' },
                            transport: { type: 'string' },
                            port: { type: 'integer' },
                            first_seen: { type: 'string' },
                            last_seen: { type: 'string' },
                          },
                        },
                      },
                    },
                  },
                },
                range: rangeSchema,
                loss: lossReportSchema,
              },
            },
            400: errorSchema,
            401: errorSchema,
            404: errorSchema,
          },
        },
      },
      async (req: FastifyRequest<{ Params: { key: string }; Querystring: InventoryQuery }>) => {
        const now = ctx.now();
        const { limit = 1000 } = req.query;
        let newSince: number | undefined;
        if (req.query.new_since !== undefined) {
          newSince = parseTime(req.query.new_since, now);
          if (newSince === undefined || Math.abs(newSince) > 8.64e15) throw badRequest(`new_since: ${JSON.stringify(req.query.new_since)} is neither ISO 8601 nor a relative time like 15m`);
        }
        return ctx.gate.run(async () => {
        const all = (await ctx.store.registries()).list;
        const ids = new Set(resolveContainers(all, { container: req.params.key }));
        const matched = all.filter((c) => ids.has(c.id));
        if (matched.length === 0) throw new HttpError(404, `no container named or with an ID starting ${JSON.stringify(req.params.key)} has been seen`);
        const containers = [];
        for (const c of matched) {
          const inv = await inventory(ctx.store, c.id, { limit, ...(newSince !== undefined ? { newSinceMs: newSince } : {}) });
          containers.push({
            ...c,
            total: inv.total,
            partial: inv.partial,
            destinations: inv.entries.map((e) => ({
              direction: e.direction,
              ip: e.ip,
              transport: e.transport,
              port: e.port,
              first_seen: new Date(e.firstSeenMs).toISOString(),
              last_seen: new Date(e.lastSeenMs).toISOString(),
            })),
          });
        }
        const since = newSince !== undefined ? new Date(newSince).toISOString() : null;
        return { new_since: since, containers, range: { since, until: new Date(now).toISOString() }, loss: await ctx.lossReport() };
        });
      },
    );
  };
}
