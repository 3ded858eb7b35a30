import type { ChainableCommander, Redis } from 'ioredis';
import { canonicalIp } from '../parse/community-id.js';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { DockflowError, ErrorCode } from '../errors.js';
import { storeKeys, type StoreKeys } from './keys.js';
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
 *   <p>:reg:ips             zset  escaped address → last seen (CIDR queries enumerate it; trim walks it)
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

const ID_RE = /^(\d{1,15})-(\d{1,15})$/;

export function encodeMember(dir: Direction, id: string): string | undefined {
  const m = ID_RE.exec(id);
  if (!m) return undefined;
  const seq = Number(m[2]);
  return `${DIRECTION_CODE[dir]}${Number(m[1]).toString(36)}${seq === 0 ? '' : `.${seq.toString(36)}`}`;
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

/** Packet time when the record has a usable one, else the arrival time in the stream ID. */
export function recordTimeMs(record: FlowRecord, id: string): number {
  const t = Date.parse(record['@timestamp']);
  return Number.isFinite(t) ? t : Number(id.slice(0, id.indexOf('-')));
}

/** The counted value of one top-N dimension for a record, or undefined when the record has none. */
export function topValue(record: FlowRecord, dim: TopDimension): string | undefined {
  const remote = record[remoteSide(record.network.direction)];
  switch (dim) {
    case 'dst':
      return record.destination.ip !== undefined ? canonicalIp(record.destination.ip) : undefined;
    case 'port':
      return record.destination.port !== undefined ? `${record.network.transport ?? 'unknown'}/${record.destination.port}` : undefined;
    case 'country':
      return remote.geo?.country_iso_code;
    case 'asn':
      return remote.as?.number !== undefined ? String(remote.as.number) : undefined;
    case 'container':
      return attributedContainerId(record);
  }
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

/**
 * Remembers the last value written per key so repeated writes of the same registry entry are skipped. Bounded by
 * clearing when full, and cleared every wall-clock minute: a pipeline that failed (Redis down) must not leave an entry
 * remembered as written for longer than that. A cleared memo only costs redundant, idempotent writes.
 */
class WriteMemo {
  private readonly map = new Map<string, number | string>();
  private epoch = -1;
  constructor(private readonly maxEntries: number) {}
  /** Forgets everything once a minute; called once per batch, not per lookup (the clock costs more than the map). */
  tick(): void {
    const now = Math.floor(Date.now() / 60_000);
    if (now !== this.epoch) {
      this.epoch = now;
      this.map.clear();
    }
  }
  get(key: string): number | string | undefined {
    return this.map.get(key);
  }
  set(key: string, value: number | string): void {
    if (this.map.size >= this.maxEntries) this.map.clear();
    this.map.set(key, value);
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
walk(p .. ':reg:ips', function(m) return p .. ':ix:ip:' .. m end)
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

/**
 * Applies a whole batch's index writes in one command: the writer's client spends its time on command objects and
 * promises, not bytes, so ~15 pipelined commands per record would dominate its cost. Server-side the script merges
 * what it can: all ZADDs to one key and flag become one ZADD, counter increments are summed per key and member.
 *
 * Idempotent, since the writer may index the same entries again after a lost connection: each record's first write is
 * its ZADD to the time index, and only when that adds a new member are its counter increments applied (ZADD and HSET
 * are idempotent by themselves).
 *
 * ARGV[1]: one string of fields, each ended by the unit separator (0x1f), because ioredis' per-argument cost would
 * otherwise dominate: record count, then per record: time-index key number, score, member, op count, ops. Ops (key
 * numbers index KEYS): `z <key> <flag> <score> <member>` ZADD with flag `-` (none), GT, LT or NX; `i <key> <member>`
 * +1; `h <key> <field> <value>` HSET. No field can hold 0x1f: key parts are escaped, metadata is JSON (which escapes
 * control characters), the rest are numbers, codes and addresses.
 */
export const INDEX_SCRIPT = `
local A = {}
for token in string.gmatch(ARGV[1], '([^\\31]*)\\31') do A[#A + 1] = token end
local a = 2
local zadds, incr = {}, {}
local function push(k, flag, score, member)
  local id = k .. ' ' .. flag
  local t = zadds[id]
  if not t then
    t = { k = tonumber(k), flag = flag }
    zadds[id] = t
  end
  t[#t + 1] = score
  t[#t + 1] = member
end
for _ = 1, tonumber(A[1]) do
  local fresh = redis.call('ZADD', KEYS[tonumber(A[a])], A[a + 1], A[a + 2]) == 1
  local n = tonumber(A[a + 3])
  a = a + 4
  for _ = 1, n do
    local op, k = A[a], A[a + 1]
    if op == 'i' then
      if fresh then
        local t = incr[k] or {}
        incr[k] = t
        t[A[a + 2]] = (t[A[a + 2]] or 0) + 1
      end
      a = a + 3
    elseif op == 'h' then
      redis.call('HSET', KEYS[tonumber(k)], A[a + 2], A[a + 3])
      a = a + 4
    else
      push(k, A[a + 2], A[a + 3], A[a + 4])
      a = a + 5
    end
  end
end
for _, t in pairs(zadds) do
  for i = 1, #t, 1000 do
    local last = math.min(i + 999, #t)
    if t.flag == '-' then
      redis.call('ZADD', KEYS[t.k], unpack(t, i, last))
    else
      redis.call('ZADD', KEYS[t.k], t.flag, unpack(t, i, last))
    end
  end
end
for k, t in pairs(incr) do
  for member, n in pairs(t) do redis.call('ZINCRBY', KEYS[tonumber(k)], n, member) end
end
return 0
`;

const FIELD_END = '\x1f';

/** The command name the indexer defines on the writer's client (ioredis loads it per connection, EVAL then EVALSHA). */
export const INDEX_COMMAND = 'dockflowIndex';

type IndexCommand = (numKeys: number, ...keysAndArgs: (string | number)[]) => unknown;

export interface FlowIndexerOptions {
  keyPrefix: string;
  /**
   * The client whose pipelines will carry the index writes: the indexer defines its script command on it, and
   * pipelines created from it afterwards have it.
   */
  redis: Redis;
  /** Entries remembered to skip redundant registry writes. */
  memoMaxEntries?: number;
}

/** Collects one batch's writes as script arguments, numbering each distinct key once. */
class BatchOps {
  readonly keys: string[] = [];
  readonly args: (string | number)[] = [1];
  private readonly keyNumber = new Map<string, number>();
  private readonly topKeyNumber = new Map<number, number>();
  private records = 0;
  private opCountAt = 0;

  private key(name: string): number {
    let n = this.keyNumber.get(name);
    if (n === undefined) {
      n = this.keys.push(name);
      this.keyNumber.set(name, n);
    }
    return n;
  }
  record(timeKey: string, score: string, member: string): void {
    this.records += 1;
    this.args[0] = this.records;
    this.args.push(this.key(timeKey), score, member, 0);
    this.opCountAt = this.args.length - 1;
  }
  private op(...a: (string | number)[]): void {
    this.args.push(...a);
    (this.args[this.opCountAt] as number) += 1;
  }
  zadd(key: string, flag: '-' | 'GT' | 'LT' | 'NX', score: number | string, member: string): void {
    this.op('z', this.key(key), flag, score, member);
  }
  /**
   * +1 on a top-N counter key, numbered through a numeric cache: a batch touches a handful of these keys, ten times
   * per record, and building and hashing the key string each time was a measurable share of ingest.
   */
  incrTop(keys: IndexKeys, res: BucketResolution, dir: Direction, dimIndex: number, bucket: number, member: string): void {
    const id = bucket * 128 + (res === 'm' ? 0 : 64) + DIRECTION_INDEX[dir] * 8 + dimIndex;
    let n = this.topKeyNumber.get(id);
    if (n === undefined) {
      n = this.key(keys.top(res, dir, TOP_DIMENSIONS[dimIndex] as TopDimension, bucket));
      this.topKeyNumber.set(id, n);
    }
    this.op('i', n, member);
  }
  hset(key: string, field: string, value: string): void {
    this.op('h', this.key(key), field, value);
  }
  get empty(): boolean {
    return this.records === 0;
  }
}

/** The StreamIndexer the stream writer runs in its pipeline: see the key layout at the top of this file. */
export class FlowIndexer implements StreamIndexer {
  readonly keys: IndexKeys;
  private readonly memo: WriteMemo;

  constructor(opts: FlowIndexerOptions) {
    this.keys = new IndexKeys(opts.keyPrefix);
    this.memo = new WriteMemo(opts.memoMaxEntries ?? 100_000);
    if (!(INDEX_COMMAND in opts.redis)) opts.redis.defineCommand(INDEX_COMMAND, { lua: INDEX_SCRIPT });
  }

  add(pl: ChainableCommander, entries: readonly IndexEntry[]): void {
    this.memo.tick();
    const ops = new BatchOps();
    for (const e of entries) this.addOne(ops, e.record, e.id);
    if (ops.empty) return;
    const command = (pl as unknown as Record<string, IndexCommand | undefined>)[INDEX_COMMAND];
    if (command === undefined) {
      throw new DockflowError(ErrorCode.CONFIG_INVALID, 'FlowIndexer: the pipeline does not come from the Redis client the indexer was built with');
    }
    command.call(pl, ops.keys.length, ...ops.keys, `${ops.args.join(FIELD_END)}${FIELD_END}`);
  }

  private addOne(ops: BatchOps, record: FlowRecord, id: string): void {
    const dir = record.network.direction;
    if (DIRECTION_CODE[dir] === undefined) return;
    const member = encodeMember(dir, id);
    if (member === undefined) return;
    const k = this.keys;
    const score = recordTimeMs(record, id);
    // Converted once: the batch goes to Redis as one string, and a record's score appears in up to six of its ops.
    const at = String(score);
    const minute = Math.floor(score / BUCKET_MS.m);

    ops.record(k.time(dir), at, member);

    const src = record.source.ip !== undefined ? canonicalIp(record.source.ip) : undefined;
    const dst = record.destination.ip !== undefined ? canonicalIp(record.destination.ip) : undefined;
    for (const ip of src === dst ? [src] : [src, dst]) {
      if (ip === undefined) continue;
      const part = keyPart(ip);
      ops.zadd(k.ip(ip), '-', at, member);
      if (this.advance(`ip:${part}`, minute)) ops.zadd(k.ipRegistry, 'GT', at, part);
    }

    const cid = attributedContainerId(record);
    if (cid !== undefined) {
      ops.zadd(k.container(cid), '-', at, member);
      if (this.advance(`ctr:${cid}`, minute)) ops.zadd(k.containerRegistry, 'GT', at, cid);
      const meta = JSON.stringify({ n: record.container?.name, s: composeService(record), i: record.container?.image?.name });
      if (this.memo.get(`meta:${cid}`) !== meta) {
        this.memo.set(`meta:${cid}`, meta);
        ops.hset(k.containerMeta, cid, meta);
      }
      const inv = inventoryMember(record);
      if (inv !== undefined) {
        const firstKey = `inv:${cid}:${inv}`;
        const first = this.memo.get(firstKey);
        if (first === undefined || (first as number) > score) {
          this.memo.set(firstKey, score);
          ops.zadd(k.inventoryFirst(cid), 'LT', at, inv);
        }
        ops.zadd(k.inventoryLast(cid), 'GT', at, inv);
      }
    }

    for (const res of ['m', 't'] as const) {
      const bucket = Math.floor(score / BUCKET_MS[res]);
      if (this.memo.get(`b:${res}:${bucket}`) === undefined) {
        this.memo.set(`b:${res}:${bucket}`, 1);
        ops.zadd(k.bucketRegistry, 'NX', bucket * BUCKET_MS[res], `${res}:${bucket}`);
      }
      for (let d = 0; d < TOP_DIMENSIONS.length; d++) {
        const v = topValue(record, TOP_DIMENSIONS[d] as TopDimension);
        if (v !== undefined) ops.incrTop(k, res, dir, d, bucket, v);
      }
    }
  }

  trim(pl: ChainableCommander, minTimeMs: number): void {
    pl.eval(TRIM_SCRIPT, 0, this.keys.prefix, Math.floor(minTimeMs), DIRECTIONS.join(','), TOP_DIMENSIONS.join(','));
  }

  /** True when `minute` is newer than what was last written for `key` (registries keep minute-fresh last-seen). */
  private advance(key: string, minute: number): boolean {
    const last = this.memo.get(key);
    if (last !== undefined && (last as number) >= minute) return false;
    this.memo.set(key, minute);
    return true;
  }
}
