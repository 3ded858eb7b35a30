import type { Cluster, Redis } from 'ioredis';
import { canonicalIp as canonicalAddress } from '../../net/ip.js';
import type { Logger } from 'pino';
import { compareNanoText } from './ndjson.js';

/** Who a container is, as of one interval (a rename starts a new interval). */
export interface ContainerMeta {
  id: string;
  name: string;
  image: string;
  labels: Record<string, string>;
  /** Published container ports (`80/tcp`), when the engine said. */
  ports?: string[];
}

/** One address held by one container during [fromMs, toMs). */
export interface Holding {
  host: string;
  ip: string;
  container: ContainerMeta;
  mac?: string;
  network?: string;
  /** Host-side veth, learned from lines attributed unambiguously (the API does not tell it). */
  physdev?: string;
  fromMs: number;
  /** Absent while the container still holds the address. */
  toMs?: number;
  /** `event`: the end is exact; `observed`: noticed gone during reconciliation, the end is an upper bound. */
  closedBy?: 'event' | 'observed';
}

export type MatchKind = 'ip+mac' | 'ip+physdev' | 'ip' | 'ip-nearby';

export interface LookupHints {
  mac?: string;
  physdev?: string;
}

export interface LookupResult {
  holding: Holding;
  match: MatchKind;
}

export interface AddressRef {
  ip: string;
  mac?: string;
  network?: string;
}

export interface ContainerHistory {
  id: string;
  name: string;
  image: string;
  labels: Record<string, string>;
  addresses: Holding[];
}

export interface LedgerOptions {
  redis: Redis | Cluster;
  logger: Logger;
  /** Redis key prefix; keys are `<prefix>:hosts`, `<prefix>:<host>:holdings`, `<prefix>:<host>:cursor`. */
  keyPrefix?: string;
  /**
   * How far a line's time may be off the container's start or end and still match, when nothing holds the address at
   * exactly that time: syslog header times run up to 1 s early (imkmsg) or late (receive time).
   */
  clockSlackMs?: number;
  /** Closed intervals that ended longer ago than this are dropped by `prune()`. */
  retentionMs?: number;
  /** Delay before retrying a failed write to Redis. */
  flushRetryMs?: number;
}

interface HostLedger {
  byIp: Map<string, Holding[]>;
  byContainer: Map<string, Holding[]>;
  cursor?: string;
}

interface StoredHolding {
  ip: string;
  id: string;
  name: string;
  image: string;
  labels: Record<string, string>;
  ports?: string[];
  mac?: string;
  network?: string;
  physdev?: string;
  from: number;
  to?: number;
  closedBy?: 'event' | 'observed';
}

/**
 * The one spelling of an address used as a ledger key (the kernel prints IPv6 fully expanded, Docker compressed); an
 * unreadable address keeps its own.
 */
export function canonicalIp(ip: string): string {
  return canonicalAddress(ip) ?? ip;
}

/*
 * Several ingesters may watch the same Docker host and write the same intervals. Each write is therefore a merge, run
 * in Redis on one key (so it also runs on a Redis Cluster): an end already stored is not undone by a process that has
 * not seen it yet, an exact end (`event`) beats an observed one, and a MAC or veth learned by one process is kept when
 * another writes the interval without it. The event cursor only moves forward.
 *
 * KEYS[1]: the host's holdings hash. ARGV: field, then the interval's JSON.
 */
const MERGE_HOLDING_SCRIPT = `
local new = cjson.decode(ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' then
    if o.to ~= nil and (new.to == nil or (o.closedBy == 'event' and new.closedBy ~= 'event')) then
      new.to = o.to
      new.closedBy = o.closedBy
    end
    if new.physdev == nil then new.physdev = o.physdev end
    if new.mac == nil then new.mac = o.mac end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(new))
return 1
`;

/** KEYS[1]: the host's cursor; ARGV[1]: a Docker event timeNano (decimal digits, no leading zero). Keeps the later. */
const ADVANCE_CURSOR_SCRIPT = `
local old = redis.call('GET', KEYS[1])
local new = ARGV[1]
if old and (#old > #new or (#old == #new and old >= new)) then return 0 end
redis.call('SET', KEYS[1], new)
return 1
`;

function holdingKey(h: Holding): string {
  return `${h.container.id}|${h.ip}|${h.fromMs}`;
}

/**
 * For each (Docker host, address), the intervals during which each container held it. Everything is in memory for
 * lookups; every change is written to Redis in the background and read back by `load()`, so a restart forgets nothing.
 */
export class Ledger {
  private readonly redis: Redis | Cluster;
  private readonly logger: Logger;
  private readonly prefix: string;
  private readonly slackMs: number;
  private readonly retentionMs: number;
  private readonly flushRetryMs: number;
  private byHost = new Map<string, HostLedger>();
  private readonly dirty = new Map<string, { host: string; holding: Holding }>();
  private readonly dirtyCursors = new Set<string>();
  private readonly deleted = new Map<string, string>();
  private flushing: Promise<void> = Promise.resolve();
  private flushQueued = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(opts: LedgerOptions) {
    this.redis = opts.redis;
    this.logger = opts.logger;
    this.prefix = opts.keyPrefix ?? 'dockflow:ledger';
    this.slackMs = opts.clockSlackMs ?? 1000;
    this.retentionMs = opts.retentionMs ?? 30 * 86_400_000;
    this.flushRetryMs = opts.flushRetryMs ?? 1000;
  }

  /** Reads everything persisted before; call once before the watchers start. */
  async load(): Promise<void> {
    const hosts = await this.redis.smembers(`${this.prefix}:hosts`);
    for (const host of hosts) {
      const [stored, cursor] = await Promise.all([
        this.redis.hgetall(`${this.prefix}:${host}:holdings`),
        this.redis.get(`${this.prefix}:${host}:cursor`),
      ]);
      const hl = this.hostLedger(host);
      if (cursor) hl.cursor = cursor;
      const holdings: Holding[] = [];
      for (const [field, json] of Object.entries(stored)) {
        const h = this.decode(host, json);
        if (h) holdings.push(h);
        else this.logger.warn({ host, field }, 'ledger: skipping an unreadable stored interval');
      }
      holdings.sort((a, b) => a.fromMs - b.fromMs);
      for (const h of holdings) this.insert(hl, h);
    }
  }

  /**
   * Replaces what is in memory with what Redis holds now: for a process that only reads the ledger (an API process
   * beside the ingesters, which keep it). Changes not yet written are not kept.
   */
  async reload(): Promise<void> {
    const fresh = new Ledger({ redis: this.redis, logger: this.logger, keyPrefix: this.prefix, clockSlackMs: this.slackMs, retentionMs: this.retentionMs });
    await fresh.load();
    this.byHost = fresh.byHost;
  }

  hosts(): string[] {
    return [...this.byHost.keys()];
  }

  /** Records that `meta` holds `addr` from `fromMs`; a no-op when it already holds it (events may be replayed). */
  open(host: string, meta: ContainerMeta, addr: AddressRef, fromMs: number): void {
    const hl = this.hostLedger(host);
    const ip = canonicalIp(addr.ip);
    const current = hl.byContainer.get(meta.id)?.find((h) => h.ip === ip && h.toMs === undefined);
    if (current) {
      if (addr.mac && current.mac !== addr.mac) {
        current.mac = addr.mac;
        this.markDirty(current);
      }
      return;
    }
    const h: Holding = { host, ip, container: meta, fromMs };
    if (addr.mac) h.mac = addr.mac;
    if (addr.network) h.network = addr.network;
    this.insert(hl, h);
    this.markDirty(h);
  }

  /**
   * Ends the container's intervals (one address, or all) at `toMs`. An exact end (`event`) also corrects an end that
   * reconciliation only observed later; an interval that began after `toMs` is left alone (a replayed old event).
   */
  release(host: string, containerId: string, toMs: number, opts: { ip?: string; closedBy?: 'event' | 'observed' } = {}): void {
    const closedBy = opts.closedBy ?? 'event';
    const ip = opts.ip === undefined ? undefined : canonicalIp(opts.ip);
    for (const h of this.byHost.get(host)?.byContainer.get(containerId) ?? []) {
      if (ip !== undefined && h.ip !== ip) continue;
      if (h.fromMs > toMs) continue;
      const correctable = h.closedBy === 'observed' && closedBy === 'event' && h.toMs !== undefined && h.toMs > toMs;
      if (h.toMs !== undefined && !correctable) continue;
      h.toMs = toMs;
      h.closedBy = closedBy;
      this.markDirty(h);
    }
  }

  /** A rename ends the intervals under the old name and starts them again under the new one. */
  rename(host: string, containerId: string, name: string, atMs: number): void {
    for (const h of this.openHoldings(host, containerId)) {
      if (h.container.name === name) continue;
      const meta = { ...h.container, name };
      if (h.fromMs === atMs) {
        h.container = meta;
        this.markDirty(h);
        continue;
      }
      this.release(host, containerId, atMs, { ip: h.ip });
      const addr: AddressRef = { ip: h.ip };
      if (h.mac) addr.mac = h.mac;
      if (h.network) addr.network = h.network;
      this.open(host, meta, addr, atMs);
    }
  }

  openHoldings(host: string, containerId: string): Holding[] {
    return (this.byHost.get(host)?.byContainer.get(containerId) ?? []).filter((h) => h.toMs === undefined);
  }

  openContainerIds(host: string): string[] {
    const ids: string[] = [];
    for (const [id, hs] of this.byHost.get(host)?.byContainer ?? []) if (hs.some((h) => h.toMs === undefined)) ids.push(id);
    return ids;
  }

  /** Who held `ip` on `host` at `timeMs`. In memory only: this runs per record. */
  lookup(host: string, ip: string, timeMs: number, hints?: LookupHints): LookupResult | undefined {
    const list = this.byHost.get(host)?.byIp.get(canonicalIp(ip));
    if (list === undefined) return undefined;
    const slack = this.slackMs;
    let best: Holding | undefined;
    let bestScore = -1;
    // Newest first, so that among equals the latest claim on the address wins.
    for (let i = list.length - 1; i >= 0; i--) {
      const h = list[i]!;
      const to = h.toMs ?? Number.POSITIVE_INFINITY;
      if (timeMs < h.fromMs - slack || timeMs >= to + slack) continue;
      let score = timeMs >= h.fromMs && timeMs < to ? 1 : 0;
      if (hints?.mac !== undefined && h.mac === hints.mac) score += 4;
      if (hints?.physdev !== undefined && h.physdev === hints.physdev) score += 2;
      if (score > bestScore) {
        best = h;
        bestScore = score;
      }
    }
    if (best === undefined) return undefined;
    const match: MatchKind = bestScore >= 4 ? 'ip+mac' : bestScore >= 2 ? 'ip+physdev' : bestScore === 1 ? 'ip' : 'ip-nearby';
    return { holding: best, match };
  }

  /** Remembers the host-side veth of an interval once a line has shown it. */
  notePhysdev(h: Holding, physdev: string): void {
    if (h.physdev === physdev) return;
    h.physdev = physdev;
    this.markDirty(h);
  }

  /** Intervals of one address (or all addresses) on a host, oldest first. */
  history(host: string, ip?: string): Holding[] {
    const hl = this.byHost.get(host);
    if (!hl) return [];
    if (ip !== undefined) return [...(hl.byIp.get(canonicalIp(ip)) ?? [])];
    return [...hl.byIp.values()].flat().sort((a, b) => a.fromMs - b.fromMs);
  }

  /** Containers seen on a host with their address history; the newest name, image and labels. */
  containers(host: string): ContainerHistory[] {
    const out: ContainerHistory[] = [];
    for (const [id, hs] of this.byHost.get(host)?.byContainer ?? []) {
      const addresses = [...hs].sort((a, b) => a.fromMs - b.fromMs);
      const latest = addresses[addresses.length - 1]!.container;
      out.push({ id, name: latest.name, image: latest.image, labels: latest.labels, addresses });
    }
    return out.sort((a, b) => a.addresses[0]!.fromMs - b.addresses[0]!.fromMs);
  }

  /** The `timeNano` of the last event handled for a host, to resume `/events` after a restart. */
  cursor(host: string): string | undefined {
    return this.byHost.get(host)?.cursor;
  }

  setCursor(host: string, timeNanoText: string): void {
    const hl = this.hostLedger(host);
    if (hl.cursor !== undefined && compareNanoText(hl.cursor, timeNanoText) >= 0) return;
    hl.cursor = timeNanoText;
    this.dirtyCursors.add(host);
    this.scheduleFlush();
  }

  /** Drops intervals that ended before `nowMs - retentionMs`. */
  prune(nowMs: number): number {
    const cutoff = nowMs - this.retentionMs;
    let dropped = 0;
    for (const [host, hl] of this.byHost) {
      for (const [key, list] of hl.byIp) {
        const keep = list.filter((h) => h.toMs === undefined || h.toMs >= cutoff);
        if (keep.length === list.length) continue;
        for (const h of list) {
          if (keep.includes(h)) continue;
          this.deleted.set(holdingKey(h), host);
          this.dirty.delete(`${host}\n${holdingKey(h)}`);
          dropped++;
        }
        if (keep.length === 0) hl.byIp.delete(key);
        else hl.byIp.set(key, keep);
      }
      for (const [id, list] of hl.byContainer) {
        const keep = list.filter((h) => h.toMs === undefined || h.toMs >= cutoff);
        if (keep.length === 0) hl.byContainer.delete(id);
        else if (keep.length !== list.length) hl.byContainer.set(id, keep);
      }
    }
    if (dropped > 0) this.scheduleFlush();
    return dropped;
  }

  /** Resolves once every change made so far is in Redis (or the write failed and a retry is scheduled). */
  flush(): Promise<void> {
    this.scheduleFlush();
    return this.flushing;
  }

  /** Writes what is pending and stops retrying. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  private hostLedger(host: string): HostLedger {
    let hl = this.byHost.get(host);
    if (!hl) {
      hl = { byIp: new Map(), byContainer: new Map() };
      this.byHost.set(host, hl);
    }
    return hl;
  }

  private insert(hl: HostLedger, h: Holding): void {
    let list = hl.byIp.get(h.ip);
    if (!list) hl.byIp.set(h.ip, (list = []));
    let at = list.length;
    while (at > 0 && list[at - 1]!.fromMs > h.fromMs) at--;
    list.splice(at, 0, h);
    let mine = hl.byContainer.get(h.container.id);
    if (!mine) hl.byContainer.set(h.container.id, (mine = []));
    mine.push(h);
  }

  private markDirty(h: Holding): void {
    this.dirty.set(`${h.host}\n${holdingKey(h)}`, { host: h.host, holding: h });
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushQueued || this.closed) return;
    this.flushQueued = true;
    this.flushing = this.flushing.then(() => {
      this.flushQueued = false;
      return this.write();
    });
  }

  private async write(): Promise<void> {
    if (this.dirty.size === 0 && this.dirtyCursors.size === 0 && this.deleted.size === 0) return;
    const dirty = [...this.dirty.entries()];
    const cursors = [...this.dirtyCursors];
    const deleted = [...this.deleted.entries()];
    this.dirty.clear();
    this.dirtyCursors.clear();
    this.deleted.clear();
    // One command per key (each merge is atomic on its own), not one transaction: the keys are in many hash slots.
    const writes: Array<Promise<unknown>> = [];
    const hosts = new Set<string>([...dirty.map(([, d]) => d.host), ...cursors]);
    if (hosts.size > 0) writes.push(this.redis.sadd(`${this.prefix}:hosts`, ...hosts));
    for (const [, { host, holding }] of dirty) writes.push(this.redis.eval(MERGE_HOLDING_SCRIPT, 1, `${this.prefix}:${host}:holdings`, holdingKey(holding), this.encode(holding)));
    for (const [field, host] of deleted) writes.push(this.redis.hdel(`${this.prefix}:${host}:holdings`, field));
    for (const host of cursors) {
      const cursor = this.byHost.get(host)?.cursor;
      if (cursor) writes.push(this.redis.eval(ADVANCE_CURSOR_SCRIPT, 1, `${this.prefix}:${host}:cursor`, cursor));
    }
    try {
      // Every write is idempotent: after a failure all of them are sent again.
      const failed = (await Promise.allSettled(writes)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (err) {
      // Keep what failed unless something newer replaced it meanwhile, and try again later.
      for (const [key, d] of dirty) if (!this.dirty.has(key)) this.dirty.set(key, d);
      for (const host of cursors) this.dirtyCursors.add(host);
      for (const [field, host] of deleted) this.deleted.set(field, host);
      this.logger.warn({ err }, 'ledger: writing to Redis failed; will retry');
      if (!this.closed && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.scheduleFlush();
        }, this.flushRetryMs);
        this.retryTimer.unref();
      }
    }
  }

  private encode(h: Holding): string {
    const s: StoredHolding = { ip: h.ip, id: h.container.id, name: h.container.name, image: h.container.image, labels: h.container.labels, from: h.fromMs };
    if (h.container.ports !== undefined) s.ports = h.container.ports;
    if (h.mac) s.mac = h.mac;
    if (h.network) s.network = h.network;
    if (h.physdev) s.physdev = h.physdev;
    if (h.toMs !== undefined) s.to = h.toMs;
    if (h.closedBy) s.closedBy = h.closedBy;
    return JSON.stringify(s);
  }

  private decode(host: string, json: string): Holding | undefined {
    let s: Partial<StoredHolding>;
    try {
      s = JSON.parse(json) as Partial<StoredHolding>;
    } catch {
      return undefined;
    }
    if (typeof s.ip !== 'string' || typeof s.id !== 'string' || typeof s.from !== 'number') return undefined;
    const h: Holding = {
      host,
      ip: s.ip,
      container: { id: s.id, name: s.name ?? '', image: s.image ?? '', labels: s.labels ?? {}, ...(Array.isArray(s.ports) ? { ports: s.ports } : {}) },
      fromMs: s.from,
    };
    if (s.mac) h.mac = s.mac;
    if (s.network) h.network = s.network;
    if (s.physdev) h.physdev = s.physdev;
    if (typeof s.to === 'number') h.toMs = s.to;
    if (s.closedBy) h.closedBy = s.closedBy;
    return h;
  }
}
