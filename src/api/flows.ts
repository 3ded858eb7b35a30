import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { FlowRecord } from '../record.js';
import { decodeFlat } from '../store/encode.js';
import { composeService } from '../store/indexer.js';
import { bucketOf } from '../store/keys.js';
import {
  containerRole,
  decodeCursor,
  encodeCursor,
  planQuery,
  queryDigest,
  recordMatches,
  scanFlows,
  type FlowFilter,
  type Order,
  type StoreReader,
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

/** Entries examined per request before answering with a partial page and a cursor to go on. */
const SCAN_BUDGET = 5_000;

/** The record as the API returns it: rebuilt from the entry, plus where it is stored in `event.id` (`<partition>/<id>`). */
export function withEventId(record: FlowRecord, partition: string, id: string): FlowRecord {
  return { ...record, event: { ...record.event, id: `${partition}/${id}` } };
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
  store: StoreReader;
  logger: Logger;
  maxQueuedPerClient?: number;
}

/**
 * Live tail for every SSE client through ONE blocking reader: a single `XREAD BLOCK` connection over the partitions
 * being written (the current and previous bucket's), fanning each entry out to the clients whose filters match. It
 * starts with the first client and stops with the last. It reads from explicit IDs (each partition's last entry when
 * it started, the first entry of a partition that appears later), never `$`, so nothing added between two reads is
 * missed. Records of older buckets (a replayed backlog) are not followed.
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

  /** The partitions of the current and the previous bucket. */
  private async current(): Promise<string[]> {
    const { redis, keys, now } = this.opts.store;
    const from = bucketOf(now()) - 1;
    return redis.zrange(keys.partitions, String(from), '+inf', 'BYSCORE', 'LIMIT', 0, 256);
  }

  private async start(): Promise<void> {
    const { redis, keys } = this.opts.store;
    const parts = await this.current();
    const pl = redis.pipeline();
    for (const p of parts) pl.xrevrange(keys.stream(p), '+', '-', 'COUNT', 1);
    const replies = (await pl.exec()) ?? [];
    const ids = new Map<string, string>();
    parts.forEach((p, i) => {
      const [err, entries] = replies[i] ?? [null, []];
      if (err) throw err;
      ids.set(p, (entries as [string, string[]][])[0]?.[0] ?? '0-0');
    });
    if (this.subs.size === 0) return;
    const reader = { conn: redis.duplicate(), stopped: false };
    this.reader = reader;
    void this.run(reader, ids);
  }

  private stop(): void {
    const r = this.reader;
    if (r === undefined) return;
    this.reader = undefined;
    r.stopped = true;
    // Closing the connection ends the pending XREAD BLOCK at once.
    r.conn.disconnect();
  }

  private async run(reader: { conn: Redis; stopped: boolean }, ids: Map<string, string>): Promise<void> {
    const { keys } = this.opts.store;
    let refreshed = Date.now();
    while (!reader.stopped) {
      let reply: [string, [string, string[]][]][] | null;
      try {
        if (Date.now() - refreshed > 1000) {
          refreshed = Date.now();
          const live = await this.current();
          for (const p of live) if (!ids.has(p)) ids.set(p, '0-0');
          for (const p of [...ids.keys()]) if (!live.includes(p)) ids.delete(p);
        }
        if (ids.size === 0) {
          await new Promise((r) => setTimeout(r, 500));
          continue;
        }
        const parts = [...ids.keys()];
        reply = (await reader.conn.xread('COUNT', 1000, 'BLOCK', 1000, 'STREAMS', ...parts.map((p) => keys.stream(p)), ...parts.map((p) => ids.get(p)!))) as typeof reply;
      } catch (err) {
        if (reader.stopped) return;
        this.opts.logger.warn({ err }, 'live reader: XREAD failed, retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (reply === null) continue;
      const reg = await this.opts.store.registries().catch(() => undefined);
      if (reg === undefined) continue;
      for (const [stream, entries] of reply) {
        const part = /\{([^}]+)\}:s$/.exec(stream)?.[1];
        if (part === undefined || !ids.has(part)) continue;
        for (const [id, fields] of entries) {
          ids.set(part, id);
          const record = decodeFlat(fields, reg);
          if (record === undefined) continue;
          let chunk: string | undefined;
          for (const sub of this.subs) {
            if (!recordMatches(record, sub.filter)) continue;
            chunk ??= `id: ${part}/${id}\nevent: flow\ndata: ${JSON.stringify(withEventId(record, part, id))}\n\n`;
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
    index: { type: 'string', description: 'Index that served the query: container, ip, cidr, port, country, asn, direction or scan' },
    count: { type: 'integer' },
    items: { type: 'array', items: { type: 'object', additionalProperties: true } },
    next_cursor: { type: ['string', 'null'], description: 'Pass as `cursor` for the next page; null at the end' },
    examined: { type: 'integer', description: 'Entries examined for this page' },
    partial: { type: 'boolean', description: 'The work limit per request was reached before the page was full: go on with next_cursor' },
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
        const clamped = ctx.store.clamp(f.sinceMs, f.untilMs);
        f = { ...f, ...clamped };
        const plan = await planQuery(ctx.store, f);
        const res = await scanFlows(ctx.store, f, plan, limit, { order, scanBudget: SCAN_BUDGET, ...(after ? { after } : {}) });
        const ids = plan.containerIds;
        const items = res.hits.map((h) => {
          const item = withEventId(h.record, h.partition, h.id);
          const role = ids !== undefined ? containerRole(h.record, ids) : undefined;
          if (role !== undefined) item.dockflow = { ...item.dockflow, container_role: role };
          return item;
        });
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
        const partial = res.resume !== undefined && items.length < limit;
        return { range: rangeOf(f), order, index: plan.index, count: items.length, items, next_cursor: next, examined: res.examined, partial, loss };
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
