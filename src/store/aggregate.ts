import type { Redis } from 'ioredis';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { canonicalIp } from '../net/ip.js';
import { DIRECTION_CODE, parseInventoryMember, REVERSED, type TopDimension } from './indexer.js';
import { BUCKET_MS, bucketStartMs } from './keys.js';
import { addressMatches, planQuery, scanFlows, type FlowFilter, type Position, type StoreReader } from './query.js';

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
  maxReadEntries?: number;
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
  /** The range actually counted: the requested one widened to whole partitions (10-minute buckets). */
  coveredSinceMs: number;
  coveredUntilMs: number;
  /** True when the range held more partitions than one answer reads: only the newest were counted (see covered). */
  partial: boolean;
  /** False when the read budget ran out before the top settled: counts are exact, the ranking may miss values. */
  exact: boolean;
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

/** The whole-range merge, on the client (each source is one key: any hash slot). */
async function topByUnion(redis: Redis, sources: string[], limit: number): Promise<{ entries: TopEntry[]; distinct: number }> {
  const pl = redis.pipeline();
  for (const k of sources) pl.zrange(k, '0', '-1', 'WITHSCORES');
  const sums = new Map<string, number>();
  for (const [err, reply] of (await pl.exec()) ?? []) {
    if (err) throw err;
    const flat = reply as string[];
    for (let i = 0; i + 1 < flat.length; i += 2) sums.set(flat[i]!, (sums.get(flat[i]!) ?? 0) + Number(flat[i + 1]));
  }
  const entries = [...sums].map(([value, count]) => ({ value, count })).sort(byCount);
  return { entries: entries.slice(0, limit), distinct: sums.size };
}

/** Counter keys read per answer at most. */
const MAX_TOP_SOURCES = 3000;

/** Top values of one dimension over a range, from the per-partition counters. */
export async function topN(reader: StoreReader, opts: TopOptions): Promise<TopResult> {
  const { redis, keys } = reader;
  const { sinceMs, untilMs } = reader.clamp(opts.sinceMs, opts.untilMs);
  const codes = (opts.directions ?? DIRECTIONS).map((d) => DIRECTION_CODE[d]);
  const parts = await reader.partitions(sinceMs, untilMs, 'desc', Math.floor(MAX_TOP_SOURCES / codes.length) + 1);
  const partial = parts.length * codes.length > MAX_TOP_SOURCES;
  if (partial) parts.pop();
  const sources: string[] = [];
  for (const p of parts) for (const code of codes) sources.push(keys.top(p.name, opts.by, code));
  const covered = {
    coveredSinceMs: parts.length > 0 ? bucketStartMs(parts[parts.length - 1]!.bucket) : bucketStartMs(Math.floor(sinceMs / BUCKET_MS)),
    // The newest bucket's end may lie ahead: nothing is counted past what was asked or now, whichever is later.
    coveredUntilMs: Math.min(
      parts.length > 0 ? bucketStartMs(parts[0]!.bucket) + BUCKET_MS - 1 : bucketStartMs(Math.floor(untilMs / BUCKET_MS)) + BUCKET_MS - 1,
      Math.max(untilMs, reader.now()),
    ),
    partial,
  };
  const pl = redis.pipeline();
  for (const k of sources) pl.zcard(k);
  const cards = ((await pl.exec()) ?? []).map(([err, n]) => {
    if (err) throw err;
    return Number(n);
  });
  const live = sources.filter((_, i) => cards[i]! > 0);
  if (live.length === 0) return { entries: [], distinct: 0, exact: true, ...covered };
  // Merging everything is cheapest while the range holds few values (containers, countries); many (addresses) need the threshold.
  let total = 0;
  for (const c of cards) total += c;
  const maxRead = opts.maxReadEntries ?? Number.MAX_SAFE_INTEGER;
  // The union reads every entry, so only while there are few; never as a fallback.
  const found =
    total <= Math.min(opts.unionMaxEntries ?? UNION_MAX_ENTRIES, maxRead)
      ? { ...(await topByUnion(redis, live, opts.limit)), exact: true }
      : await topByThreshold(redis, live, opts.limit, maxRead);
  const entries = found.entries;
  if (opts.by === 'container' && entries.length > 0) {
    const reg = await reader.registries();
    for (const e of entries) {
      const meta = reg.containers.get(e.value);
      if (meta === undefined) continue;
      e.value = meta.id;
      if (meta.name !== undefined) e.name = meta.name;
      const service = meta.labels?.['com.docker.compose.service'];
      if (service !== undefined) e.service = service;
    }
  }
  return { entries, ...(found.distinct !== undefined ? { distinct: found.distinct } : {}), exact: found.exact, ...covered };
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

/** Partitions an inventory answer reads at most (the newest). */
const MAX_INVENTORY_PARTITIONS = 2000;

/**
 * Every remote address and service port a container exchanged packets with, with first and last seen; with
 * `newSinceMs`, only those first seen at or after it. Newest first. `partial` when the retained range held more
 * partitions than one answer reads (the newest were read).
 */
export async function inventory(
  reader: StoreReader,
  containerId: string,
  opts: { newSinceMs?: number; limit: number },
): Promise<{ entries: InventoryEntry[]; total: number; partial: boolean }> {
  const { redis, keys } = reader;
  const { sinceMs, untilMs } = reader.clamp(undefined, undefined);
  const parts = await reader.partitions(sinceMs, untilMs, 'desc', MAX_INVENTORY_PARTITIONS + 1);
  const partial = parts.length > MAX_INVENTORY_PARTITIONS;
  if (partial) parts.pop();
  const short = containerId.slice(0, 12);
  const pl = redis.pipeline();
  for (const p of parts) {
    pl.zrange(keys.inventoryFirst(p.name, short), '0', '-1', 'WITHSCORES');
    pl.zrange(keys.inventoryLast(p.name, short), '0', '-1', 'WITHSCORES');
  }
  const replies = (await pl.exec()) ?? [];
  const seen = new Map<string, { first: number; last: number }>();
  for (let i = 0; i < replies.length; i += 2) {
    const [e1, firsts] = replies[i]!;
    const [e2, lasts] = replies[i + 1]!;
    if (e1) throw e1;
    if (e2) throw e2;
    const f = firsts as string[];
    const l = lasts as string[];
    for (let k = 0; k + 1 < f.length; k += 2) {
      const m = seen.get(f[k]!);
      const t = Number(f[k + 1]);
      if (m === undefined) seen.set(f[k]!, { first: t, last: t });
      else m.first = Math.min(m.first, t);
    }
    for (let k = 0; k + 1 < l.length; k += 2) {
      const m = seen.get(l[k]!);
      if (m !== undefined) m.last = Math.max(m.last, Number(l[k + 1]));
    }
  }
  const members = [...seen].filter(([, v]) => opts.newSinceMs === undefined || v.first >= opts.newSinceMs).sort((a, b) => b[1].first - a[1].first);
  const entries: InventoryEntry[] = [];
  for (const [member, v] of members.slice(0, opts.limit)) {
    const parsed = parseInventoryMember(member);
    if (parsed !== undefined) entries.push({ ...parsed, firstSeenMs: v.first, lastSeenMs: v.last });
  }
  return { entries, total: members.length, partial };
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
  /** Packets examined before giving up with `truncated`. */
  scanBudget: number;
}

export interface ConnectionResult {
  connections: Connection[];
  packets: number;
  /** True when the scan budget ran out before the end of the range: later packets were not aggregated. */
  truncated: boolean;
  /** Where the next request goes on (its packets are folded apart: a connection may continue there). */
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
  if (f.srcIp !== undefined && !addressMatches(f.srcIp, c.source.ip)) return false;
  if (f.dstIp !== undefined && !addressMatches(f.dstIp, c.destination.ip)) return false;
  if (f.srcPort !== undefined && c.source.port !== f.srcPort) return false;
  if (f.dstPort !== undefined && c.destination.port !== f.dstPort) return false;
  return true;
}

/** Connections whose packets fall in the filter's time range, newest activity first. */
export async function connections(reader: StoreReader, f: FlowFilter, opts: ConnectionOptions & { after?: Position }): Promise<ConnectionResult> {
  const pf = packetFilter(f);
  const plan = await planQuery(reader, pf);
  const res = await scanFlows(reader, pf, plan, opts.scanBudget, { order: 'asc', scanBudget: opts.scanBudget, ...(opts.after ? { after: opts.after } : {}) });
  const hits = res.hits.map((h) => ({ record: h.record, t: packetTimeMs(h.record, 0) })).sort((a, b) => a.t - b.t);
  const folder = new ConnectionFolder(opts.idleGapMs);
  for (const h of hits) folder.add(h.record, h.t);
  const all = folder.finish().filter((c) => connectionMatches(c, f));
  all.sort((a, b) => b.lastSeenMs - a.lastSeenMs);
  return { connections: all.slice(0, opts.limit), packets: hits.length, truncated: res.resume !== undefined, ...(res.resume ? { resume: res.resume } : {}), omitted: Math.max(0, all.length - opts.limit) };
}
