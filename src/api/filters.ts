import { DIRECTIONS, type Direction } from '../record.js';
import { parseCidr } from '../net/ip.js';
import type { FlowFilter } from '../store/query.js';

/** An error fastify answers with its `statusCode` and message. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** Hard maximum of `limit` on every listing. */
export const MAX_LIMIT = 5000;

export const badRequest = (message: string): HttpError => new HttpError(400, message);

const NAME = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$';
const TIME = { type: 'string', maxLength: 40, description: 'ISO 8601 (`2024-05-01T10:00:00Z`) or relative to now (`90s`, `15m`, `2h`, `7d`, `1w`)' };
const port = (description: string) => ({ type: 'integer', minimum: 0, maximum: 65535, description });

/** Query parameters shared by every route that selects flows. Values reach Redis keys only after validation. */
export const filterProperties = {
  direction: {
    type: 'string',
    pattern: `^(${DIRECTIONS.join('|')})(,(${DIRECTIONS.join('|')}))*$`,
    description: `Comma-separated directions: ${DIRECTIONS.join(', ')}`,
  },
  container: { type: 'string', pattern: NAME, description: 'Container name, or a prefix of its ID (≥ 4 hex digits)' },
  service: { type: 'string', pattern: NAME, description: 'Compose service (label com.docker.compose.service)' },
  host: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$', description: 'Docker host (host.name)' },
  ip: { type: 'string', maxLength: 64, description: 'Address or CIDR on either side (`203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`)' },
  src_ip: { type: 'string', maxLength: 64, description: 'Source address or CIDR' },
  dst_ip: { type: 'string', maxLength: 64, description: 'Destination address or CIDR' },
  port: port('Port on either side'),
  src_port: port('Source port'),
  dst_port: port('Destination port'),
  transport: { type: 'string', pattern: '^[a-z0-9-]{1,16}$', description: 'network.transport: tcp, udp, icmp, ipv6-icmp, …' },
  country: { type: 'string', pattern: '^[A-Z]{2}$', description: 'ISO 3166 country code of either side' },
  asn: { type: 'integer', minimum: 0, maximum: 4294967295, description: 'AS number of either side' },
  prefix: { type: 'string', minLength: 1, maxLength: 64, description: 'LOG rule prefix, trimmed (`dockflow:`)' },
  since: TIME,
  until: TIME,
} as const;

export interface FilterQuery {
  direction?: string;
  container?: string;
  service?: string;
  host?: string;
  ip?: string;
  src_ip?: string;
  dst_ip?: string;
  port?: number;
  src_port?: number;
  dst_port?: number;
  transport?: string;
  country?: string;
  asn?: number;
  prefix?: string;
  since?: string;
  until?: string;
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const ISO_RE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;

/** The latest time any answer talks about: the end of year 9999, as ISO 8601 can write it. */
export const MAX_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/** ISO 8601 or `<n><s|m|h|d|w>` before `nowMs`, between 1970 and 9999; undefined otherwise. */
export function parseTime(text: string, nowMs: number): number | undefined {
  const t = parseTimeText(text, nowMs);
  return t !== undefined && t >= 0 && t <= MAX_TIME_MS ? t : undefined;
}

function parseTimeText(text: string, nowMs: number): number | undefined {
  const rel = /^(\d{1,9})([smhdw])$/.exec(text);
  if (rel) return nowMs - Number(rel[1]) * UNIT_MS[rel[2]!]!;
  if (!ISO_RE.test(text)) return undefined;
  // A date-time without a zone is read as UTC, like the records' own timestamps.
  const zoned = /T|\s/.test(text) && !/(Z|[+-]\d{2}:?\d{2})$/.test(text) ? `${text.replace(' ', 'T')}Z` : text.replace(' ', 'T');
  const t = Date.parse(zoned);
  return Number.isFinite(t) ? t : undefined;
}

function address(name: string, text: string | undefined) {
  if (text === undefined) return undefined;
  const m = parseCidr(text);
  if (m === undefined) throw badRequest(`${name}: ${JSON.stringify(text)} is not an IP address or CIDR`);
  return m;
}

function time(name: string, text: string | undefined, nowMs: number): number | undefined {
  if (text === undefined) return undefined;
  const t = parseTime(text, nowMs);
  // Beyond what a Date can hold (±8.64e15 ms): not a time.
  if (t === undefined || Math.abs(t) > 8.64e15) throw badRequest(`${name}: ${JSON.stringify(text)} is neither ISO 8601 nor a relative time like 15m, between 1970 and 9999`);
  return t;
}

/** Turns validated query parameters into a store filter; semantic errors (bad CIDR, since after until) are 400s. */
export function toFlowFilter(q: FilterQuery, nowMs: number, defaults: { sinceMs?: number } = {}): FlowFilter {
  const f: FlowFilter = {};
  if (q.direction !== undefined) f.directions = [...new Set(q.direction.split(','))] as Direction[];
  if (q.container !== undefined) f.container = q.container;
  if (q.service !== undefined) f.service = q.service;
  if (q.host !== undefined) f.host = q.host;
  const ip = address('ip', q.ip);
  if (ip) f.ip = ip;
  const src = address('src_ip', q.src_ip);
  if (src) f.srcIp = src;
  const dst = address('dst_ip', q.dst_ip);
  if (dst) f.dstIp = dst;
  if (q.port !== undefined) f.port = q.port;
  if (q.src_port !== undefined) f.srcPort = q.src_port;
  if (q.dst_port !== undefined) f.dstPort = q.dst_port;
  if (q.transport !== undefined) f.transport = q.transport;
  if (q.country !== undefined) f.country = q.country;
  if (q.asn !== undefined) f.asn = q.asn;
  if (q.prefix !== undefined) f.prefix = q.prefix;
  const since = time('since', q.since, nowMs) ?? defaults.sinceMs;
  const until = time('until', q.until, nowMs);
  if (since !== undefined) f.sinceMs = since;
  if (until !== undefined) f.untilMs = until;
  if (since !== undefined && until !== undefined && since > until) throw badRequest('since is after until');
  return f;
}

/** The time range an answer covers, for the envelope and the loss report. */
export function rangeOf(f: FlowFilter): { since: string | null; until: string | null } {
  return {
    since: f.sinceMs !== undefined ? new Date(f.sinceMs).toISOString() : null,
    until: f.untilMs !== undefined ? new Date(f.untilMs).toISOString() : null,
  };
}

/** A range as served, and why it is narrower than asked (empty when it is not). */
export interface Clamped {
  sinceMs: number;
  untilMs: number;
  reasons: string[];
}

const days = (ms: number): string => `${+(ms / 86_400_000).toFixed(2)} d`;

/**
 * Narrows a range to what can hold records and what one answer may cover: nothing before the retention horizon
 * (records older are deleted), nothing after now, and at most `maxSpanMs` (the newest part is kept).
 */
export function clampRange(sinceMs: number, untilMs: number, nowMs: number, opts: { retentionMs: number; maxSpanMs?: number }): Clamped {
  const reasons: string[] = [];
  let since = sinceMs;
  let until = untilMs;
  if (until > nowMs) until = nowMs;
  if (opts.retentionMs > 0 && since < nowMs - opts.retentionMs) {
    since = nowMs - opts.retentionMs;
    reasons.push(`since clamped to the retention horizon (${days(opts.retentionMs)})`);
  }
  if (opts.maxSpanMs !== undefined && until - since > opts.maxSpanMs) {
    since = until - opts.maxSpanMs;
    reasons.push(`range longer than ${days(opts.maxSpanMs)}: only its newest ${days(opts.maxSpanMs)} counted; ask again with until=${new Date(since).toISOString()} for the rest`);
  }
  if (since > until) reasons.push('the range lies wholly outside the stored records');
  return { sinceMs: since, untilMs: until, reasons };
}
