import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { connections, type Connection } from '../store/aggregate.js';
import { decodeCursor, encodeCursor, queryDigest } from '../store/query.js';
import type { ApiContext } from './app.js';
import { MAX_LIMIT, badRequest, filterProperties, rangeOf, toFlowFilter, type FilterQuery } from './filters.js';
import { errorSchema, lossReportSchema, rangeSchema } from './openapi.js';

interface ConnectionsQuery extends FilterQuery {
  idle_gap?: number;
  limit?: number;
  cursor?: string;
}

/** Per-packet records examined at most per request; beyond it the answer says `truncated` and gives a cursor. */
const SCAN_BUDGET = 4_000;
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
              cursor: { type: 'string', maxLength: 256, description: 'Opaque position from a previous answer (next_cursor)' },
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
                truncated: { type: 'boolean', description: 'The work limit per request was reached: the rest of the range is read with next_cursor' },
                next_cursor: { type: ['string', 'null'], description: 'Pass as `cursor` to go on; null at the end. A connection may continue on the next answer' },
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
        const now = ctx.now();
        let f = toFlowFilter(fq, now, { sinceMs: now - DEFAULT_WINDOW_MS });
        const digest = queryDigest({ ...fq, idle_gap: gap });
        let after;
        if (cursorText !== undefined) {
          const c = decodeCursor(cursorText);
          if (c === undefined) throw badRequest('cursor is not valid');
          if (c.query !== digest || c.order !== 'asc') throw badRequest('cursor belongs to a different query');
          f = { ...f, ...(c.sinceMs !== undefined ? { sinceMs: c.sinceMs } : {}), ...(c.untilMs !== undefined ? { untilMs: c.untilMs } : {}) };
          after = c.position;
        }
        f = { ...f, ...ctx.store.clamp(f.sinceMs, f.untilMs) };
        const res = await connections(ctx.store, f, { idleGapMs: gap * 1000, limit, scanBudget: SCAN_BUDGET, ...(after ? { after } : {}) });
        const next = res.resume !== undefined ? encodeCursor({ order: 'asc', position: res.resume, query: digest, sinceMs: f.sinceMs!, untilMs: f.untilMs! }) : null;
        return {
          range: rangeOf(f),
          count: res.connections.length,
          connections: res.connections.map(connectionJson),
          packets: res.packets,
          truncated: res.truncated,
          next_cursor: next,
          loss: await ctx.lossReport(),
        };
      },
    );
  };
}
