import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { alertFromFields, type Alert } from '../detect/engine.js';
import { SEVERITIES } from '../detect/rules.js';
import { badRequest, parseTime } from './filters.js';
import { errorSchema } from './openapi.js';

interface AlertQuery {
  rule?: string;
  severity?: string;
  container?: string;
  service?: string;
  remote?: string;
  kind?: 'new' | 'repeat';
  since?: string;
  until?: string;
  limit?: number;
  cursor?: string;
}

/** Entries examined per request before answering with what was found and a cursor to go on. */
const SCAN_BUDGET = 10_000;
const MAX_LIMIT = 1000;
const ID_RE = /^\d{1,20}-\d{1,20}$/;

const alertFilterProperties = {
  rule: { type: 'string', maxLength: 100, description: 'Rule id' },
  severity: { type: 'string', description: `Lowest severity: ${SEVERITIES.join(', ')}`, enum: [...SEVERITIES] },
  container: { type: 'string', maxLength: 200, description: 'Container name or ID prefix' },
  service: { type: 'string', maxLength: 200, description: 'Compose service' },
  remote: { type: 'string', maxLength: 64, description: 'Remote address' },
  kind: { type: 'string', enum: ['new', 'repeat'] },
} as const;

type Match = (a: Alert) => boolean;

function matcher(q: AlertQuery): Match {
  const minSeverity = q.severity !== undefined ? SEVERITIES.indexOf(q.severity as (typeof SEVERITIES)[number]) : 0;
  return (a) =>
    (q.rule === undefined || a.rule === q.rule) &&
    SEVERITIES.indexOf(a.severity) >= minSeverity &&
    (q.container === undefined || a.container_name === q.container || (/^[0-9a-f]{4,64}$/.test(q.container) && (a.container_id ?? '').startsWith(q.container))) &&
    (q.service === undefined || a.service === q.service) &&
    (q.remote === undefined || a.remote_ip === q.remote) &&
    (q.kind === undefined || a.kind === q.kind);
}

/** One follower of the live feed: chunks queue while its socket is congested, beyond `maxQueued` they are counted. */
class Follower {
  queue: string[] = [];
  dropped = 0;
  congested = false;
  constructor(
    readonly match: Match,
    readonly write: (chunk: string) => boolean,
  ) {}
  push(chunk: string, maxQueued: number): void {
    if (this.congested) {
      if (this.queue.length < maxQueued) this.queue.push(chunk);
      else this.dropped++;
      return;
    }
    this.congested = !this.write(chunk);
  }
  drain(): void {
    this.congested = false;
    if (this.dropped > 0) {
      this.queue.push(`event: dropped\ndata: {"dropped":${this.dropped}}\n\n`);
      this.dropped = 0;
    }
    while (this.queue.length > 0 && !this.congested) this.congested = !this.write(this.queue.shift()!);
  }
}

/**
 * The live alert feed: one blocking XREAD on the alert stream (its own connection) for all followers, started with
 * the first and stopped with the last. Reads from explicit IDs, so nothing added between two reads is missed.
 */
export class AlertHub {
  private readonly followers = new Set<Follower>();
  private reader: { conn: Redis; stopped: boolean } | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly logger: Logger,
    readonly maxClients: number,
  ) {}

  get clients(): number {
    return this.followers.size;
  }

  async add(f: Follower): Promise<() => void> {
    this.followers.add(f);
    if (this.reader === undefined) {
      const last = (await this.redis.xrevrange(this.key, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
      if (this.reader === undefined) {
        const reader = { conn: this.redis.duplicate(), stopped: false };
        this.reader = reader;
        void this.run(reader, last);
      }
    }
    return () => {
      this.followers.delete(f);
      if (this.followers.size === 0) this.stop();
    };
  }

  close(): void {
    this.followers.clear();
    this.stop();
  }

  private stop(): void {
    const r = this.reader;
    if (r === undefined) return;
    this.reader = undefined;
    r.stopped = true;
    r.conn.disconnect();
  }

  private async run(reader: { conn: Redis; stopped: boolean }, from: string): Promise<void> {
    let last = from;
    while (!reader.stopped) {
      let reply: [string, [string, string[]][]][] | null;
      try {
        reply = (await reader.conn.xread('COUNT', 500, 'BLOCK', 5000, 'STREAMS', this.key, last)) as typeof reply;
      } catch (err) {
        if (reader.stopped) return;
        this.logger.warn({ err }, 'alert feed: XREAD failed, retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      for (const [, entries] of reply ?? []) {
        for (const [id, fields] of entries) {
          last = id;
          const a = alertFromFields(id, fields);
          const chunk = `id: ${id}\nevent: alert\ndata: ${JSON.stringify(a)}\n\n`;
          for (const f of this.followers) if (f.match(a)) f.push(chunk, 1000);
        }
      }
    }
  }
}

/** `GET /api/alerts` (filters, cursor, bounded) and `GET /api/alerts/live` (SSE, capped followers). */
export function alertRoutes(opts: { redis: Redis; key: string; logger: Logger; maxClients: number; heartbeatMs?: number }): FastifyPluginAsync {
  return async (app) => {
    const hub = new AlertHub(opts.redis, opts.key, opts.logger, opts.maxClients);
    const open = new Set<{ end(): void }>();
    // Live responses are ended before the server closes, or it would wait on them forever.
    app.addHook('preClose', async () => {
      for (const res of open) res.end();
      hub.close();
    });

    app.get(
      '/api/alerts',
      {
        schema: {
          tags: ['alerts'],
          summary: 'Alerts raised by detection rules',
          description:
            'Newest first, from the `dockflow:alerts` stream. A group of repeats appears as its `new` alert and, when the group closed with more than one record, a `repeat` alert with the final `count`. `next_cursor` continues past the last entry examined.',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              ...alertFilterProperties,
              since: { type: 'string', maxLength: 64, description: 'ISO 8601 or relative (15m, 24h, 7d)' },
              until: { type: 'string', maxLength: 64 },
              limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT, default: 100 },
              cursor: { type: 'string', maxLength: 64, description: 'next_cursor of the previous page' },
            },
          },
          response: { 400: errorSchema, 401: errorSchema },
        },
      },
      async (req: FastifyRequest<{ Querystring: AlertQuery }>) => {
        const q = req.query;
        const now = Date.now();
        const sinceMs = q.since !== undefined ? parseTime(q.since, now) : undefined;
        const untilMs = q.until !== undefined ? parseTime(q.until, now) : undefined;
        if (q.since !== undefined && sinceMs === undefined) throw badRequest(`since: ${JSON.stringify(q.since)} is neither ISO 8601 nor a relative time like 15m`);
        if (q.until !== undefined && untilMs === undefined) throw badRequest(`until: ${JSON.stringify(q.until)} is neither ISO 8601 nor a relative time like 15m`);
        if (q.cursor !== undefined && !ID_RE.test(q.cursor)) throw badRequest('cursor is not valid');
        const limit = q.limit ?? 100;
        const match = matcher(q);
        let end = q.cursor !== undefined ? `(${q.cursor}` : untilMs !== undefined ? String(Math.floor(untilMs)) : '+';
        const start = sinceMs !== undefined ? `${Math.ceil(sinceMs)}-0` : '-';
        const items: Alert[] = [];
        let examined = 0;
        let next: string | null = null;
        scan: for (;;) {
          const batch = Math.min(500, SCAN_BUDGET - examined);
          const entries = await opts.redis.xrevrange(opts.key, end, start, 'COUNT', batch);
          for (const [id, fields] of entries) {
            examined++;
            const a = alertFromFields(id, fields);
            if (!match(a)) continue;
            items.push(a);
            if (items.length === limit) {
              // Continue after this one: a later page may find nothing more, which is the price of not looking ahead.
              next = id;
              break scan;
            }
          }
          const lastId = entries[entries.length - 1]?.[0];
          if (entries.length < batch || lastId === undefined) break;
          end = `(${lastId}`;
          if (examined >= SCAN_BUDGET) {
            next = lastId;
            break;
          }
        }
        return { count: items.length, items, next_cursor: next, examined };
      },
    );

    app.get(
      '/api/alerts/live',
      {
        schema: {
          tags: ['alerts'],
          summary: 'Follow new alerts (Server-Sent Events)',
          description: `Each stored alert as \`event: alert\`; \`event: dropped\` tells how many a slow client missed. At most ${opts.maxClients} followers at once (503 beyond).`,
          querystring: { type: 'object', additionalProperties: false, properties: alertFilterProperties },
          response: { 400: errorSchema, 401: errorSchema, 503: errorSchema },
        },
      },
      async (req: FastifyRequest<{ Querystring: AlertQuery }>, reply: FastifyReply) => {
        if (hub.clients >= hub.maxClients) return reply.code(503).send({ error: 'unavailable', message: `too many live alert followers (${hub.maxClients})` });
        reply.hijack();
        const res = reply.raw;
        const follower = new Follower(matcher(req.query), (chunk) => res.write(chunk));
        const leave = await hub.add(follower);
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
        res.write(': subscribed\n\n');
        const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), opts.heartbeatMs ?? 15_000);
        const onDrain = (): void => follower.drain();
        res.on('drain', onDrain);
        open.add(res);
        res.once('close', () => {
          open.delete(res);
          clearInterval(heartbeat);
          res.off('drain', onDrain);
          leave();
        });
        return reply;
      },
    );
  };
}
