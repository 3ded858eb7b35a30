import type { ChainableCommander } from 'ioredis';
import { canonicalIp, sortableIp } from '../net/ip.js';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { DockflowError, ErrorCode } from '../errors.js';
import { storeKeys, type StoreKeys } from './keys.js';
import { IndexOps } from './index-ops.js';
import type { IndexEntry, StreamIndexer } from './types.js';

/*
 * Secondary indexes beside the per-direction streams. Every index member is a compact reference to one stream
 * entry: a direction letter and the entry ID in base 36 (`e` + `lx3k9q2a` + `.1` for seq 1), 9–12 bytes instead of
 * `egress/1718000000000-1`, because index members dominate Redis memory. Scores are packet times (`@timestamp`, ms),
 * so time filters and ordering mean the time on the wire, not the arrival time.
 *
 *   <p>:ix:t:<dir>          zset  every record of a direction (the fallback scan, per-direction so that a direction
 *                                 filter never scans the others)
 *   <p>:ix:c:<container id> zset  records attributed to a container
 *   <p>:ix:ip:<ip>          zset  records with this address on either side
 *   <p>:reg:ips             zset  escaped address → last seen (trim walks it)
 *   <p>:reg:ipx             zset  `<sortable address>|<escaped address>`, all scored 0: in address order, so a CIDR is
 *                                 one ZRANGE BYLEX range (see net/ip.ts sortableIp); trim removes what reg:ips lost
 *   <p>:reg:ctr             zset  container id → last seen
 *   <p>:reg:ctrmeta         hash  container id → {"n":name,"s":compose service,"i":image}
 *   <p>:top:<res>:<dir>:<dim>:<bucket>  zset  value → count, per 1-minute (`m`) and 10-minute (`t`) bucket
 *   <p>:reg:buckets         zset  `<res>:<bucket>` → bucket start ms (trim walks it)
 *   <p>:inv:<id>:f / :l     zset  `<dir letter>|<remote ip>|<transport>|<port>` → first / last seen
 *
 * Cost, measured by scripts/bench-query.ts (5M synthetic records, 200 containers, 20k remote addresses, 3 h): about
 * 515 MiB of Redis memory per million records for all of the above, beside ~1.3 GiB per million for the streams
 * themselves (the records' JSON). Most of it is the four sorted-set entries per record (time, container, two
 * addresses; ~100 B each in a skiplist); counters and inventories grow with distinct values, not records.
 *
 * Key parts that come from records or requests go through keyPart() (percent-escaping everything outside
 * [A-Za-z0-9._-]), so no value can add a `:` segment, a glob character or a space to a key name.
 */

export const DIRECTION_CODE: Readonly<Record<Direction, string>> = {
  egress: 'e',
  ingress: 'i',
  internal: 'n',
  'container-to-host': 'c',
  'host-to-container': 'h',
  other: 'o',
};
const CODE_DIRECTION = new Map<string, Direction>(DIRECTIONS.map((d) => [DIRECTION_CODE[d], d]));
const DIRECTION_INDEX = Object.fromEntries(DIRECTIONS.map((d, i) => [d, i])) as Record<Direction, number>;

export const TOP_DIMENSIONS = ['dst', 'port', 'country', 'asn', 'container'] as const;
export type TopDimension = (typeof TOP_DIMENSIONS)[number];

/** Counter resolutions: `m` one minute, `t` ten minutes (so an hour's top unions ≤ 24 keys, not 60). */
export const BUCKET_MS = { m: 60_000, t: 600_000 } as const;
export type BucketResolution = keyof typeof BUCKET_MS;

const PREFIX_RE = /^[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)*$/;
export const CONTAINER_ID_RE = /^[0-9a-f]{12,64}$/;

const KEY_SAFE_RE = /^[A-Za-z0-9._-]*$/;

/** Percent-escapes everything outside [A-Za-z0-9._-]; reversible with decodeURIComponent. */
export function keyPart(value: string): string {
  // Per record on the ingest path: IPv4 addresses, ports and container IDs need no escaping.
  if (KEY_SAFE_RE.test(value)) return value;
  return encodeURIComponent(value).replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export function validateKeyPrefix(prefix: string): string {
  if (prefix.length > 64 || !PREFIX_RE.test(prefix)) {
    throw new DockflowError(ErrorCode.CONFIG_INVALID, `Redis key prefix ${JSON.stringify(prefix)} must be [A-Za-z0-9_.-] segments joined by ':'`);
  }
  return prefix;
}

export { canonicalIp };

/** All key names, built in one place from validated parts. */
export class IndexKeys {
  readonly prefix: string;
  private readonly store: StoreKeys;
  constructor(prefix: string) {
    this.prefix = validateKeyPrefix(prefix);
    this.store = storeKeys(prefix);
  }
  /** The writer's stream for a direction (`<prefix>:flows:<direction>`). */
  stream(dir: Direction): string {
    return this.store.stream(dir);
  }
  time(dir: Direction): string {
    return `${this.prefix}:ix:t:${dir}`;
  }
  container(id: string): string {
    return `${this.prefix}:ix:c:${keyPart(id)}`;
  }
  ip(canonical: string): string {
    return `${this.prefix}:ix:ip:${keyPart(canonical)}`;
  }
  get ipRegistry(): string {
    return `${this.prefix}:reg:ips`;
  }
  /** Addresses in numeric order, for CIDR lookups. */
  get ipSorted(): string {
    return `${this.prefix}:reg:ipx`;
  }
  get containerRegistry(): string {
    return `${this.prefix}:reg:ctr`;
  }
  get containerMeta(): string {
    return `${this.prefix}:reg:ctrmeta`;
  }
  get bucketRegistry(): string {
    return `${this.prefix}:reg:buckets`;
  }
  top(res: BucketResolution, dir: Direction, dim: TopDimension, bucket: number): string {
    return `${this.prefix}:top:${res}:${dir}:${dim}:${bucket}`;
  }
  inventoryFirst(id: string): string {
    return `${this.prefix}:inv:${keyPart(id)}:f`;
  }
  inventoryLast(id: string): string {
    return `${this.prefix}:inv:${keyPart(id)}:l`;
  }
  /** Scratch keys for query-time unions; the random part is generated, never taken from input. */
  scratch(random: string): string {
    return `${this.prefix}:tmp:${random}`;
  }
}

export interface EntryRef {
  direction: Direction;
  /** Stream entry ID `<ms>-<seq>`. */
  id: string;
}

/** Stream entry IDs as the writer makes them: `<ms>-<seq>`, each 1–15 digits. */
function digitsEnd(id: string, from: number): number {
  let i = from;
  for (; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c < 48 || c > 57) break;
  }
  return i - from >= 1 && i - from <= 15 ? i : -1;
}

/** The last ID's millisecond part and its base 36: the entries of a batch mostly share one (radix conversion is slow). */
let lastMs = '';
let lastMs36 = '';

export function encodeMember(dir: Direction, id: string): string | undefined {
  const dash = digitsEnd(id, 0);
  if (dash < 0 || id.charCodeAt(dash) !== 45 || digitsEnd(id, dash + 1) !== id.length) return undefined;
  const ms = id.slice(0, dash);
  if (ms !== lastMs) {
    lastMs = ms;
    lastMs36 = Number(ms).toString(36);
  }
  const seq = Number(id.slice(dash + 1));
  return `${DIRECTION_CODE[dir]}${lastMs36}${seq === 0 ? '' : `.${seq.toString(36)}`}`;
}

export function decodeMember(member: string): EntryRef | undefined {
  const direction = CODE_DIRECTION.get(member.charAt(0));
  if (direction === undefined) return undefined;
  const dot = member.indexOf('.', 1);
  const ms = parseInt(dot < 0 ? member.slice(1) : member.slice(1, dot), 36);
  const seq = dot < 0 ? 0 : parseInt(member.slice(dot + 1), 36);
  if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) return undefined;
  return { direction, id: `${ms}-${seq}` };
}

/** The container's side of the packet, from the direction (see `FlowRecord.container`). */
export function containerSide(dir: Direction): 'source' | 'destination' {
  return dir === 'ingress' || dir === 'host-to-container' ? 'destination' : 'source';
}
export function remoteSide(dir: Direction): 'source' | 'destination' {
  return containerSide(dir) === 'source' ? 'destination' : 'source';
}

export function composeService(record: FlowRecord): string | undefined {
  return record.container?.labels?.['com.docker.compose.service'];
}

export function attributedContainerId(record: FlowRecord): string | undefined {
  const id = record.container?.id;
  return id !== undefined && record.container?.unattributed !== true && CONTAINER_ID_RE.test(id) ? id : undefined;
}

/** The direction of the answer to a packet going the other way. */
export const REVERSED: Readonly<Record<Direction, Direction>> = {
  egress: 'ingress',
  ingress: 'egress',
  internal: 'internal',
  'container-to-host': 'host-to-container',
  'host-to-container': 'container-to-host',
  other: 'other',
};

/** Linux's default ephemeral range starts here (net.ipv4.ip_local_port_range). */
const EPHEMERAL_MIN = 32768;

/**
 * Inventory member: `<dir letter>|<remote ip>|<transport>|<service port>`, oriented from the connection's initiator.
 * Per-packet LOG rules log the answers too; an answer (from a service port to an ephemeral one, and not a bare SYN)
 * is folded onto the entry of the packet it answers instead of listing the client's ephemeral port as a destination.
 */
export function inventoryMember(record: FlowRecord): string | undefined {
  let dir = record.network.direction;
  const ip = record[remoteSide(dir)].ip;
  const canonical = ip !== undefined ? canonicalIp(ip) : undefined;
  if (canonical === undefined) return undefined;
  const flags = record.iptables.tcp?.flags;
  const synOnly = flags !== undefined && flags.includes('SYN') && !flags.includes('ACK');
  const sp = record.source.port;
  let port = record.destination.port;
  if (!synOnly && sp !== undefined && port !== undefined && sp < EPHEMERAL_MIN && port >= EPHEMERAL_MIN) {
    dir = REVERSED[dir];
    port = sp;
  }
  return `${DIRECTION_CODE[dir]}|${canonical}|${record.network.transport ?? ''}|${port ?? ''}`;
}

export function parseInventoryMember(member: string): { direction: Direction; ip: string; transport?: string; port?: number } | undefined {
  const [code, ip, transport, port] = member.split('|');
  const direction = code !== undefined ? CODE_DIRECTION.get(code) : undefined;
  if (direction === undefined || ip === undefined) return undefined;
  return {
    direction,
    ip,
    ...(transport ? { transport } : {}),
    ...(port ? { port: Number(port) } : {}),
  };
}

interface ContainerMemo {
  /** Minute of the last registry write. */
  minute: number;
  name: string | undefined;
  service: string | undefined;
  image: string | undefined;
  /** Inventory member → earliest first-seen written. */
  inventoryFirst: Map<string, number>;
}

/**
 * Remembers what was last written so repeated writes of the same registry entry are skipped. Bounded by clearing when
 * full, and cleared every wall-clock minute: a pipeline that failed (Redis down) must not leave an entry remembered as
 * written for longer than that. A cleared memo only costs redundant, idempotent writes. One map per kind of entry,
 * keyed by the value itself, because building a composite key string per lookup cost more than the lookup.
 */
class WriteMemo {
  /** Canonical address → minute of the last registry write. */
  readonly ips = new Map<string, number>();
  readonly containers = new Map<string, ContainerMemo>();
  /** Counter buckets registered, as `bucket * 2 + (ten-minute ? 1 : 0)`. */
  readonly buckets = new Set<number>();
  private epoch = -1;
  constructor(readonly maxEntries: number) {}
  /** Forgets everything once a minute; called once per batch, not per lookup (the clock costs more than the map). */
  tick(): void {
    const now = Math.floor(Date.now() / 60_000);
    if (now !== this.epoch || this.ips.size >= this.maxEntries || this.containers.size >= this.maxEntries) {
      this.epoch = now;
      this.ips.clear();
      this.containers.clear();
      this.buckets.clear();
    }
  }
}

/**
 * Deletes index entries older than the retention horizon. Runs server-side because it walks registries whose members
 * name the keys; key names are rebuilt from registry members, which were escaped with keyPart() when written.
 * ARGV: prefix, minTimeMs, comma-joined directions, comma-joined dimensions.
 */
const TRIM_SCRIPT = `
local p, t = ARGV[1], tonumber(ARGV[2])
local below = '(' .. ARGV[2]
local dirs, dims = {}, {}
for d in string.gmatch(ARGV[3], '[^,]+') do dirs[#dirs + 1] = d end
for d in string.gmatch(ARGV[4], '[^,]+') do dims[#dims + 1] = d end
local removed = 0
for _, d in ipairs(dirs) do removed = removed + redis.call('ZREMRANGEBYSCORE', p .. ':ix:t:' .. d, '-inf', below) end
local function walk(registry, keyOf, extra)
  local all = redis.call('ZRANGE', registry, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    local m, last = all[i], tonumber(all[i + 1])
    if last < t then
      redis.call('DEL', keyOf(m))
      if extra then extra(m, true) end
      redis.call('ZREM', registry, m)
    else
      removed = removed + redis.call('ZREMRANGEBYSCORE', keyOf(m), '-inf', below)
      if extra then extra(m, false) end
    end
  end
end
local ipsGone = false
walk(p .. ':reg:ips', function(m) return p .. ':ix:ip:' .. m end, function(m, gone) if gone then ipsGone = true end end)
if ipsGone then
  local ipx = p .. ':reg:ipx'
  local all = redis.call('ZRANGE', ipx, 0, -1)
  for _, e in ipairs(all) do
    local bar = string.find(e, '|', 1, true)
    if bar and not redis.call('ZSCORE', p .. ':reg:ips', string.sub(e, bar + 1)) then redis.call('ZREM', ipx, e) end
  end
end
walk(p .. ':reg:ctr', function(m) return p .. ':ix:c:' .. m end, function(m, gone)
  local f, l = p .. ':inv:' .. m .. ':f', p .. ':inv:' .. m .. ':l'
  if gone then
    redis.call('DEL', f, l)
    redis.call('HDEL', p .. ':reg:ctrmeta', m)
  else
    local old = redis.call('ZRANGE', l, '-inf', below, 'BYSCORE')
    for j = 1, #old, 500 do
      local chunk = {unpack(old, j, math.min(j + 499, #old))}
      redis.call('ZREM', f, unpack(chunk))
      redis.call('ZREM', l, unpack(chunk))
    end
  end
end)
local buckets = redis.call('ZRANGE', p .. ':reg:buckets', '-inf', below, 'BYSCORE')
for _, b in ipairs(buckets) do
  local res, start = string.match(b, '^(%a):(%d+)$')
  if res then
    local width = (res == 'm') and 60000 or 600000
    -- a bucket goes only when all of it is older than the horizon
    if (tonumber(start) + 1) * width <= t then
      for _, d in ipairs(dirs) do
        for _, dim in ipairs(dims) do redis.call('DEL', p .. ':top:' .. res .. ':' .. d .. ':' .. dim .. ':' .. start) end
      end
      redis.call('ZREM', p .. ':reg:buckets', b)
    end
  end
end
return removed
`;

export interface FlowIndexerOptions {
  keyPrefix: string;
  /** Entries remembered to skip redundant registry writes. */
  memoMaxEntries?: number;
}

/** A container's keys in one batch, as key numbers. */
interface ContainerKeys {
  index: number;
  inventoryFirst: number;
  inventoryLast: number;
}

/** One batch's IndexOps, with caches from values to key numbers that spare building a key name per record. */
class BatchKeys {
  readonly ops = new IndexOps();
  private readonly timeKey: Array<number | undefined> = [];
  private readonly ipKey = new Map<string, number>();
  private readonly containerKeys = new Map<string, ContainerKeys>();
  private readonly topKey = new Map<number, number>();
  private ipRegistryKey: number | undefined;
  private ipSortedKey: number | undefined;
  private containerRegistryKey: number | undefined;
  private containerMetaKey: number | undefined;
  private bucketRegistryKey: number | undefined;

  constructor(private readonly names: IndexKeys) {}

  time(dir: Direction): number {
    const d = DIRECTION_INDEX[dir];
    return (this.timeKey[d] ??= this.ops.key(this.names.time(dir)));
  }
  ip(canonical: string): number {
    let n = this.ipKey.get(canonical);
    if (n === undefined) {
      n = this.ops.key(this.names.ip(canonical));
      this.ipKey.set(canonical, n);
    }
    return n;
  }
  container(id: string): ContainerKeys {
    let c = this.containerKeys.get(id);
    if (c === undefined) {
      const { ops, names } = this;
      c = { index: ops.key(names.container(id)), inventoryFirst: ops.key(names.inventoryFirst(id)), inventoryLast: ops.key(names.inventoryLast(id)) };
      this.containerKeys.set(id, c);
    }
    return c;
  }
  /** A top-N counter key: ten per record, a handful per batch. */
  top(res: BucketResolution, dir: Direction, dimIndex: number, bucket: number): number {
    const id = bucket * 128 + (res === 'm' ? 0 : 64) + DIRECTION_INDEX[dir] * 8 + dimIndex;
    let n = this.topKey.get(id);
    if (n === undefined) {
      n = this.ops.key(this.names.top(res, dir, TOP_DIMENSIONS[dimIndex] as TopDimension, bucket));
      this.topKey.set(id, n);
    }
    return n;
  }
  get ipRegistry(): number {
    return (this.ipRegistryKey ??= this.ops.key(this.names.ipRegistry));
  }
  get ipSorted(): number {
    return (this.ipSortedKey ??= this.ops.key(this.names.ipSorted));
  }
  get containerRegistry(): number {
    return (this.containerRegistryKey ??= this.ops.key(this.names.containerRegistry));
  }
  get containerMeta(): number {
    return (this.containerMetaKey ??= this.ops.key(this.names.containerMeta));
  }
  get bucketRegistry(): number {
    return (this.bucketRegistryKey ??= this.ops.key(this.names.bucketRegistry));
  }
}

/** What the index writes take from one record. */
export interface RecordFacts {
  direction: Direction;
  /** Packet time (ms); NaN when the record has no usable one, and the arrival time in the stream ID is used. */
  timeMs: number;
  /** Canonical addresses. */
  source: string | undefined;
  destination: string | undefined;
  container: { id: string; name?: string; service?: string; image?: string; inventory?: string } | undefined;
  /** The counted values, in `TOP_DIMENSIONS` order. */
  top: Array<string | undefined>;
}

/** The StreamIndexer the stream writer applies with each batch: see the key layout at the top of this file. */
export class FlowIndexer implements StreamIndexer<RecordFacts> {
  readonly keys: IndexKeys;
  private readonly memo: WriteMemo;

  constructor(opts: FlowIndexerOptions) {
    this.keys = new IndexKeys(opts.keyPrefix);
    this.memo = new WriteMemo(opts.memoMaxEntries ?? 100_000);
  }

  facts(record: FlowRecord): RecordFacts {
    const dir = record.network.direction;
    const source = record.source.ip !== undefined ? canonicalIp(record.source.ip) : undefined;
    const destination = record.destination.ip !== undefined ? canonicalIp(record.destination.ip) : undefined;
    const cid = attributedContainerId(record);
    const container =
      cid === undefined
        ? undefined
        : { id: cid, name: record.container?.name, service: composeService(record), image: record.container?.image?.name, inventory: inventoryMember(record) };
    const remote = record[remoteSide(dir)];
    const port = record.destination.port;
    const asn = remote.as?.number;
    return {
      direction: dir,
      timeMs: Date.parse(record['@timestamp']),
      source,
      destination,
      container,
      top: [destination, port !== undefined ? `${record.network.transport ?? 'unknown'}/${port}` : undefined, remote.geo?.country_iso_code, asn !== undefined ? String(asn) : undefined, cid],
    };
  }

  build(entries: readonly IndexEntry<RecordFacts>[]): IndexOps | undefined {
    this.memo.tick();
    const batch = new BatchKeys(this.keys);
    for (const e of entries) this.addOne(batch, e.facts, e.id);
    return batch.ops.empty ? undefined : batch.ops;
  }

  private addOne(batch: BatchKeys, facts: RecordFacts, id: string): void {
    const dir = facts.direction;
    if (DIRECTION_CODE[dir] === undefined) return;
    const member = encodeMember(dir, id);
    if (member === undefined) return;
    const { ops } = batch;
    const memo = this.memo;
    const score = Number.isFinite(facts.timeMs) ? facts.timeMs : Number(id.slice(0, id.indexOf('-')));
    // Converted once: a record's score appears in several of its writes.
    const at = String(score);
    const minute = Math.floor(score / BUCKET_MS.m);

    ops.zadd(batch.time(dir), at, member);

    const { source: src, destination: dst } = facts;
    if (src !== undefined) this.indexIp(batch, src, minute, score, at, member);
    if (dst !== undefined && dst !== src) this.indexIp(batch, dst, minute, score, at, member);

    const container = facts.container;
    if (container !== undefined) {
      const cid = container.id;
      const keys = batch.container(cid);
      ops.zadd(keys.index, at, member);
      let c = memo.containers.get(cid);
      if (c === undefined || c.minute < minute) {
        if (c === undefined) {
          c = { minute, name: undefined, service: undefined, image: undefined, inventoryFirst: new Map() };
          memo.containers.set(cid, c);
        }
        c.minute = minute;
        ops.zaddIf(batch.containerRegistry, 'GT', score, cid);
      }
      const { name, service, image } = container;
      if (c.name !== name || c.service !== service || c.image !== image) {
        c.name = name;
        c.service = service;
        c.image = image;
        ops.hset(batch.containerMeta, cid, JSON.stringify({ n: name, s: service, i: image }));
      }
      const inv = container.inventory;
      if (inv !== undefined) {
        const first = c.inventoryFirst.get(inv);
        if (first === undefined || first > score) {
          if (c.inventoryFirst.size >= memo.maxEntries) c.inventoryFirst.clear();
          c.inventoryFirst.set(inv, score);
          ops.zaddIf(keys.inventoryFirst, 'LT', score, inv);
        }
        ops.zaddIf(keys.inventoryLast, 'GT', score, inv);
      }
    }

    // Each dimension's value once; it is counted at both resolutions.
    const values = facts.top;
    for (const res of ['m', 't'] as const) {
      const bucket = Math.floor(score / BUCKET_MS[res]);
      const bucketId = bucket * 2 + (res === 'm' ? 0 : 1);
      if (!memo.buckets.has(bucketId)) {
        memo.buckets.add(bucketId);
        ops.zaddIf(batch.bucketRegistry, 'NX', bucket * BUCKET_MS[res], `${res}:${bucket}`);
      }
      for (let d = 0; d < values.length; d++) {
        const v = values[d];
        if (v !== undefined) ops.incr(batch.top(res, dir, d, bucket), v);
      }
    }
  }

  private indexIp(batch: BatchKeys, ip: string, minute: number, score: number, at: string, member: string): void {
    batch.ops.zadd(batch.ip(ip), at, member);
    const last = this.memo.ips.get(ip);
    if (last !== undefined && last >= minute) return;
    this.memo.ips.set(ip, minute);
    const escaped = keyPart(ip);
    batch.ops.zaddIf(batch.ipRegistry, 'GT', score, escaped);
    const sortable = sortableIp(ip);
    if (sortable !== undefined) batch.ops.zaddIf(batch.ipSorted, 'NX', 0, `${sortable}|${escaped}`);
  }

  trim(pl: ChainableCommander, minTimeMs: number): void {
    pl.eval(TRIM_SCRIPT, 0, this.keys.prefix, Math.floor(minTimeMs), DIRECTIONS.join(','), TOP_DIMENSIONS.join(','));
  }
}
