import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { parseCidr, rangeContains, type IpRange } from '../net/ip.js';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { decodeFlat, SHORT_ID_RE, type ContainerMeta, type Registries } from './encode.js';
import { CONTAINER_ID_RE, DIRECTION_CODE, EPHEMERAL_MIN } from './indexer.js';
import { BUCKET_MS, bucketOf, bucketStartMs, parsePartition, type Partition, type StoreKeys } from './keys.js';

/* ---------- addresses ---------- */

/** An address or CIDR filter: the range of its sortable forms (net/ip.ts), which is what the address index holds. */
export type AddressMatch = IpRange;
export const parseAddressMatch = parseCidr;
export const addressMatches = rangeContains;

/* ---------- filters ---------- */

export interface FlowFilter {
  directions?: Direction[];
  /** Container name, or a prefix of its ID (hex); matches the container on either side. */
  container?: string;
  /** Compose service (`com.docker.compose.service`). */
  service?: string;
  host?: string;
  /** Address or CIDR on either side, on the source, on the destination. */
  ip?: AddressMatch;
  srcIp?: AddressMatch;
  dstIp?: AddressMatch;
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

export function containerInfo(meta: ContainerMeta): ContainerInfo {
  const service = meta.labels?.['com.docker.compose.service'];
  return {
    id: meta.id,
    ...(meta.name !== undefined ? { name: meta.name } : {}),
    ...(service !== undefined ? { service } : {}),
    ...(meta.image !== undefined ? { image: meta.image } : {}),
  };
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

/** Which side(s) of a record the matched containers are on. */
export type ContainerRole = 'source' | 'destination' | 'both';

function sideOf(r: FlowRecord, ref: FlowRecord['container']): 'source' | 'destination' | undefined {
  if (ref === undefined) return undefined;
  if (ref === r.peer_container) return 'destination';
  const dir = r.network.direction;
  return dir === 'ingress' || dir === 'host-to-container' ? 'destination' : 'source';
}

/** The role of the containers `ids` in a record, or undefined when neither side is one of them. */
export function containerRole(r: FlowRecord, ids: ReadonlySet<string>): ContainerRole | undefined {
  const roles = new Set<string>();
  for (const ref of [r.container, r.peer_container]) {
    if (ref?.id !== undefined && ids.has(ref.id)) roles.add(sideOf(r, ref)!);
  }
  if (roles.size === 0) return undefined;
  return roles.size === 2 ? 'both' : (roles.values().next().value as 'source' | 'destination');
}

/**
 * The in-memory half of a query: every filter, whatever index fetched the candidate. `containerIds`: the containers
 * the container/service filters resolved to (on either side); without it (live tail) the record's own fields decide.
 */
export function recordMatches(r: FlowRecord, f: FlowFilter, containerIds?: ReadonlySet<string>): boolean {
  const dir = r.network.direction;
  if (f.directions !== undefined && !f.directions.includes(dir)) return false;
  if (f.sinceMs !== undefined || f.untilMs !== undefined) {
    const t = Date.parse(r['@timestamp']);
    if ((f.sinceMs !== undefined && !(t >= f.sinceMs)) || (f.untilMs !== undefined && !(t <= f.untilMs))) return false;
  }
  if (containerIds !== undefined) {
    if (containerRole(r, containerIds) === undefined) return false;
  } else if (f.container !== undefined || f.service !== undefined) {
    const infos: ContainerInfo[] = [];
    for (const c of [r.container, r.peer_container]) {
      if (c?.id === undefined || c.unattributed === true) continue;
      const service = c.labels?.['com.docker.compose.service'];
      infos.push({ id: c.id, ...(c.name ? { name: c.name } : {}), ...(service ? { service } : {}) });
    }
    if (resolveContainers(infos, f).length === 0) return false;
  }
  if (f.host !== undefined && r.host?.name !== f.host) return false;
  if (f.ip !== undefined && !addressMatches(f.ip, r.source.ip) && !addressMatches(f.ip, r.destination.ip)) return false;
  if (f.srcIp !== undefined && !addressMatches(f.srcIp, r.source.ip)) return false;
  if (f.dstIp !== undefined && !addressMatches(f.dstIp, r.destination.ip)) return false;
  if (f.port !== undefined && r.source.port !== f.port && r.destination.port !== f.port) return false;
  if (f.srcPort !== undefined && r.source.port !== f.srcPort) return false;
  if (f.dstPort !== undefined && r.destination.port !== f.dstPort) return false;
  if (f.transport !== undefined && r.network.transport !== f.transport) return false;
  if (f.country !== undefined && !endpointHasCountry(r, f.country)) return false;
  if (f.asn !== undefined && r.source.as?.number !== f.asn && r.destination.as?.number !== f.asn) return false;
  if (f.prefix !== undefined && r.log?.prefix !== f.prefix) return false;
  return true;
}

/* ---------- the store as read ---------- */

export type Order = 'desc' | 'asc';

export interface StoreReaderOptions {
  /** Ranges are clamped to this far back (the writer's retention); 0 = no age limit. */
  retentionMs: number;
  now?: () => number;
  /** How long the registries read are reused. Default 1 s. */
  registryTtlMs?: number;
}

export interface LoadedRegistries extends Registries {
  list: ContainerInfo[];
}

/**
 * What every query needs: the registries (cached briefly), the live partitions in a range, and the clamp to retention
 * that keeps every range bounded.
 */
export class StoreReader {
  readonly now: () => number;
  private cache: { at: number; value: Promise<LoadedRegistries> } | undefined;

  constructor(
    readonly redis: Redis,
    readonly keys: StoreKeys,
    readonly opts: StoreReaderOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  registries(): Promise<LoadedRegistries> {
    const now = Date.now();
    if (this.cache === undefined || now - this.cache.at > (this.opts.registryTtlMs ?? 1000)) {
      const value = this.loadRegistries();
      value.catch(() => {
        if (this.cache?.value === value) this.cache = undefined;
      });
      this.cache = { at: now, value };
    }
    return this.cache.value;
  }

  private async loadRegistries(): Promise<LoadedRegistries> {
    const [ctr, as] = await Promise.all([this.redis.hgetall(this.keys.containers), this.redis.hgetall(this.keys.asNames)]);
    const containers = new Map<string, ContainerMeta>();
    const list: ContainerInfo[] = [];
    for (const [short, json] of Object.entries(ctr)) {
      if (!SHORT_ID_RE.test(short)) continue;
      let meta: ContainerMeta;
      try {
        meta = JSON.parse(json) as ContainerMeta;
      } catch {
        continue;
      }
      if (typeof meta !== 'object' || meta === null || typeof meta.id !== 'string' || !CONTAINER_ID_RE.test(meta.id)) continue;
      containers.set(short, meta);
      list.push(containerInfo(meta));
    }
    return { containers, asNames: new Map(Object.entries(as)), list };
  }

  /** The earliest time any record can still be stored at. */
  get horizonMs(): number {
    return this.opts.retentionMs > 0 ? bucketStartMs(bucketOf(this.now() - this.opts.retentionMs)) : 0;
  }

  /** The range clamped to what the store can hold: never before retention, never unbounded. */
  clamp(sinceMs: number | undefined, untilMs: number | undefined): { sinceMs: number; untilMs: number } {
    const horizon = this.horizonMs;
    const latest = this.now() + 7 * 86_400_000;
    const since = Math.min(Math.max(sinceMs ?? horizon, horizon), latest);
    const until = Math.max(Math.min(untilMs ?? latest, latest), since);
    return { sinceMs: since, untilMs: until };
  }

  /**
   * Live partitions with buckets in the range, in query order: (bucket, writer) ascending, or the reverse. At most
   * `limit` of them, starting at (and including) `from` when given.
   */
  async partitions(sinceMs: number, untilMs: number, order: Order, limit: number, from?: string): Promise<Partition[]> {
    let lo = bucketOf(sinceMs);
    let hi = bucketOf(untilMs);
    const start = from !== undefined ? parsePartition(from) : undefined;
    if (start !== undefined) {
      if (order === 'asc') lo = Math.max(lo, start.bucket);
      else hi = Math.min(hi, start.bucket);
    }
    if (lo > hi) return [];
    // Writers of the start bucket before the cursor's are skipped below: fetch a few more than asked.
    const names =
      order === 'asc'
        ? await this.redis.zrange(this.keys.partitions, String(lo), String(hi), 'BYSCORE', 'LIMIT', 0, limit + 64)
        : await this.redis.zrange(this.keys.partitions, String(hi), String(lo), 'BYSCORE', 'REV', 'LIMIT', 0, limit + 64);
    const out: Partition[] = [];
    for (const name of names) {
      const p = parsePartition(name);
      if (p === undefined) continue;
      if (start !== undefined && p.bucket === start.bucket && (order === 'asc' ? p.writer < start.writer : p.writer > start.writer)) continue;
      out.push(p);
      if (out.length === limit) break;
    }
    return out;
  }
}

/** Partition order: (bucket, writer). */
export function comparePartitions(a: Partition, b: Partition): number {
  return a.bucket - b.bucket || (a.writer < b.writer ? -1 : a.writer > b.writer ? 1 : 0);
}

/* ---------- positions and cursors ---------- */

/** A position in the total order every query shares: partition (bucket, writer), then entry number. */
export interface Position {
  partition: string;
  n: number;
}

export interface CursorState {
  order: Order;
  /** Resume strictly after this entry. */
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
  return Buffer.from(JSON.stringify({ v: 2, o: c.order, p: c.position.partition, n: c.position.n, q: c.query, a: c.sinceMs, b: c.untilMs })).toString(
    'base64url',
  );
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
  if (o.v !== 2 || (o.o !== 'asc' && o.o !== 'desc') || typeof o.p !== 'string' || parsePartition(o.p) === undefined) return undefined;
  if (typeof o.n !== 'number' || !Number.isInteger(o.n) || o.n < -1 || o.n > 0x100000000 || typeof o.q !== 'string') return undefined;
  const bound = (x: unknown): x is number | undefined => x === undefined || (typeof x === 'number' && Number.isFinite(x) && Math.abs(x) < 8.64e15);
  if (!bound(o.a) || !bound(o.b)) return undefined;
  return {
    order: o.o,
    position: { partition: o.p, n: o.n },
    query: o.q,
    ...(o.a !== undefined ? { sinceMs: o.a } : {}),
    ...(o.b !== undefined ? { untilMs: o.b } : {}),
  };
}

/* ---------- planning one partition ---------- */

/** One AND-ed condition an index can serve: the entries holding any of these values. */
interface Term {
  values: string[];
  /** A CIDR: its values are found in the partition's value set first (lex range). */
  range?: { lo: string; hi: string };
}

/** CIDRs matching more addresses than this in one partition are not read through the index. */
const MAX_RANGE_VALUES = 256;
/** Reference lists longer than this are not read whole: the stream is scanned instead. */
const MAX_REFS = 65_536;

export interface Plan {
  /** The index terms the filter allows. */
  terms: Term[];
  /** Container IDs the query is restricted to (either side; checked on each record too). */
  containerIds?: ReadonlySet<string>;
  /** The filter can match nothing (an unknown container). */
  empty?: boolean;
  /** What serves the query, for the answer: container, ip, cidr, port, country, asn, direction, or scan. */
  index: string;
}

/** The index terms a filter gives (each must hold for a record to match). */
export async function planQuery(reader: StoreReader, f: FlowFilter): Promise<Plan> {
  const terms: Term[] = [];
  const names: string[] = [];
  let containerIds: Set<string> | undefined;
  if (f.container !== undefined || f.service !== undefined) {
    const ids = resolveContainers((await reader.registries()).list, f);
    if (ids.length === 0) return { terms: [], empty: true, index: 'container' };
    containerIds = new Set(ids);
    terms.push({ values: [...new Set(ids.map((id) => `c|${id.slice(0, 12)}`))] });
    names.push('container');
  }
  for (const m of [f.ip, f.srcIp, f.dstIp]) {
    if (m === undefined) continue;
    if (m.first === m.last) {
      terms.push({ values: [`a|${m.first}`] });
      names.push('ip');
    } else {
      terms.push({ values: [], range: { lo: `a|${m.first}`, hi: `a|${m.last}` } });
      names.push('cidr');
    }
  }
  for (const port of [f.port, f.srcPort, f.dstPort]) {
    if (port !== undefined && port < EPHEMERAL_MIN) {
      terms.push({ values: [`p|${port}`] });
      names.push('port');
    }
  }
  if (f.country !== undefined) {
    terms.push({ values: [`g|${f.country}`] });
    names.push('country');
  }
  if (f.asn !== undefined) {
    terms.push({ values: [`n|${f.asn}`] });
    names.push('asn');
  }
  if (f.directions !== undefined) {
    terms.push({ values: f.directions.map((d) => `d|${DIRECTION_CODE[d]}`) });
    names.push('direction');
  }
  return { terms, ...(containerIds !== undefined ? { containerIds } : {}), index: names[0] ?? 'scan' };
}

/** How one partition is read: the entry numbers of the best index term, or the whole stream. */
interface PartitionPlan {
  partition: Partition;
  /** Nothing in this partition can match. */
  skip: boolean;
  /** Entry numbers to read, ascending; undefined: scan the stream. */
  refs?: Uint32Array;
}

function decodeRefs(buffers: Buffer[]): Uint32Array {
  if (buffers.length === 1) {
    const b = buffers[0]!;
    const out = new Uint32Array(b.length >> 2);
    for (let i = 0; i < out.length; i++) out[i] = b.readUInt32BE(i * 4);
    return out;
  }
  const all = new Set<number>();
  for (const b of buffers) for (let i = 0; i + 4 <= b.length; i += 4) all.add(b.readUInt32BE(i));
  return Uint32Array.from(all).sort();
}

/** Plans a group of partitions with two pipelined round trips (three when a CIDR is read through the index). */
async function planPartitions(reader: StoreReader, plan: Plan, parts: readonly Partition[]): Promise<PartitionPlan[]> {
  const { redis, keys } = reader;
  if (plan.terms.length === 0) return parts.map((partition) => ({ partition, skip: false }));
  // The values of each term in each partition (CIDRs: looked up in the partition's value set).
  const values: string[][][] = parts.map(() => plan.terms.map((t) => t.values));
  const ranged = plan.terms.some((t) => t.range !== undefined);
  if (ranged) {
    const pl = redis.pipeline();
    for (const p of parts) for (const t of plan.terms) if (t.range) pl.zrangebylex(keys.values(p.name), `[${t.range.lo}`, `[${t.range.hi}`, 'LIMIT', 0, MAX_RANGE_VALUES + 1);
    const replies = (await pl.exec()) ?? [];
    let i = 0;
    parts.forEach((_, pi) =>
      plan.terms.forEach((t, ti) => {
        if (!t.range) return;
        const [err, found] = replies[i++] ?? [new Error('no reply')];
        if (err) throw err;
        values[pi]![ti] = found as string[];
      }),
    );
  }
  const pl = redis.pipeline();
  for (let pi = 0; pi < parts.length; pi++) {
    const p = parts[pi]!;
    pl.xlen(keys.stream(p.name));
    for (const vs of values[pi]!) for (const v of vs) pl.strlen(keys.refs(p.name, v));
  }
  const replies = (await pl.exec()) ?? [];
  let i = 0;
  const chosen: Array<{ part: number; values: string[] } | undefined> = [];
  const out: PartitionPlan[] = parts.map((partition, pi) => {
    const [lenErr, len] = replies[i++] ?? [new Error('no reply')];
    if (lenErr) throw lenErr;
    const size = Number(len);
    let best: { count: number; values: string[] } | undefined;
    let skip = size === 0;
    plan.terms.forEach((t, ti) => {
      const vs = values[pi]![ti]!;
      let count = 0;
      for (let k = 0; k < vs.length; k++) {
        const [err, n] = replies[i++] ?? [new Error('no reply')];
        if (err) throw err;
        count += Number(n) / 4;
      }
      if (count === 0) skip = true;
      const usable = !(t.range !== undefined && vs.length > MAX_RANGE_VALUES);
      if (usable && (best === undefined || count < best.count)) best = { count, values: vs };
    });
    // Reading an entry by its number costs more than reading it in a range: a term that holds a large part of the
    // partition is better served by scanning it.
    const useIndex = !skip && best !== undefined && best.count <= MAX_REFS && best.count * 3 <= size;
    chosen.push(useIndex ? { part: pi, values: best!.values } : undefined);
    return { partition, skip };
  });
  const wanted = chosen.filter((c): c is { part: number; values: string[] } => c !== undefined);
  if (wanted.length > 0) {
    const gl = redis.pipeline();
    for (const c of wanted) for (const v of c.values) gl.getBuffer(keys.refs(parts[c.part]!.name, v));
    const got = (await gl.exec()) ?? [];
    let g = 0;
    for (const c of wanted) {
      const bufs: Buffer[] = [];
      for (let k = 0; k < c.values.length; k++) {
        const [err, b] = got[g++] ?? [new Error('no reply')];
        if (err) throw err;
        if (b) bufs.push(b as Buffer);
      }
      out[c.part]!.refs = decodeRefs(bufs);
    }
  }
  return out;
}

/* ---------- scanning ---------- */

export interface ScanOptions {
  order: Order;
  after?: Position;
  /** Entries examined before the scan stops and hands back a resume position. */
  scanBudget: number;
  /** Partitions looked at per request at most. */
  partitionBudget?: number;
}

export interface Hit {
  partition: string;
  id: string;
  position: Position;
  record: FlowRecord;
}

export interface ScanResult {
  hits: Hit[];
  /** Position to resume from when the scan stopped before the end of the range. */
  resume?: Position;
  examined: number;
  partitions: number;
}

const PLAN_GROUP = 16;

/**
 * The records matching `f` in its (clamped) time range, in partition order then entry order, until `limit` hits, the
 * budget, or the end of the range: each partition is read through its most selective index term (or scanned), and
 * partitions where some term has no entry are skipped unread.
 */
export async function scanFlows(reader: StoreReader, f: FlowFilter, plan: Plan, limit: number, opts: ScanOptions): Promise<ScanResult> {
  const result: ScanResult = { hits: [], examined: 0, partitions: 0 };
  if (plan.empty === true) return result;
  const { sinceMs, untilMs } = reader.clamp(f.sinceMs, f.untilMs);
  const filter: FlowFilter = { ...f, sinceMs, untilMs };
  const reg = await reader.registries();
  const partitionBudget = opts.partitionBudget ?? 512;
  let after = opts.after;
  const END = 0x100000000;
  for (;;) {
    const group = await reader.partitions(sinceMs, untilMs, opts.order, PLAN_GROUP, after?.partition);
    if (group.length === 0) return result;
    const plans = await planPartitions(reader, plan, group);
    for (const pp of plans) {
      const name = pp.partition.name;
      let from = after !== undefined && after.partition === name ? after.n : undefined;
      after = undefined;
      // Sentinels: before the first entry (-1 ascending, END descending) and after the last (the reverse).
      if (from !== undefined && (opts.order === 'asc' ? from >= END : from < 0)) continue;
      if (from !== undefined && (opts.order === 'asc' ? from < 0 : from >= END)) from = undefined;
      if (result.partitions >= partitionBudget || result.examined >= opts.scanBudget) {
        result.resume = { partition: name, n: from ?? (opts.order === 'asc' ? -1 : END) };
        return result;
      }
      result.partitions++;
      if (!pp.skip && (await readPartition(reader, pp, filter, plan, reg, limit, opts, from, result))) return result;
    }
    if (group.length < PLAN_GROUP) return result;
    after = { partition: group[group.length - 1]!.name, n: opts.order === 'asc' ? END : -1 };
  }
}

/** Reads one partition's candidates after `from`; true when the page is full or the budget is spent (resume set). */
async function readPartition(
  reader: StoreReader,
  pp: PartitionPlan,
  f: FlowFilter,
  plan: Plan,
  reg: Registries,
  limit: number,
  opts: ScanOptions,
  from: number | undefined,
  result: ScanResult,
): Promise<boolean> {
  const { redis, keys } = reader;
  const name = pp.partition.name;
  const stream = keys.stream(name);
  const ms = bucketStartMs(pp.partition.bucket);
  const asc = opts.order === 'asc';
  const take = (n: number, fields: string[] | undefined): boolean => {
    result.examined++;
    const record = fields !== undefined ? decodeFlat(fields, reg) : undefined;
    const position = { partition: name, n };
    if (record !== undefined && recordMatches(record, f, plan.containerIds)) {
      result.hits.push({ partition: name, id: `${ms}-${n}`, position, record });
      if (result.hits.length === limit) {
        result.resume = position;
        return true;
      }
    }
    if (result.examined >= opts.scanBudget) {
      result.resume = position;
      return true;
    }
    return false;
  };
  const chunk = Math.max(Math.min(limit * 2, 1000), 64);
  if (pp.refs !== undefined) {
    const refs = pp.refs;
    // Positions after `from` in order.
    let lo = 0;
    let hi = refs.length;
    if (from !== undefined) {
      if (asc) while (lo < hi && refs[lo]! <= from) lo++;
      else while (hi > lo && refs[hi - 1]! >= from) hi--;
    }
    const list = asc ? Array.from(refs.subarray(lo, hi)) : Array.from(refs.subarray(lo, hi)).reverse();
    for (let i = 0; i < list.length; i += chunk) {
      const part = list.slice(i, i + Math.min(chunk, opts.scanBudget - result.examined + 1));
      const pl = redis.pipeline();
      for (const n of part) pl.xrange(stream, `${ms}-${n}`, `${ms}-${n}`);
      const replies = (await pl.exec()) ?? [];
      for (let k = 0; k < part.length; k++) {
        const [err, entries] = replies[k] ?? [new Error('no reply')];
        if (err) throw err;
        if (take(part[k]!, (entries as [string, string[]][])[0]?.[1])) return true;
      }
    }
    return false;
  }
  let cursor = from;
  for (;;) {
    const count = Math.min(chunk, opts.scanBudget - result.examined + 1);
    const entries = (
      asc
        ? await redis.xrange(stream, cursor === undefined ? '-' : `(${ms}-${cursor}`, '+', 'COUNT', count)
        : await redis.xrevrange(stream, cursor === undefined ? '+' : `(${ms}-${cursor}`, '-', 'COUNT', count)
    ) as [string, string[]][];
    for (const [id, fields] of entries) {
      const n = Number(id.slice(id.indexOf('-') + 1));
      cursor = n;
      if (take(n, fields)) return true;
    }
    if (entries.length < count) return false;
  }
}
