import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { rangeContains, type IpRange } from '../net/ip.js';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import {
  CONTAINER_ID_RE,
  composeService,
  decodeMember,
  IndexKeys,
} from './indexer.js';
import { decodeEntry } from './encode.js';

/* ---------- filters ---------- */

export interface FlowFilter {
  directions?: Direction[];
  /** Container name, or a prefix of its ID (hex). */
  container?: string;
  /** Compose service (`com.docker.compose.service`). */
  service?: string;
  host?: string;
  /** Address or CIDR on either side, on the source, on the destination. */
  ip?: IpRange;
  srcIp?: IpRange;
  dstIp?: IpRange;
  /** Port on either side, source port, destination port. */
  port?: number;
  srcPort?: number;
  dstPort?: number;
  transport?: string;
  /** ISO country code / AS number of either side. */
  country?: string;
  asn?: number;
  /** The LOG rule's prefix, exact (trimmed, as stored). */
  prefix?: string;
  sinceMs?: number;
  untilMs?: number;
}

export interface ContainerInfo {
  id: string;
  name?: string;
  service?: string;
  image?: string;
}

export async function listContainers(redis: Redis, keys: IndexKeys): Promise<ContainerInfo[]> {
  const all = await redis.hgetall(keys.containerMeta);
  const out: ContainerInfo[] = [];
  for (const [id, json] of Object.entries(all)) {
    if (!CONTAINER_ID_RE.test(id)) continue;
    try {
      const m = JSON.parse(json) as { n?: string; s?: string; i?: string };
      out.push({ id, ...(m.n ? { name: m.n } : {}), ...(m.s ? { service: m.s } : {}), ...(m.i ? { image: m.i } : {}) });
    } catch {
      out.push({ id });
    }
  }
  return out;
}

/** Container IDs matching a name, an ID prefix (hex, ≥ 4 chars) or a compose service. */
export function resolveContainers(all: ContainerInfo[], f: { container?: string; service?: string }): string[] {
  return all
    .filter((c) => {
      if (f.container !== undefined && !(c.name === f.container || (/^[0-9a-f]{4,64}$/.test(f.container) && c.id.startsWith(f.container)))) return false;
      if (f.service !== undefined && c.service !== f.service) return false;
      return true;
    })
    .map((c) => c.id);
}

function endpointHasCountry(r: FlowRecord, c: string): boolean {
  return r.source.geo?.country_iso_code === c || r.destination.geo?.country_iso_code === c;
}

/** The in-memory half of a query: every filter, whatever index fetched the candidate. */
export function recordMatches(r: FlowRecord, f: FlowFilter, containerIds?: ReadonlySet<string>): boolean {
  const dir = r.network.direction;
  if (f.directions !== undefined && !f.directions.includes(dir)) return false;
  if (containerIds !== undefined) {
    if (r.container?.id === undefined || !containerIds.has(r.container.id)) return false;
  } else if (f.container !== undefined || f.service !== undefined) {
    // No registry lookup (live tail): match the record's own container fields.
    const c = r.container;
    if (c?.id === undefined || c.unattributed === true) return false;
    const info: ContainerInfo = { id: c.id, ...(c.name ? { name: c.name } : {}), ...(composeService(r) ? { service: composeService(r)! } : {}) };
    if (resolveContainers([info], f).length === 0) return false;
  }
  if (f.host !== undefined && r.host?.name !== f.host) return false;
  if (f.ip !== undefined && !rangeContains(f.ip, r.source.ip) && !rangeContains(f.ip, r.destination.ip)) return false;
  if (f.srcIp !== undefined && !rangeContains(f.srcIp, r.source.ip)) return false;
  if (f.dstIp !== undefined && !rangeContains(f.dstIp, r.destination.ip)) return false;
  if (f.port !== undefined && r.source.port !== f.port && r.destination.port !== f.port) return false;
  if (f.srcPort !== undefined && r.source.port !== f.srcPort) return false;
  if (f.dstPort !== undefined && r.destination.port !== f.dstPort) return false;
  if (f.transport !== undefined && r.network.transport !== f.transport) return false;
  if (f.country !== undefined && !endpointHasCountry(r, f.country)) return false;
  if (f.asn !== undefined && r.source.as?.number !== f.asn && r.destination.as?.number !== f.asn) return false;
  if (f.prefix !== undefined && r.log?.prefix !== f.prefix) return false;
  return true;
}

/* ---------- positions and cursors ---------- */

export type Order = 'desc' | 'asc';

/** A position in the total order (score, member) shared by every index, so one cursor works for any plan. */
export interface Position {
  score: number;
  member: string;
}

function before(a: Position, b: Position, order: Order): boolean {
  if (a.score !== b.score) return order === 'desc' ? a.score > b.score : a.score < b.score;
  return order === 'desc' ? a.member > b.member : a.member < b.member;
}

export interface CursorState {
  order: Order;
  position: Position;
  /** Digest of the filters the cursor was made for. */
  query: string;
  /** The time range resolved on the first page, so that a relative `since=15m` does not slide while paging. */
  sinceMs?: number;
  untilMs?: number;
}

/** Digest binding a cursor to its filters, so a cursor from one query cannot silently page another. */
export function queryDigest(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('base64url').slice(0, 12);
}

export function encodeCursor(c: CursorState): string {
  return Buffer.from(
    JSON.stringify({ v: 1, o: c.order, s: c.position.score, m: c.position.member, q: c.query, a: c.sinceMs, b: c.untilMs }),
  ).toString('base64url');
}

/** Undefined for anything that is not a cursor this code made. */
export function decodeCursor(text: string): CursorState | undefined {
  if (text.length > 256 || !/^[A-Za-z0-9_-]+$/.test(text)) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (o.v !== 1 || (o.o !== 'asc' && o.o !== 'desc') || typeof o.s !== 'number' || !Number.isFinite(o.s)) return undefined;
  if (typeof o.m !== 'string' || decodeMember(o.m) === undefined || typeof o.q !== 'string') return undefined;
  // Times between 1970 and year 9999: anything else was not made here and would break date formatting downstream.
  const inRange = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0 && x <= 253402300799999;
  const bound = (x: unknown): x is number | undefined => x === undefined || inRange(x);
  if (!inRange(o.s) || !bound(o.a) || !bound(o.b)) return undefined;
  return {
    order: o.o,
    position: { score: o.s, member: o.m },
    query: o.q,
    ...(o.a !== undefined ? { sinceMs: o.a } : {}),
    ...(o.b !== undefined ? { untilMs: o.b } : {}),
  };
}

/* ---------- scanning ---------- */

export function scoreArg(n: number): string {
  return n === -Infinity ? '-inf' : n === Infinity ? '+inf' : String(n);
}

/** One index zset read in batches, in (score, member) order, strictly after a position. */
class SourceReader {
  private buffer: Position[] = [];
  private next: Position | undefined;
  exhausted = false;

  constructor(
    readonly key: string,
    private readonly order: Order,
    private readonly minScore: number,
    private readonly maxScore: number,
    after: Position | undefined,
  ) {
    this.next = after;
  }

  get head(): Position | undefined {
    return this.buffer[0];
  }
  get needsFetch(): boolean {
    return this.buffer.length === 0 && !this.exhausted;
  }
  shift(): Position | undefined {
    return this.buffer.shift();
  }

  /** Reads the next batch. Ties at the resume score are fetched inclusively and dropped here. */
  async fetch(redis: Redis, batch: number): Promise<void> {
    const after = this.next;
    let offset = 0;
    for (;;) {
      const lo = this.order === 'asc' && after !== undefined ? Math.max(after.score, this.minScore) : this.minScore;
      const hi = this.order === 'desc' && after !== undefined ? Math.min(after.score, this.maxScore) : this.maxScore;
      if (lo > hi) {
        this.exhausted = true;
        return;
      }
      const reply = (
        this.order === 'desc'
          ? await redis.zrange(this.key, scoreArg(hi), scoreArg(lo), 'BYSCORE', 'REV', 'LIMIT', offset, batch, 'WITHSCORES')
          : await redis.zrange(this.key, scoreArg(lo), scoreArg(hi), 'BYSCORE', 'LIMIT', offset, batch, 'WITHSCORES')
      ) as string[];
      const got: Position[] = [];
      for (let i = 0; i + 1 < reply.length; i += 2) got.push({ member: reply[i]!, score: Number(reply[i + 1]) });
      const fresh = after === undefined ? got : got.filter((p) => before(after, p, this.order));
      if (got.length < batch) this.exhausted = true;
      if (fresh.length > 0 || this.exhausted) {
        this.buffer = fresh;
        const last = got[got.length - 1];
        if (last !== undefined) this.next = last;
        return;
      }
      // A whole batch of already-seen ties at one score (rare: many records in one millisecond): page past it.
      offset += batch;
    }
  }
}

export interface Plan {
  /** What index serves the query, for the response and the logs: `container`, `ip`, `cidr`, `time`. */
  index: string;
  keys: string[];
  /** Container IDs the query is restricted to (checked on each record too). */
  containerIds?: ReadonlySet<string>;
  /** True when the filters can match nothing (an unknown container): no scan at all. */
  empty?: boolean;
}

export interface PlanOptions {
  /** A CIDR enumerating more addresses than this falls back to another index. */
  maxCidrAddresses?: number;
}

/** Chooses the most selective index: candidates are counted over the time range, the smallest wins. */
export async function planQuery(redis: Redis, keys: IndexKeys, f: FlowFilter, opts: PlanOptions = {}): Promise<Plan> {
  const directions = f.directions ?? DIRECTIONS;
  const candidates: Plan[] = [{ index: 'time', keys: directions.map((d) => keys.time(d)) }];
  let containerIds: Set<string> | undefined;
  if (f.container !== undefined || f.service !== undefined) {
    const ids = resolveContainers(await listContainers(redis, keys), f);
    if (ids.length === 0) return { index: 'container', keys: [], empty: true };
    containerIds = new Set(ids);
    candidates.push({ index: 'container', keys: ids.map((id) => keys.container(id)), containerIds });
  }
  for (const m of [f.ip, f.srcIp, f.dstIp]) {
    if (m === undefined) continue;
    if (m.exact !== undefined) {
      candidates.push({ index: 'ip', keys: [keys.ip(m.exact)] });
      continue;
    }
    // The addresses in the CIDR are one lexicographic range of reg:ipx: counted in O(log n), read only when few.
    const min = `[${m.first}`;
    const max = `(${m.last}}`; // '}' sorts right after '|', the separator: every member of the last address is below it
    const n = await redis.zlexcount(keys.ipSorted, min, max);
    const most = opts.maxCidrAddresses ?? 256;
    // No address of the CIDR was ever seen: nothing can match. Too many: the time or container index serves, the
    // filter applied per record, within the scan budget.
    if (n === 0) return { index: 'cidr', keys: [], empty: true };
    if (n > most) continue;
    const members = await redis.zrangebylex(keys.ipSorted, min, max, 'LIMIT', 0, most);
    const hits: string[] = [];
    for (const e of members) {
      const bar = e.indexOf('|');
      if (bar > 0) hits.push(e.slice(bar + 1));
    }
    candidates.push({ index: 'cidr', keys: hits.map((escaped) => keys.ip(decodeURIComponent(escaped))) });
  }
  for (const c of candidates) if (containerIds !== undefined) c.containerIds = containerIds;
  if (candidates.length === 1) return candidates[0]!;
  const lo = f.sinceMs ?? '-inf';
  const hi = f.untilMs ?? '+inf';
  const pl = redis.pipeline();
  for (const c of candidates) for (const k of c.keys) pl.zcount(k, lo, hi);
  const counts = (await pl.exec()) ?? [];
  let i = 0;
  let best = candidates[0]!;
  let bestCount = Infinity;
  for (const c of candidates) {
    let n = 0;
    for (let j = 0; j < c.keys.length; j++) n += Number(counts[i++]?.[1] ?? 0);
    if (n < bestCount) {
      best = c;
      bestCount = n;
    }
  }
  return best;
}

export interface ScanOptions {
  order: Order;
  after?: Position;
  /** Index entries examined before the scan stops and hands back a resume position. */
  scanBudget: number;
  batchSize?: number;
}

export interface Hit {
  direction: Direction;
  id: string;
  position: Position;
  record: FlowRecord;
}

export interface ScanResult {
  hits: Hit[];
  /** Position to resume from when the scan stopped before the end of the range. */
  resume?: Position;
  examined: number;
}

/**
 * Walks the plan's index keys as one merged sequence, fetches the referenced stream entries and keeps those that pass
 * every filter, until `limit` hits, the budget, or the end of the range. Entries trimmed from the stream but still
 * in an index are skipped.
 */
export async function scanFlows(redis: Redis, keys: IndexKeys, f: FlowFilter, plan: Plan, limit: number, opts: ScanOptions): Promise<ScanResult> {
  if (plan.empty === true || plan.keys.length === 0) return { hits: [], examined: 0 };
  const batch = opts.batchSize ?? Math.min(Math.max(limit * 2, 64), 1000);
  const minScore = f.sinceMs ?? -Infinity;
  const maxScore = f.untilMs ?? Infinity;
  const readers = plan.keys.map((k) => new SourceReader(k, opts.order, minScore, maxScore, opts.after));
  const hits: Hit[] = [];
  let examined = 0;
  let last: Position | undefined;

  for (;;) {
    const pending = readers.filter((r) => r.needsFetch);
    if (pending.length > 0) await Promise.all(pending.map((r) => r.fetch(redis, batch)));
    // Merge: take entries while every live reader has a buffered head, so nothing unfetched can come first.
    const candidates: Position[] = [];
    const want = Math.min(batch, opts.scanBudget - examined);
    while (candidates.length < want) {
      let pick: SourceReader | undefined;
      let blocked = false;
      for (const r of readers) {
        const h = r.head;
        if (h === undefined) {
          if (!r.exhausted) blocked = true;
          continue;
        }
        if (pick === undefined || before(h, pick.head!, opts.order)) pick = r;
      }
      if (blocked || pick === undefined) break;
      const p = pick.shift()!;
      if (last !== undefined && p.member === last.member) continue; // the same entry in two keys (src and dst index)
      candidates.push(p);
      last = p;
    }
    examined += candidates.length;
    const found = await fetchEntries(redis, keys, candidates);
    for (let i = 0; i < candidates.length; i++) {
      const entry = found[i];
      if (entry === undefined || !recordMatches(entry.record, f, plan.containerIds)) continue;
      hits.push({ ...entry, position: candidates[i]! });
      if (hits.length === limit) {
        const more = i < candidates.length - 1 || readers.some((r) => r.head !== undefined || !r.exhausted);
        return { hits, examined, ...(more ? { resume: candidates[i]! } : {}) };
      }
    }
    const done = readers.every((r) => r.head === undefined && r.exhausted);
    if (done) return { hits, examined };
    if (examined >= opts.scanBudget && last !== undefined) return { hits, examined, resume: last };
  }
}

async function fetchEntries(redis: Redis, keys: IndexKeys, positions: Position[]): Promise<({ direction: Direction; id: string; record: FlowRecord } | undefined)[]> {
  if (positions.length === 0) return [];
  const pl = redis.pipeline();
  const refs = positions.map((p) => decodeMember(p.member));
  for (const ref of refs) {
    if (ref !== undefined) pl.xrange(keys.stream(ref.direction), ref.id, ref.id);
    else pl.echo('');
  }
  const replies = (await pl.exec()) ?? [];
  return refs.map((ref, i) => {
    const reply = replies[i];
    if (ref === undefined || reply === undefined || reply[0] !== null) return undefined;
    const fields = (reply[1] as [string, string[]][])[0]?.[1];
    const record = fields !== undefined ? decodeEntry(fields) : undefined;
    return record !== undefined ? { direction: ref.direction, id: ref.id, record } : undefined;
  });
}
