import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { BUCKET_MS, canonicalIp, IndexKeys, parseInventoryMember, REVERSED, type TopDimension } from './indexer.js';
import { rangeContains } from '../net/ip.js';
import { listContainers, planQuery, scanFlows, type FlowFilter, type Position } from './query.js';

/* ---------- top-N ---------- */

export interface TopOptions {
  by: TopDimension;
  directions?: Direction[];
  sinceMs: number;
  untilMs: number;
  limit: number;
  /** Up to this many counter entries in the range, a plain union answers; above, the threshold algorithm. */
  unionMaxEntries?: number;
  /** Counter entries read (ZRANGE) or looked up (ZMSCORE) at most; past it the answer is the best found, `exact: false`. */
  maxReadEntries: number;
}

export interface TopEntry {
  value: string;
  count: number;
  /** For `by=container`: the container's name and compose service when known. */
  name?: string;
  service?: string;
}

export interface TopResult {
  entries: TopEntry[];
  /** Distinct values counted in the range, when the answer merged all of them (not when the top settled early). */
  distinct?: number;
  /** The range actually counted: the requested one widened to whole minutes (the counters' resolution). */
  coveredSinceMs: number;
  coveredUntilMs: number;
  /** False when the read budget ran out before the top settled: counts are exact, the ranking may miss values. */
  exact: boolean;
}

/** Counter buckets covering [since, until] at minute resolution: whole 10-minute buckets inside, minutes at the edges. */
export function topBuckets(sinceMs: number, untilMs: number): { res: 'm' | 't'; bucket: number }[] {
  const out: { res: 'm' | 't'; bucket: number }[] = [];
  const perTen = BUCKET_MS.t / BUCKET_MS.m;
  const last = Math.floor(untilMs / BUCKET_MS.m);
  for (let m = Math.floor(sinceMs / BUCKET_MS.m); m <= last; ) {
    if (m % perTen === 0 && m + perTen - 1 <= last) {
      out.push({ res: 't', bucket: m / perTen });
      m += perTen;
    } else {
      out.push({ res: 'm', bucket: m });
      m += 1;
    }
  }
  return out;
}

/** Counter entries in a range below which a plain union is the faster answer. */
const UNION_MAX_ENTRIES = 20_000;

const byCount = (a: TopEntry, b: TopEntry): number => b.count - a.count || (a.value < b.value ? 1 : a.value > b.value ? -1 : 0);

/**
 * Exact top-N by a threshold algorithm: read each bucket's heaviest values; a value's total is at least what was read
 * of it and at most that plus, for every bucket where it was not read, that bucket's last-read count. Only values
 * whose upper bound reaches the N-th lower bound get their exact totals (ZMSCORE over every bucket), and the answer
 * stands once the N-th exact total beats what a value never read could reach. Traffic is skewed, so a few dozen
 * values per bucket usually settle it, where a union would merge every distinct value of the range. Undefined when
 * it does not settle within a few rounds.
 */
async function topByThreshold(
  redis: Redis,
  sources: string[],
  limit: number,
  maxRead: number,
): Promise<{ entries: TopEntry[]; distinct?: number; exact: boolean }> {
  const exact = new Map<string, number>();
  let read = 0;
  let ranked: TopEntry[] = [];
  const first = Math.max(limit * 4, 64);
  for (let depth = Math.min(first, Math.max(1, Math.floor(maxRead / sources.length))); depth <= 16_384; depth *= 4) {
    if (read + depth * sources.length > maxRead) break;
    read += depth * sources.length;
    const pl = redis.pipeline();
    for (const k of sources) pl.zrange(k, 0, String(depth - 1), 'REV', 'WITHSCORES');
    const replies = (await pl.exec()) ?? [];
    let threshold = 0;
    let exhausted = true;
    const partial = new Map<string, { sum: number; boundSeen: number }>();
    for (const [err, reply] of replies) {
      if (err) throw err;
      const flat = reply as string[];
      const full = flat.length / 2 === depth;
      const bound = full ? Number(flat[flat.length - 1]) : 0;
      if (full) exhausted = false;
      threshold += bound;
      for (let i = 0; i < flat.length; i += 2) {
        const p = partial.get(flat[i]!) ?? { sum: 0, boundSeen: 0 };
        p.sum += Number(flat[i + 1]);
        p.boundSeen += bound;
        partial.set(flat[i]!, p);
      }
    }
    const lowers: number[] = [];
    for (const [v, p] of partial) lowers.push(exact.get(v) ?? p.sum);
    lowers.sort((a, b) => b - a);
    const floor = lowers[limit - 1] ?? 0;
    const candidates: { v: string; upper: number }[] = [];
    for (const [v, p] of partial) {
      const upper = p.sum + threshold - p.boundSeen;
      if (!exact.has(v) && upper >= floor) candidates.push({ v, upper });
    }
    // Exact totals cost one lookup per value and source: the most promising first, within the budget.
    candidates.sort((a, b) => b.upper - a.upper);
    const affordable = Math.max(0, Math.floor((maxRead - read) / sources.length));
    const need = candidates.slice(0, affordable).map((c) => c.v);
    const cut = need.length < candidates.length;
    if (need.length > 0) {
      read += need.length * sources.length;
      const sums = new Array<number>(need.length).fill(0);
      // In slices: a command's arguments are bounded, and no array is ever spread into one call.
      for (let from = 0; from < need.length; from += 1000) {
        const slice = need.slice(from, from + 1000);
        const sp = redis.pipeline();
        for (const k of sources) sp.zmscore(k, slice);
        for (const [err, reply] of (await sp.exec()) ?? []) {
          if (err) throw err;
          (reply as (string | null)[]).forEach((v, i) => {
            if (v !== null) sums[from + i]! += Number(v);
          });
        }
      }
      need.forEach((v, i) => exact.set(v, sums[i]!));
    }
    ranked = [...exact].map(([value, count]) => ({ value, count })).sort(byCount);
    if (exhausted && !cut) return { entries: ranked.slice(0, limit), distinct: partial.size, exact: true };
    const nth = ranked[limit - 1];
    // Strictly above: a value never read could tie the N-th.
    if (!cut && nth !== undefined && nth.count > threshold) return { entries: ranked.slice(0, limit), exact: true };
    if (cut) break;
  }
  return { entries: ranked.slice(0, limit), exact: false };
}

/** The whole-range merge: one atomic MULTI into a scratch key that never outlives it. */
async function topByUnion(redis: Redis, keys: IndexKeys, sources: string[], limit: number): Promise<{ entries: TopEntry[]; distinct: number }> {
  const scratch = keys.scratch(randomBytes(9).toString('base64url'));
  const replies = await redis
    .multi()
    .zunionstore(scratch, sources.length, sources, 'AGGREGATE', 'SUM')
    .zrange(scratch, 0, String(limit - 1), 'REV', 'WITHSCORES')
    .del(scratch)
    .exec();
  if (!replies) throw new Error('top-N transaction aborted');
  for (const [err] of replies) if (err) throw err;
  const flat = replies[1]![1] as string[];
  const entries: TopEntry[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) entries.push({ value: flat[i]!, count: Number(flat[i + 1]) });
  return { entries, distinct: Number(replies[0]![1]) };
}

/** Top values of one dimension over a range, from the per-bucket counters. */
export async function topN(redis: Redis, keys: IndexKeys, opts: TopOptions): Promise<TopResult> {
  const sources: string[] = [];
  for (const b of topBuckets(opts.sinceMs, opts.untilMs)) {
    for (const d of opts.directions ?? DIRECTIONS) sources.push(keys.top(b.res, d, opts.by, b.bucket));
  }
  const pl = redis.pipeline();
  for (const k of sources) pl.zcard(k);
  const cards = ((await pl.exec()) ?? []).map(([err, n]) => {
    if (err) throw err;
    return Number(n);
  });
  const live = sources.filter((_, i) => cards[i]! > 0);
  if (live.length === 0) return { entries: [], distinct: 0, exact: true, ...covered(opts) };
  // Merging everything is cheapest while the range holds few values (containers, countries); many (addresses) need the threshold.
  let total = 0;
  for (const c of cards) total += c;
  // The union merges every entry in Redis at once, so only while there are few; never as a fallback.
  const found =
    total <= Math.min(opts.unionMaxEntries ?? UNION_MAX_ENTRIES, opts.maxReadEntries)
      ? { ...(await topByUnion(redis, keys, live, opts.limit)), exact: true }
      : await topByThreshold(redis, live, opts.limit, opts.maxReadEntries);
  const entries = found.entries;
  if (opts.by === 'container' && entries.length > 0) {
    const meta = new Map((await listContainers(redis, keys)).map((c) => [c.id, c]));
    for (const e of entries) {
      const c = meta.get(e.value);
      if (c?.name !== undefined) e.name = c.name;
      if (c?.service !== undefined) e.service = c.service;
    }
  }
  return { entries, ...(found.distinct !== undefined ? { distinct: found.distinct } : {}), exact: found.exact, ...covered(opts) };
}

/** The counted range: the requested one widened to whole minutes. */
function covered(opts: TopOptions): { coveredSinceMs: number; coveredUntilMs: number } {
  return {
    coveredSinceMs: Math.floor(opts.sinceMs / BUCKET_MS.m) * BUCKET_MS.m,
    coveredUntilMs: (Math.floor(opts.untilMs / BUCKET_MS.m) + 1) * BUCKET_MS.m - 1,
  };
}

/* ---------- destination inventory ---------- */

export interface InventoryEntry {
  direction: Direction;
  ip: string;
  transport?: string;
  port?: number;
  firstSeenMs: number;
  lastSeenMs: number;
}

/**
 * Every remote address and service port a container exchanged packets with, with first and last seen; with
 * `newSinceMs`, only those first seen at or after it. Newest first.
 */
export async function inventory(redis: Redis, keys: IndexKeys, containerId: string, opts: { newSinceMs?: number; limit: number }): Promise<{ entries: InventoryEntry[]; total: number }> {
  const first = keys.inventoryFirst(containerId);
  const lo = opts.newSinceMs !== undefined ? String(opts.newSinceMs) : '-inf';
  // Newest first, `limit` of them, read by Redis in that order: a container with a million destinations costs a page.
  const [flat, total] = await Promise.all([
    redis.zrange(first, '+inf', lo, 'BYSCORE', 'REV', 'LIMIT', 0, opts.limit, 'WITHSCORES') as Promise<string[]>,
    redis.zcount(first, lo, '+inf'),
  ]);
  const page: { member: string; first: number }[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) page.push({ member: flat[i]!, first: Number(flat[i + 1]) });
  const last = page.length > 0 ? await redis.zmscore(keys.inventoryLast(containerId), page.map((m) => m.member)) : [];
  const entries: InventoryEntry[] = [];
  page.forEach((m, i) => {
    const parsed = parseInventoryMember(m.member);
    if (parsed === undefined) return;
    const l = last[i];
    entries.push({ ...parsed, firstSeenMs: m.first, lastSeenMs: l !== null && l !== undefined ? Number(l) : m.first });
  });
  return { entries, total };
}

/* ---------- connections ---------- */

export interface Connection {
  direction: Direction;
  transport?: string;
  /** The initiator (source of the first SYN, or of the first packet seen). */
  source: { ip?: string; port?: number };
  destination: { ip?: string; port?: number };
  firstSeenMs: number;
  lastSeenMs: number;
  packets: number;
  bytes: number;
  /** TCP flags seen on any packet of the connection. */
  tcpFlags: string[];
  logPrefix?: string;
  container?: { id?: string; name?: string };
}

export interface ConnectionOptions {
  /** Silence after which the same 5-tuple counts as a new connection. */
  idleGapMs: number;
  limit: number;
  /** Index entries examined per call; past it the result carries `resume`. */
  scanBudget: number;
  /** Resume strictly after this position (from a previous call's `resume`). */
  after?: Position;
}

export interface ConnectionResult {
  connections: Connection[];
  packets: number;
  /** Where the next call goes on when the scan budget ran out before the end of the range. */
  resume?: Position;
  /** Connections found beyond `limit` (the most recently active are kept). */
  omitted: number;
}


function endpointKey(e: { ip?: string; port?: number }): string {
  return `${(e.ip !== undefined ? canonicalIp(e.ip) : undefined) ?? e.ip ?? ''}#${e.port ?? ''}`;
}

/** Both directions of one conversation share this key; the rule's prefix is part of it, since each LOG rule sees every packet. */
export function conversationKey(r: FlowRecord): string {
  const a = endpointKey(r.source);
  const b = endpointKey(r.destination);
  return `${r.network.transport ?? ''}|${a < b ? `${a}|${b}` : `${b}|${a}`}|${r.log?.prefix ?? ''}`;
}

function packetTimeMs(r: FlowRecord, fallback: number): number {
  const t = Date.parse(r['@timestamp']);
  return Number.isFinite(t) ? t : fallback;
}

/**
 * Folds per-packet records (in time order) into connections: one per 5-tuple and rule, split when the tuple is idle
 * longer than `idleGapMs` or when a fresh SYN follows a FIN/RST.
 */
export class ConnectionFolder {
  private readonly open = new Map<string, { conn: Connection; closed: boolean }>();
  readonly done: Connection[] = [];

  constructor(private readonly idleGapMs: number) {}

  add(r: FlowRecord, timeMs: number): void {
    const key = conversationKey(r);
    const flags = r.iptables.tcp?.flags ?? [];
    const synOnly = flags.includes('SYN') && !flags.includes('ACK');
    let cur = this.open.get(key);
    if (cur !== undefined && (timeMs - cur.conn.lastSeenMs > this.idleGapMs || (cur.closed && synOnly))) {
      this.done.push(cur.conn);
      cur = undefined;
    }
    if (cur === undefined) {
      // A SYN-ACK first means the SYN was missed: the initiator is the SYN-ACK's destination.
      const reply = flags.includes('SYN') && flags.includes('ACK');
      const from = reply ? r.destination : r.source;
      const to = reply ? r.source : r.destination;
      cur = {
        closed: false,
        conn: {
          direction: reply ? REVERSED[r.network.direction] : r.network.direction,
          ...(r.network.transport !== undefined ? { transport: r.network.transport } : {}),
          source: { ip: from.ip, port: from.port },
          destination: { ip: to.ip, port: to.port },
          firstSeenMs: timeMs,
          lastSeenMs: timeMs,
          packets: 0,
          bytes: 0,
          tcpFlags: [],
          ...(r.log?.prefix !== undefined ? { logPrefix: r.log.prefix } : {}),
        },
      };
      this.open.set(key, cur);
    }
    const c = cur.conn;
    c.packets += 1;
    c.bytes += r.iptables.length ?? r.network.bytes ?? 0;
    c.firstSeenMs = Math.min(c.firstSeenMs, timeMs);
    c.lastSeenMs = Math.max(c.lastSeenMs, timeMs);
    for (const f of flags) if (!c.tcpFlags.includes(f)) c.tcpFlags.push(f);
    if (flags.includes('FIN') || flags.includes('RST')) cur.closed = true;
    if (c.container === undefined && r.container?.id !== undefined) {
      c.container = { id: r.container.id, ...(r.container.name !== undefined ? { name: r.container.name } : {}) };
    }
  }

  finish(): Connection[] {
    for (const { conn } of this.open.values()) this.done.push(conn);
    this.open.clear();
    return this.done;
  }
}

/** Filters that describe a connection's orientation are applied to connections, not to their packets. */
function packetFilter(f: FlowFilter): FlowFilter {
  const { directions: _d, srcIp: _si, dstIp: _di, srcPort: _sp, dstPort: _dp, ...rest } = f;
  return rest;
}

function connectionMatches(c: Connection, f: FlowFilter): boolean {
  if (f.directions !== undefined && !f.directions.includes(c.direction)) return false;
  if (f.srcIp !== undefined && !rangeContains(f.srcIp, c.source.ip)) return false;
  if (f.dstIp !== undefined && !rangeContains(f.dstIp, c.destination.ip)) return false;
  if (f.srcPort !== undefined && c.source.port !== f.srcPort) return false;
  if (f.dstPort !== undefined && c.destination.port !== f.dstPort) return false;
  return true;
}

/** Connections whose packets fall in the filter's time range, newest activity first. */
export async function connections(redis: Redis, keys: IndexKeys, f: FlowFilter, opts: ConnectionOptions): Promise<ConnectionResult> {
  const pf = packetFilter(f);
  const plan = await planQuery(redis, keys, pf);
  const folder = new ConnectionFolder(opts.idleGapMs);
  let after: Position | undefined = opts.after;
  let packets = 0;
  let budget = opts.scanBudget;
  let resume: Position | undefined;
  for (;;) {
    // Small batches: each one's records are decoded and folded in one synchronous stretch of the event loop.
    const res = await scanFlows(redis, keys, pf, plan, 2000, { order: 'asc', scanBudget: Math.min(budget, 20_000), batchSize: 256, ...(after ? { after } : {}) });
    for (const h of res.hits) folder.add(h.record, packetTimeMs(h.record, h.position.score));
    packets += res.hits.length;
    budget -= res.examined;
    if (res.resume === undefined) break;
    if (budget <= 0) {
      resume = res.resume;
      break;
    }
    after = res.resume;
  }
  const all = folder.finish().filter((c) => connectionMatches(c, f));
  all.sort((a, b) => b.lastSeenMs - a.lastSeenMs);
  return { connections: all.slice(0, opts.limit), packets, ...(resume ? { resume } : {}), omitted: Math.max(0, all.length - opts.limit) };
}
