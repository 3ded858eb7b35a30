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
  type Position,
  type StoreReader,
} from '../store/query.js';
import type { ApiContext } from './app.js';
import { MAX_LIMIT, badRequest, filterProperties, rangeOf, toFlowFilter, type FilterQuery } from './filters.js';
import { BusyError, type ApiCounters } from './limits.js';
import { errorSchema, lossReportSchema, rangeSchema } from './openapi.js';

interface FlowsQuery extends FilterQuery {
  order?: Order;
  limit?: number;
  cursor?: string;
  format?: 'json' | 'ndjson' | 'csv';
}

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

/**
 * RFC 4180 with every field quoted and quotes doubled, so no delimiter a spreadsheet might pick (`,` or `;`) can split
 * a cell; a text cell a spreadsheet would run as a formula (leading = + - @ TAB CR) gets a leading `'` inside the
 * quotes (OWASP CSV injection).
 */
export function csvCell(v: unknown): string {
  if (v === undefined || v === null) return '""';
  let s = String(v);
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return `"${s.replace(/"/g, '""')}"`;
}

export function toCsv(records: FlowRecord[]): string {
  const lines = [CSV_COLUMNS.map(([name]) => csvCell(name)).join(',')];
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

/**
 * One live client. Events arrive in batches (one write per client per read of the streams, not one per record); while
 * its socket is congested they queue, and beyond `maxQueued` events they are dropped and counted, then announced.
 */
class Subscriber {
  private queue: string[] = [];
  private queued = 0;
  private dropped = 0;
  private congested = false;
  private writer: ((chunk: string) => boolean) | undefined;
  private ender: (() => void) | undefined;

  constructor(
    readonly filter: FlowFilter,
    /** Filters as text: subscribers with equal filters share one match per record. */
    readonly filterKey: string,
    private readonly maxQueued: number,
    private readonly counters: ApiCounters | undefined,
  ) {}

  attach(writer: (chunk: string) => boolean, end: () => void): void {
    this.writer = writer;
    this.ender = end;
    this.drain();
  }

  end(): void {
    this.ender?.();
  }

  /** `chunk` holds `events` SSE events (0 for a notice such as a gap). */
  push(chunk: string, events: number): void {
    if (this.writer === undefined || this.congested) {
      if (this.queued + events <= this.maxQueued || events === 0) {
        this.queue.push(chunk);
        this.queued += events;
      } else {
        this.dropped += events;
        if (this.counters !== undefined) this.counters.liveDropped += events;
      }
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
    if (this.queue.length > 0 && !this.congested) {
      const all = this.queue.join('');
      this.queue = [];
      this.queued = 0;
      this.congested = !this.writer(all);
    }
  }
}

export interface LiveHubOptions {
  store: StoreReader;
  logger: Logger;
  /** Followers at once; the next one is refused (503). */
  maxClients: number;
  /** Records fanned out per second; beyond it the tail jumps to the newest entry and followers get a counted gap. */
  maxRecordsPerSecond: number;
  maxQueuedPerClient?: number;
  counters?: ApiCounters;
}

interface StreamXInfo {
  lastId: string;
  /** Entries ever added to the stream (Redis ≥ 7); undefined on older servers. */
  added: number | undefined;
}

async function streamInfo(redis: Redis, streams: readonly string[]): Promise<StreamXInfo[]> {
  const pl = redis.pipeline();
  for (const s of streams) pl.xinfo('STREAM', s);
  const replies = (await pl.exec()) ?? [];
  return streams.map((_, i) => {
    const [err, reply] = replies[i] ?? [null, undefined];
    // A stream not written yet: start before its first entry.
    if (err || !Array.isArray(reply)) return { lastId: '0-0', added: 0 };
    const flat = reply as unknown[];
    const field = (name: string): unknown => flat[flat.indexOf(name) + 1];
    const added = field('entries-added');
    return { lastId: String(field('last-generated-id') ?? '0-0'), added: flat.includes('entries-added') ? Number(added) : undefined };
  });
}

/**
 * Live tail for every SSE client through ONE blocking reader: a single `XREAD BLOCK` connection over the partitions
 * being written (the current and previous bucket's), fanning each entry out to the clients whose filters match. Each
 * record is parsed once, matched once per distinct filter, serialised once, and each client gets one write per read,
 * however many clients watch. Its work is capped at `maxRecordsPerSecond`: past that, it waits for the next second
 * and jumps to the newest entries, telling every client how many it skipped (`event: gap`), so followers can never
 * take the event loop from ingest. It reads from explicit IDs (each partition's last entry when it started, the
 * first entry of a partition that appears later), never `$`, so nothing added between two reads is missed. Records
 * of older buckets (a replayed backlog) are not followed.
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
    if (this.subs.size >= this.opts.maxClients) {
      if (this.opts.counters !== undefined) this.opts.counters.liveRefused += 1;
      throw new BusyError(`${this.opts.maxClients} live followers already; retry later`);
    }
    const sub = new Subscriber(filter, JSON.stringify(filter), this.opts.maxQueuedPerClient ?? 1000, this.opts.counters);
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
    const info = await streamInfo(redis, parts.map((p) => keys.stream(p)));
    const pos = new Map<string, StreamXInfo>(parts.map((p, i) => [p, info[i]!]));
    if (this.subs.size === 0) return;
    const reader = { conn: redis.duplicate(), stopped: false };
    this.reader = reader;
    void this.run(reader, pos);
  }

  private stop(): void {
    const r = this.reader;
    if (r === undefined) return;
    this.reader = undefined;
    r.stopped = true;
    // Closing the connection ends the pending XREAD BLOCK at once.
    r.conn.disconnect();
  }

  /** Skips to the newest entries; the skipped count is exact on Redis ≥ 7 (entries-added), else unknown (null). */
  private async jump(pos: Map<string, StreamXInfo>): Promise<void> {
    const { redis, keys } = this.opts.store;
    const parts = [...pos.keys()];
    const now = await streamInfo(redis, parts.map((p) => keys.stream(p)));
    let skipped: number | null = 0;
    parts.forEach((p, i) => {
      const was = pos.get(p)!;
      const is = now[i]!;
      if (is.lastId === was.lastId) return;
      if (skipped !== null && was.added !== undefined && is.added !== undefined) skipped += Math.max(0, is.added - was.added);
      else skipped = null;
      pos.set(p, is);
    });
    if (skipped === 0) return;
    if (skipped !== null && this.opts.counters !== undefined) this.opts.counters.liveSkipped += skipped;
    const notice = `event: gap\ndata: {"skipped":${skipped === null ? 'null' : skipped}}\n\n`;
    for (const sub of this.subs) sub.push(notice, 0);
  }

  private async run(reader: { conn: Redis; stopped: boolean }, pos: Map<string, StreamXInfo>): Promise<void> {
    const { keys } = this.opts.store;
    const perSecond = this.opts.maxRecordsPerSecond;
    let windowStart = Date.now();
    let used = 0;
    let refreshed = Date.now();
    while (!reader.stopped) {
      const now = Date.now();
      if (now - windowStart >= 1000) {
        windowStart = now;
        used = 0;
      }
      if (used >= perSecond) {
        // Over the cap: wait out this second, then go on from the newest entries.
        await new Promise((r) => setTimeout(r, windowStart + 1000 - now));
        if (reader.stopped) return;
        try {
          await this.jump(pos);
        } catch (err) {
          this.opts.logger.warn({ err }, 'live reader: could not skip ahead');
        }
        continue;
      }
      let reply: [string, [string, string[]][]][] | null;
      try {
        if (Date.now() - refreshed > 1000) {
          refreshed = Date.now();
          const live = await this.current();
          // A partition that appears later is read from its first entry.
          for (const p of live) if (!pos.has(p)) pos.set(p, { lastId: '0-0', added: 0 });
          for (const p of [...pos.keys()]) if (!live.includes(p)) pos.delete(p);
        }
        if (pos.size === 0) {
          await new Promise((r) => setTimeout(r, 500));
          refreshed = 0;
          continue;
        }
        const parts = [...pos.keys()];
        const ids = parts.map((p) => pos.get(p)!.lastId);
        reply = (await reader.conn.xread('COUNT', Math.min(1000, perSecond - used), 'BLOCK', 1000, 'STREAMS', ...parts.map((p) => keys.stream(p)), ...ids)) as typeof reply;
      } catch (err) {
        if (reader.stopped) return;
        this.opts.logger.warn({ err }, 'live reader: XREAD failed, retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (reply === null) continue;
      const reg = await this.opts.store.registries().catch(() => undefined);
      if (reg === undefined) continue;
      // Per distinct filter: the events of this read and the subscribers that share it.
      const groups = new Map<string, { filter: FlowFilter; subs: Subscriber[]; chunks: string[] }>();
      for (const sub of this.subs) {
        const g = groups.get(sub.filterKey);
        if (g === undefined) groups.set(sub.filterKey, { filter: sub.filter, subs: [sub], chunks: [] });
        else g.subs.push(sub);
      }
      for (const [stream, entries] of reply) {
        const part = /\{([^}]+)\}:s$/.exec(stream)?.[1];
        const p = part === undefined ? undefined : pos.get(part);
        if (part === undefined || p === undefined) continue;
        for (const [id, fields] of entries) {
          p.lastId = id;
          if (p.added !== undefined) p.added += 1;
          used += 1;
          const record = decodeFlat(fields, reg);
          if (record === undefined) continue;
          let chunk: string | undefined;
          for (const g of groups.values()) {
            if (!recordMatches(record, g.filter)) continue;
            chunk ??= `id: ${part}/${id}\nevent: flow\ndata: ${JSON.stringify(withEventId(record, part, id))}\n\n`;
            g.chunks.push(chunk);
          }
        }
      }
      for (const g of groups.values()) {
        if (g.chunks.length === 0) continue;
        const batch = g.chunks.join('');
        for (const sub of g.subs) sub.push(batch, g.chunks.length);
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
        let after: Position | undefined;
        if (cursorText !== undefined) {
          const c = decodeCursor(cursorText);
          if (c === undefined) throw badRequest('cursor is not valid');
          if (c.query !== digest || c.order !== order) throw badRequest('cursor belongs to a different query');
          f = { ...f, ...(c.sinceMs !== undefined ? { sinceMs: c.sinceMs } : {}), ...(c.untilMs !== undefined ? { untilMs: c.untilMs } : {}) };
          after = c.position;
        }
        f = { ...f, ...ctx.store.clamp(f.sinceMs, f.untilMs) };
        const { plan, res } = await ctx.gate.run(async () => {
          const plan = await planQuery(ctx.store, f);
          const res = await scanFlows(ctx.store, f, plan, limit, { order, scanBudget: ctx.limits.flowsScanBudget, ...(after ? { after } : {}) });
          return { plan, res };
        });
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
