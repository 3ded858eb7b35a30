import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { decodeEntry } from '../store/encode.js';
import { composeService, type IndexKeys } from '../store/indexer.js';
import {
  decodeCursor,
  encodeCursor,
  planQuery,
  queryDigest,
  recordMatches,
  scanFlows,
  type FlowFilter,
  type Order,
} from '../store/query.js';
import type { ApiContext } from './app.js';
import { MAX_LIMIT, badRequest, filterProperties, rangeOf, toFlowFilter, type FilterQuery } from './filters.js';
import { errorSchema, lossReportSchema, rangeSchema } from './openapi.js';

interface FlowsQuery extends FilterQuery {
  order?: Order;
  limit?: number;
  cursor?: string;
  format?: 'json' | 'ndjson' | 'csv';
}

/** Index entries examined per request before answering with a partial page and a cursor to go on. */
const SCAN_BUDGET = 20_000;

/** The record as the API returns it: stored JSON plus where it is stored, in `event.id`. */
export function withEventId(record: FlowRecord, direction: Direction, id: string): FlowRecord {
  return { ...record, event: { ...record.event, id: `${direction}/${id}` } };
}

const CSV_COLUMNS: [string, (r: FlowRecord) => unknown][] = [
  ['id', (r) => r.event?.id],
  ['@timestamp', (r) => r['@timestamp']],
  ['direction', (r) => r.network.direction],
  ['transport', (r) => r.network.transport],
  ['source.ip', (r) => r.source.ip],
  ['source.port', (r) => r.source.port],
  ['destination.ip', (r) => r.destination.ip],
  ['destination.port', (r) => r.destination.port],
  ['container.name', (r) => r.container?.name],
  ['container.id', (r) => r.container?.id],
  ['compose.service', (r) => composeService(r)],
  ['host.name', (r) => r.host?.name],
  ['log.prefix', (r) => r.log?.prefix],
  ['length', (r) => r.iptables.length ?? r.network.bytes],
  ['tcp.flags', (r) => r.iptables.tcp?.flags?.join(' ')],
  ['source.country', (r) => r.source.geo?.country_iso_code],
  ['source.asn', (r) => r.source.as?.number],
  ['destination.country', (r) => r.destination.geo?.country_iso_code],
  ['destination.asn', (r) => r.destination.as?.number],
];

/** RFC 4180 quoting; cells a spreadsheet would run as a formula get a leading `'`. */
export function csvCell(v: unknown): string {
  if (v === undefined || v === null) return '';
  let s = String(v);
  if (/^[=+\-@\t\r]/.test(s) && typeof v === 'string') s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(records: FlowRecord[]): string {
  const lines = [CSV_COLUMNS.map(([name]) => name).join(',')];
  for (const r of records) lines.push(CSV_COLUMNS.map(([, get]) => csvCell(get(r))).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

function pickFormat(q: FlowsQuery, accept: string | undefined): 'json' | 'ndjson' | 'csv' {
  if (q.format !== undefined) return q.format;
  if (accept?.includes('application/x-ndjson')) return 'ndjson';
  if (accept?.includes('text/csv')) return 'csv';
  return 'json';
}

/* ---------- live ---------- */

/** One live client: events queue while its socket is congested, and beyond `maxQueued` are dropped and counted. */
class Subscriber {
  private queue: string[] = [];
  private dropped = 0;
  private congested = false;
  private writer: ((chunk: string) => boolean) | undefined;
  private ender: (() => void) | undefined;

  constructor(
    readonly filter: FlowFilter,
    private readonly maxQueued: number,
  ) {}

  attach(writer: (chunk: string) => boolean, end: () => void): void {
    this.writer = writer;
    this.ender = end;
    this.drain();
  }

  end(): void {
    this.ender?.();
  }

  push(chunk: string): void {
    if (this.writer === undefined || this.congested) {
      if (this.queue.length < this.maxQueued) this.queue.push(chunk);
      else this.dropped += 1;
      return;
    }
    this.congested = !this.writer(chunk);
  }

  drain(): void {
    if (this.writer === undefined) return;
    this.congested = false;
    if (this.dropped > 0) {
      this.queue.push(`event: dropped\ndata: {"dropped":${this.dropped}}\n\n`);
      this.dropped = 0;
    }
    while (this.queue.length > 0 && !this.congested) this.congested = !this.writer(this.queue.shift()!);
  }
}

export interface LiveHubOptions {
  redis: Redis;
  keys: IndexKeys;
  logger: Logger;
  maxQueuedPerClient?: number;
}

/**
 * Live tail for every SSE client through ONE blocking reader: a single `XREAD BLOCK` connection over the direction
 * streams, fanning each entry out to the clients whose filters match. Per-client readers would hold a Redis
 * connection each and parse every record once per client; the shared one costs one connection and one parse per
 * record however many clients watch. It starts with the first client and stops with the last. It reads from
 * explicit IDs (each stream's last entry when it started), never `$`, so nothing added between two reads is missed.
 */
export class LiveHub {
  private readonly subs = new Set<Subscriber>();
  private reader: { conn: Redis; stopped: boolean } | undefined;
  private starting: Promise<void> | undefined;

  constructor(private readonly opts: LiveHubOptions) {}

  get clients(): number {
    return this.subs.size;
  }

  /** Resolves once the reader's positions are fixed: every entry added after that reaches the subscriber. */
  async subscribe(filter: FlowFilter): Promise<{ sub: Subscriber; unsubscribe: () => void }> {
    const sub = new Subscriber(filter, this.opts.maxQueuedPerClient ?? 1000);
    this.subs.add(sub);
    try {
      if (this.reader === undefined) {
        this.starting ??= this.start().finally(() => {
          this.starting = undefined;
        });
        await this.starting;
      }
    } catch (err) {
      this.subs.delete(sub);
      throw err;
    }
    return {
      sub,
      unsubscribe: () => {
        this.subs.delete(sub);
        if (this.subs.size === 0) this.stop();
      },
    };
  }

  /** Ends every live response (server shutdown) and the reader. */
  close(): void {
    for (const sub of this.subs) sub.end();
    this.subs.clear();
    this.stop();
  }

  private async start(): Promise<void> {
    const streams = DIRECTIONS.map((d) => this.opts.keys.stream(d));
    const pl = this.opts.redis.pipeline();
    for (const s of streams) pl.xrevrange(s, '+', '-', 'COUNT', 1);
    const replies = (await pl.exec()) ?? [];
    const ids = streams.map((_, i) => {
      const [err, entries] = replies[i] ?? [null, []];
      if (err) throw err;
      return (entries as [string, string[]][])[0]?.[0] ?? '0-0';
    });
    if (this.subs.size === 0) return;
    const reader = { conn: this.opts.redis.duplicate(), stopped: false };
    this.reader = reader;
    void this.run(reader, streams, ids);
  }

  private stop(): void {
    const r = this.reader;
    if (r === undefined) return;
    this.reader = undefined;
    r.stopped = true;
    // Closing the connection ends the pending XREAD BLOCK at once.
    r.conn.disconnect();
  }

  private async run(reader: { conn: Redis; stopped: boolean }, streams: string[], ids: string[]): Promise<void> {
    while (!reader.stopped) {
      let reply: [string, [string, string[]][]][] | null;
      try {
        reply = (await reader.conn.xread('COUNT', 1000, 'BLOCK', 5000, 'STREAMS', ...streams, ...ids)) as typeof reply;
      } catch (err) {
        if (reader.stopped) return;
        this.opts.logger.warn({ err }, 'live reader: XREAD failed, retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (reply === null) continue;
      for (const [stream, entries] of reply) {
        const i = streams.indexOf(stream);
        const direction = DIRECTIONS[i];
        if (direction === undefined) continue;
        for (const [id, fields] of entries) {
          ids[i] = id;
          const record = decodeEntry(fields);
          if (record === undefined) continue;
          let chunk: string | undefined;
          for (const sub of this.subs) {
            if (!recordMatches(record, sub.filter)) continue;
            chunk ??= `id: ${direction}/${id}\nevent: flow\ndata: ${JSON.stringify(withEventId(record, direction, id))}\n\n`;
            sub.push(chunk);
          }
        }
      }
    }
  }
}

/* ---------- routes ---------- */

const flowListSchema = {
  type: 'object',
  properties: {
    range: rangeSchema,
    order: { type: 'string' },
    index: { type: 'string', description: 'Index that served the query: container, ip, cidr or time' },
    count: { type: 'integer' },
    items: { type: 'array', items: { type: 'object', additionalProperties: true } },
    next_cursor: { type: ['string', 'null'], description: 'Pass as `cursor` for the next page; null at the end' },
    examined: { type: 'integer', description: 'Index entries examined for this page' },
    loss: lossReportSchema,
  },
} as const;

export function flowRoutes(ctx: ApiContext, hub: LiveHub, opts: { heartbeatMs: number }): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/api/flows',
      {
        schema: {
          tags: ['flows'],
          summary: 'Find flow records',
          description:
            'Records matching every filter, newest first by default, one page at a time. `format=ndjson|csv` (or `Accept: application/x-ndjson|text/csv`) for export; the next cursor is then in the `x-next-cursor` header and the loss report in `x-dockflow-loss`.',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              ...filterProperties,
              order: { type: 'string', enum: ['desc', 'asc'], default: 'desc' },
              limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT, default: 100 },
              cursor: { type: 'string', maxLength: 256, description: 'Opaque position from a previous page' },
              format: { type: 'string', enum: ['json', 'ndjson', 'csv'] },
            },
          },
          response: { 200: flowListSchema, 400: errorSchema, 401: errorSchema },
        },
      },
      async (req: FastifyRequest<{ Querystring: FlowsQuery }>, reply: FastifyReply) => {
        const q = req.query;
        const { cursor: cursorText, limit = 100, format: _f, ...filterQuery } = q;
        const order = q.order ?? 'desc';
        const digest = queryDigest(filterQuery);
        let f = toFlowFilter(filterQuery, ctx.now());
        let after;
        if (cursorText !== undefined) {
          const c = decodeCursor(cursorText);
          if (c === undefined) throw badRequest('cursor is not valid');
          if (c.query !== digest || c.order !== order) throw badRequest('cursor belongs to a different query');
          f = { ...f, ...(c.sinceMs !== undefined ? { sinceMs: c.sinceMs } : {}), ...(c.untilMs !== undefined ? { untilMs: c.untilMs } : {}) };
          after = c.position;
        }
        const plan = await planQuery(ctx.redis, ctx.keys, f);
        const res = await scanFlows(ctx.redis, ctx.keys, f, plan, limit, { order, scanBudget: SCAN_BUDGET, ...(after ? { after } : {}) });
        const items = res.hits.map((h) => withEventId(h.record, h.direction, h.id));
        const next =
          res.resume !== undefined
            ? encodeCursor({
                order,
                position: res.resume,
                query: digest,
                ...(f.sinceMs !== undefined ? { sinceMs: f.sinceMs } : {}),
                ...(f.untilMs !== undefined ? { untilMs: f.untilMs } : {}),
              })
            : null;
        const loss = await ctx.lossReport();
        const format = pickFormat(q, req.headers.accept);
        if (format !== 'json') {
          if (next !== null) reply.header('x-next-cursor', next);
          reply.header('x-dockflow-loss', JSON.stringify(loss));
          if (format === 'csv') return reply.type('text/csv; charset=utf-8').send(toCsv(items));
          return reply.type('application/x-ndjson').send(items.map((r) => `${JSON.stringify(r)}\n`).join(''));
        }
        return { range: rangeOf(f), order, index: plan.index, count: items.length, items, next_cursor: next, examined: res.examined, loss };
      },
    );

    const { since: _s, until: _u, ...liveFilters } = filterProperties;
    app.get(
      '/api/flows/live',
      {
        schema: {
          tags: ['flows'],
          summary: 'Follow new flow records (Server-Sent Events)',
          description: 'Each matching record as `event: flow` with the record JSON as data; `event: dropped` tells how many were skipped for a slow client; `: keep-alive` comments keep proxies open.',
          querystring: { type: 'object', additionalProperties: false, properties: liveFilters },
          response: { 400: errorSchema, 401: errorSchema },
        },
      },
      async (req: FastifyRequest<{ Querystring: FilterQuery }>, reply: FastifyReply) => {
        const f = toFlowFilter(req.query, ctx.now());
        const { sub, unsubscribe } = await hub.subscribe(f);
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
          'x-accel-buffering': 'no',
        });
        res.write(': subscribed\n\n');
        const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), opts.heartbeatMs);
        const onDrain = (): void => sub.drain();
        res.on('drain', onDrain);
        sub.attach(
          (chunk) => res.write(chunk),
          () => res.end(),
        );
        const cleanup = (): void => {
          clearInterval(heartbeat);
          res.off('drain', onDrain);
          unsubscribe();
        };
        res.once('close', cleanup);
      },
    );
  };
}
