import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { connections, type Connection } from '../store/aggregate.js';
import type { ApiContext } from './app.js';
import { decodeCursor, encodeCursor, queryDigest, type Position } from '../store/query.js';
import { MAX_LIMIT, badRequest, clampRange, filterProperties, rangeOf, toFlowFilter, type FilterQuery } from './filters.js';
import { errorSchema, lossReportSchema, rangeSchema } from './openapi.js';

interface ConnectionsQuery extends FilterQuery {
  idle_gap?: number;
  limit?: number;
  cursor?: string;
}

const DEFAULT_WINDOW_MS = 3_600_000;

const endpoint = { type: 'object', properties: { ip: { type: 'string' }, port: { type: 'integer' } } } as const;

export function connectionJson(c: Connection): Record<string, unknown> {
  return {
    first_seen: new Date(c.firstSeenMs).toISOString(),
    last_seen: new Date(c.lastSeenMs).toISOString(),
    direction: c.direction,
    transport: c.transport,
    source: c.source,
    destination: c.destination,
    packets: c.packets,
    bytes: c.bytes,
    tcp_flags: c.tcpFlags,
    log_prefix: c.logPrefix,
    container: c.container,
  };
}

export function connectionRoutes(ctx: ApiContext): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/api/connections',
      {
        schema: {
          tags: ['connections'],
          summary: 'Per-packet records folded into connections',
          description:
            'Records grouped by 5-tuple (both directions of a conversation together) and LOG rule prefix; a tuple silent for longer than `idle_gap` seconds, or a new SYN after FIN/RST, starts a new connection. Direction and src/dst filters apply to the connection (its initiator), the others to its packets. Default range: the last hour.',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              ...filterProperties,
              idle_gap: { type: 'integer', minimum: 1, maximum: 86_400, default: 120, description: 'Seconds of silence that end a connection' },
              limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT, default: 100 },
              cursor: { type: 'string', maxLength: 256, description: 'Opaque position from a previous page' },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: {
                range: rangeSchema,
                count: { type: 'integer' },
                connections: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: {
                      first_seen: { type: 'string' },
                      last_seen: { type: 'string' },
                      direction: { type: 'string' },
                      transport: { type: 'string' },
                      source: endpoint,
                      destination: endpoint,
                      packets: { type: 'integer' },
                      bytes: { type: 'integer' },
                      tcp_flags: { type: 'array', items: { type: 'string' } },
                      log_prefix: { type: 'string' },
                      container: { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' } } },
                    },
                  },
                },
                packets: { type: 'integer', description: 'Packet records aggregated' },
                truncated: { type: 'boolean', description: 'Same as partial (kept for older clients)' },
                partial: { type: 'boolean', description: 'The page covers less than asked: see partial_reasons, go on with next_cursor' },
                partial_reasons: { type: 'array', items: { type: 'string' } },
                next_cursor: { type: ['string', 'null'], description: 'Pass as `cursor` for the packets after this page; null at the end' },
                loss: lossReportSchema,
              },
            },
            400: errorSchema,
            401: errorSchema,
          },
        },
      },
      async (req: FastifyRequest<{ Querystring: ConnectionsQuery }>) => {
        const { idle_gap: gap = 120, limit = 100, cursor: cursorText, ...fq } = req.query;
        const digest = queryDigest({ ...fq, idle_gap: gap });
        const now = ctx.now();
        let f = toFlowFilter(fq, now, { sinceMs: now - DEFAULT_WINDOW_MS });
        const reasons: string[] = [];
        let after: Position | undefined;
        if (cursorText !== undefined) {
          const c = decodeCursor(cursorText);
          if (c === undefined) throw badRequest('cursor is not valid');
          if (c.query !== digest || c.order !== 'asc') throw badRequest('cursor belongs to a different query');
          f = { ...f, ...(c.sinceMs !== undefined ? { sinceMs: c.sinceMs } : {}), ...(c.untilMs !== undefined ? { untilMs: c.untilMs } : {}) };
          after = c.position;
        } else {
          const cl = clampRange(f.sinceMs!, f.untilMs ?? now, now, { retentionMs: ctx.limits.retentionMs });
          reasons.push(...cl.reasons);
          f = { ...f, sinceMs: cl.sinceMs, untilMs: Math.max(cl.sinceMs, cl.untilMs) };
        }
        f = { ...f, ...ctx.store.clamp(f.sinceMs, f.untilMs) };
        const budget = ctx.limits.connectionsScanBudget;
        const res = await ctx.gate.run(() => connections(ctx.store, f, { idleGapMs: gap * 1000, limit, scanBudget: budget, ...(after ? { after } : {}) }));
        const next =
          res.resume !== undefined
            ? encodeCursor({ order: 'asc', position: res.resume, query: digest, ...(f.sinceMs !== undefined ? { sinceMs: f.sinceMs } : {}), ...(f.untilMs !== undefined ? { untilMs: f.untilMs } : {}) })
            : null;
        if (next !== null) {
          reasons.push(`scan budget (${budget} records) spent in partition ${res.resume!.partition}: pass next_cursor for the packets after it; a connection crossing pages appears in each with that page's packets`);
        }
        if (res.omitted > 0) reasons.push(`${res.omitted} less recently active connections beyond limit=${limit} left out`);
        return {
          range: rangeOf(f),
          count: res.connections.length,
          connections: res.connections.map(connectionJson),
          packets: res.packets,
          truncated: next !== null,
          partial: reasons.length > 0,
          partial_reasons: reasons,
          next_cursor: next,
          loss: await ctx.lossReport(),
        };
      },
    );
  };
}
