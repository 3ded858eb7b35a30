import { canonicalIp } from '../net/ip.js';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { DockflowError, ErrorCode } from '../errors.js';
import { addressHex, containerMeta, containerSide, remoteSide, shortContainerId } from './encode.js';
import { IndexOps } from './index-ops.js';
import { INDEX_DIMS, storeKeys, type StoreKeys } from './keys.js';
import type { IndexEntry, StreamIndexer } from './types.js';

/*
 * Per-partition indexes, written in the same transaction as the partition's entries (all keys share its hash tag):
 *
 *   :v                      zset (scores 0)  `<dim>|<value>` of every indexed value present, lex-ordered: addresses
 *                                            are fixed-width hex, so a CIDR is one ZRANGEBYLEX
 *   :r:<dim>|<value>        string           the entry numbers holding the value, 4-byte big-endian, ascending
 *                                            (APPENDed per batch): 4 bytes per record and value, no per-record key
 *   :n:<top dim>:<dir code> zset             value → records (top-N)
 *   :f:<ctr> / :l:<ctr>     zset             inventory member → first / last packet time
 *
 * Global registries (hash tag {g}), written before the batch in a command of their own (idempotent):
 *   ctr (container short id → JSON), as (AS number → name). The writer lists partitions itself (parts).
 */

export const DIRECTION_CODE: Readonly<Record<Direction, string>> = {
  egress: 'e',
  ingress: 'i',
  internal: 'n',
  'container-to-host': 'c',
  'host-to-container': 'h',
  other: 'o',
};
export const CODE_DIRECTION = new Map<string, Direction>(DIRECTIONS.map((d) => [DIRECTION_CODE[d], d]));

export const TOP_DIMENSIONS = ['dst', 'port', 'country', 'asn', 'container'] as const;
export type TopDimension = (typeof TOP_DIMENSIONS)[number];

export const CONTAINER_ID_RE = /^[0-9a-f]{12,64}$/;

/** Ports at or above this are not indexed (Linux's default ephemeral range starts here): a filter on one scans. */
export const EPHEMERAL_MIN = 32768;

const PREFIX_RE = /^[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)*$/;

export function validateKeyPrefix(prefix: string): string {
  if (prefix.length > 64 || !PREFIX_RE.test(prefix)) {
    throw new DockflowError(ErrorCode.CONFIG_INVALID, `Redis key prefix ${JSON.stringify(prefix)} must be [A-Za-z0-9_.-] segments joined by ':'`);
  }
  return prefix;
}

export { canonicalIp, containerSide, remoteSide };

export function composeService(record: FlowRecord): string | undefined {
  return record.container?.labels?.['com.docker.compose.service'];
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

/** The index values (`<dim>|<value>`) of a record, each once. Pure: queries and tests use it as the definition. */
export function indexValues(record: FlowRecord): string[] {
  const out = new Set<string>();
  const dir = record.network.direction;
  out.add(`${INDEX_DIMS.direction}|${DIRECTION_CODE[dir]}`);
  const c = shortContainerId(record.container);
  if (c !== '') out.add(`${INDEX_DIMS.container}|${c}`);
  const pc = shortContainerId(record.peer_container);
  if (pc !== '') out.add(`${INDEX_DIMS.container}|${pc}`);
  for (const ip of [record.source.ip, record.destination.ip]) {
    const hex = ip !== undefined ? addressHex(ip) : '';
    if (hex !== '') out.add(`${INDEX_DIMS.address}|${hex}`);
  }
  for (const port of [record.source.port, record.destination.port]) {
    if (port !== undefined && port < EPHEMERAL_MIN) out.add(`${INDEX_DIMS.port}|${port}`);
  }
  const remote = record[remoteSide(dir)];
  // Values become key names: only the shapes expected of them.
  const cc = remote.geo?.country_iso_code;
  if (cc !== undefined && /^[A-Z]{2}$/.test(cc)) out.add(`${INDEX_DIMS.country}|${cc}`);
  const asn = remote.as?.number;
  if (asn !== undefined && Number.isSafeInteger(asn) && asn >= 0) out.add(`${INDEX_DIMS.asn}|${asn}`);
  return [...out];
}

/** What the index writes take from one record. */
export interface RecordFacts {
  direction: Direction;
  timeMs: number;
  values: string[];
  /** Counted values, in `TOP_DIMENSIONS` order. */
  top: Array<string | undefined>;
  /** Container short id and its inventory member. */
  inventory: { container: string; member: string } | undefined;
  /** Registry entries the record refers to: container short id → JSON, AS number → name. */
  containers: Array<[string, string]>;
  asName: [string, string] | undefined;
}

/**
 * Frozen container objects (the attribution stage shares one per container) → their registry JSON, so the JSON is
 * made once per container rather than per record.
 */
const metaJson = new WeakMap<object, string>();
function containerJson(c: NonNullable<FlowRecord['container']>): string {
  let json = metaJson.get(c);
  if (json === undefined) {
    json = JSON.stringify(containerMeta(c));
    if (Object.isFrozen(c)) metaJson.set(c, json);
  }
  return json;
}

export interface FlowIndexerOptions {
  keyPrefix: string;
  /** Registry entries remembered as written, to skip rewriting them. */
  memoMaxEntries?: number;
}

/** The StreamIndexer the stream writer applies with each batch (one partition per batch): see the layout above. */
export class FlowIndexer implements StreamIndexer<RecordFacts> {
  readonly keys: StoreKeys;
  private readonly memoMax: number;
  /** Registry writes already made (`c<id><json>`, `a<num>`); forgotten on any doubt. */
  private readonly written = new Set<string>();

  constructor(opts: FlowIndexerOptions) {
    this.keys = storeKeys(validateKeyPrefix(opts.keyPrefix));
    this.memoMax = opts.memoMaxEntries ?? 100_000;
  }

  facts(record: FlowRecord): RecordFacts {
    const dir = record.network.direction;
    const remote = record[remoteSide(dir)];
    const cid = shortContainerId(record.container);
    const asn = remote.as?.number;
    const containers: Array<[string, string]> = [];
    if (cid !== '') containers.push([cid, containerJson(record.container!)]);
    const pc = shortContainerId(record.peer_container);
    if (pc !== '') containers.push([pc, containerJson(record.peer_container!)]);
    const inv = cid !== '' ? inventoryMember(record) : undefined;
    const port = record.destination.port;
    const dst = record.destination.ip !== undefined ? canonicalIp(record.destination.ip) : undefined;
    const orgName = remote.as?.organization?.name;
    return {
      direction: dir,
      timeMs: Date.parse(record['@timestamp']),
      values: indexValues(record),
      top: [dst, port !== undefined ? `${record.network.transport ?? 'unknown'}/${port}` : undefined, remote.geo?.country_iso_code, asn !== undefined ? String(asn) : undefined, cid !== '' ? cid : undefined],
      inventory: inv !== undefined ? { container: cid, member: inv } : undefined,
      containers,
      asName: asn !== undefined && orgName !== undefined ? [String(asn), orgName] : undefined,
    };
  }

  /** Forget which registry entries were written (the writer calls this after a failure or a reconnection). */
  forget(): void {
    this.written.clear();
  }

  build(entries: readonly IndexEntry<RecordFacts>[]): IndexOps | undefined {
    const first = entries[0];
    if (first === undefined) return undefined;
    const part = first.partition;
    const ops = new IndexOps();
    const k = this.keys;
    const valuesKey = ops.key(k.values(part));
    const refs = new Map<string, number[]>();
    const topKeys = new Map<string, number>();
    const inventoryKeys = new Map<string, [number, number]>();
    for (const e of entries) {
      const f = e.facts;
      const n = entryNumber(e.id);
      if (n === undefined) continue;
      for (const v of f.values) {
        let list = refs.get(v);
        if (list === undefined) refs.set(v, (list = []));
        list.push(n);
      }
      const code = DIRECTION_CODE[f.direction];
      for (let d = 0; d < f.top.length; d++) {
        const value = f.top[d];
        // null: a facts array read back from a spool frame (JSON writes undefined in arrays as null).
        if (value === undefined || value === null) continue;
        const name = `${TOP_DIMENSIONS[d]}:${code}`;
        let key = topKeys.get(name);
        if (key === undefined) topKeys.set(name, (key = ops.key(k.top(part, TOP_DIMENSIONS[d]!, code))));
        ops.incr(key, value);
      }
      const inv = f.inventory;
      if (inv !== undefined && Number.isFinite(f.timeMs)) {
        let keys = inventoryKeys.get(inv.container);
        if (keys === undefined) {
          keys = [ops.key(k.inventoryFirst(part, inv.container)), ops.key(k.inventoryLast(part, inv.container))];
          inventoryKeys.set(inv.container, keys);
        }
        ops.zaddIf(keys[0], 'LT', f.timeMs, inv.member);
        ops.zaddIf(keys[1], 'GT', f.timeMs, inv.member);
      }
    }
    for (const [value, list] of refs) {
      const buf = Buffer.allocUnsafe(list.length * 4);
      for (let i = 0; i < list.length; i++) buf.writeUInt32BE(list[i]!, i * 4);
      ops.append(ops.key(k.refs(part, value)), buf);
      ops.zadd(valuesKey, '0', value);
    }
    return ops;
  }

  /** The global registry writes a batch needs that were not made yet (undefined when none). */
  registry(entries: readonly IndexEntry<RecordFacts>[]): IndexOps | undefined {
    if (this.written.size >= this.memoMax) this.written.clear();
    const ops = new IndexOps();
    const k = this.keys;
    const mark = (memo: string): boolean => {
      if (this.written.has(memo)) return false;
      this.written.add(memo);
      return true;
    };
    for (const e of entries) {
      for (const [id, json] of e.facts.containers) if (mark(`c${id}${json}`)) ops.hset(ops.key(k.containers), id, json);
      const as = e.facts.asName;
      if (as !== undefined && mark(`a${as[0]}`)) ops.hset(ops.key(k.asNames), as[0], as[1]);
    }
    if (ops.empty) return undefined;
    return ops;
  }
}

/** The entry number of a partition entry ID (`<bucket start>-<n>`). */
export function entryNumber(id: string): number | undefined {
  const dash = id.indexOf('-');
  const n = Number(id.slice(dash + 1));
  return dash > 0 && Number.isSafeInteger(n) && n >= 0 && n <= 0xffffffff ? n : undefined;
}
