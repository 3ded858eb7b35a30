import type { FlowRecord } from '../record.js';
import { composeServiceOf, containerOf, localEndpoint, lookupField } from './fields.js';
import type { BeaconSpec, FanOutSpec, FirstContactSpec, RateSpec, StatefulSpec } from './rules.js';

/** What bounded state gave up, by reason: the limits are hit rather than memory growing. */
export interface StateCounters {
  /** Keys (containers, services, targets) dropped, oldest first, to stay under the cap. */
  evicted: number;
  /** New values not remembered because a subject's baseline was full (no alert for them). */
  baselineFull: number;
}

/** Who state is kept for: a container (by name), a compose service (else the container), or a host. */
export function subjectOf(r: FlowRecord, per: 'container' | 'service' | 'host'): string | undefined {
  if (per === 'host') return r.host?.name;
  const c = containerOf(r);
  const name = per === 'service' ? (composeServiceOf(r) ?? c?.name) : c?.name;
  if (name !== undefined) return name;
  const ip = localEndpoint(r).ip;
  return ip === undefined ? undefined : `ip:${ip}`;
}

function valueReader(fields: readonly string[]): (r: FlowRecord) => string | undefined {
  const gets = fields.map((f) => lookupField(f)!.get);
  if (gets.length === 1) {
    const g = gets[0]!;
    return (r) => {
      const v = g(r);
      return v === undefined ? undefined : String(v);
    };
  }
  return (r) => {
    let out = '';
    for (let i = 0; i < gets.length; i++) {
      const v = gets[i]!(r);
      if (v === undefined) return undefined;
      out += i === 0 ? String(v) : `|${String(v)}`;
    }
    return out;
  };
}

/**
 * A Map bounded by `cap` with second-chance eviction: a read only marks an entry, and past the cap the oldest entry
 * not read since it was last passed over is dropped (a read entry is moved to the end instead). Reads cost a Map
 * lookup, not a delete and insert.
 */
class Lru<V> {
  readonly map = new Map<string, { v: V; hot: boolean }>();
  constructor(
    private readonly cap: number,
    private readonly counters: StateCounters,
    private readonly onEvict?: (key: string, v: V) => void,
  ) {}
  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    e.hot = true;
    return e.v;
  }
  set(key: string, v: V): void {
    const e = this.map.get(key);
    if (e !== undefined) {
      e.v = v;
      e.hot = true;
      return;
    }
    this.map.set(key, { v, hot: false });
    while (this.map.size > this.cap) {
      const [oldest, oe] = this.map.entries().next().value as [string, { v: V; hot: boolean }];
      this.map.delete(oldest);
      if (oe.hot) {
        oe.hot = false;
        this.map.set(oldest, oe);
        continue;
      }
      this.counters.evicted++;
      this.onEvict?.(oldest, oe.v);
    }
  }
  get size(): number {
    return this.map.size;
  }
  *entries(): IterableIterator<[string, V]> {
    for (const [k, e] of this.map) yield [k, e.v];
  }
  peek(key: string): V | undefined {
    return this.map.get(key)?.v;
  }
}

/** One stateful condition's state. `observe` is called for records that matched the rule's condition. */
export interface StatefulCheck {
  /** A sentence when the condition holds for this record, else undefined. */
  observe(r: FlowRecord, timeMs: number): string | undefined;
  /** Called for every record, matching or not, by checks whose clock starts when a subject is first seen. */
  seen?(r: FlowRecord, fallbackMs: number): void;
  readonly size: number;
}

/* ---------- first contact ---------- */

/** A subject's baseline: when its learning started and the values it has been seen with. */
export interface Baseline {
  start: number;
  values: Set<string>;
}

/**
 * Baselines of every first-contact rule, keyed `<rule>|<fields>|<subject>`. Changes are marked dirty and written by
 * the owner (to Redis, batched, off the hot path); `load` restores them at start.
 */
export class Baselines {
  private readonly lru: Lru<Baseline>;
  readonly dirty = new Set<string>();

  constructor(
    maxSubjects: number,
    readonly counters: StateCounters,
  ) {
    this.lru = new Lru(maxSubjects, counters, (key) => this.dirty.delete(key));
  }

  get(key: string): Baseline | undefined {
    return this.lru.get(key);
  }
  set(key: string, b: Baseline): void {
    this.lru.set(key, b);
    this.dirty.add(key);
  }
  touch(key: string): void {
    this.dirty.add(key);
  }
  get size(): number {
    return this.lru.size;
  }
  entries(): IterableIterator<[string, Baseline]> {
    return this.lru.entries();
  }
  /** Restores a stored baseline without marking it dirty. */
  restore(key: string, b: Baseline): void {
    this.lru.set(key, b);
  }
  /** Takes the dirty set for writing. */
  takeDirty(): [string, Baseline][] {
    const out: [string, Baseline][] = [];
    for (const key of this.dirty) {
      const b = this.lru.peek(key);
      if (b !== undefined) out.push([key, b]);
    }
    this.dirty.clear();
    return out;
  }
}

export function encodeBaseline(b: Baseline): string {
  return JSON.stringify({ s: b.start, v: [...b.values] });
}

export function decodeBaseline(json: string, maxValues: number): Baseline | undefined {
  try {
    const o = JSON.parse(json) as { s?: unknown; v?: unknown };
    if (typeof o.s !== 'number' || !Array.isArray(o.v)) return undefined;
    return { start: o.s, values: new Set(o.v.filter((x): x is string => typeof x === 'string').slice(0, maxValues)) };
  } catch {
    return undefined;
  }
}

/**
 * The learning period of a subject starts with its first record of any kind (not its first matching one), so that
 * "first egress" can fire for a container that had none while learning.
 */
class FirstContact implements StatefulCheck {
  private readonly value: (r: FlowRecord) => string | undefined;
  private readonly prefix: string;
  /** Subject → its baseline's key, so the hot path builds no string. Cleared when past the cap. */
  private readonly keys = new Map<string, string>();
  constructor(
    ruleId: string,
    private readonly spec: FirstContactSpec,
    private readonly baselines: Baselines,
    private readonly maxKeys: number,
  ) {
    this.value = valueReader(spec.of);
    this.prefix = `${ruleId}|${spec.of.join(',')}|`;
  }
  get size(): number {
    return this.keys.size;
  }
  private keyOf(subject: string): string {
    let key = this.keys.get(subject);
    if (key === undefined) {
      if (this.keys.size >= this.maxKeys) this.keys.clear();
      this.keys.set(subject, (key = this.prefix + subject));
    }
    return key;
  }
  seen(r: FlowRecord, timeMs: number): void {
    if (this.spec.per !== 'host' && containerOf(r) === undefined) return;
    const subject = subjectOf(r, this.spec.per);
    if (subject === undefined || this.keys.has(subject)) return;
    const key = this.keyOf(subject);
    if (this.baselines.get(key) === undefined) {
      const t = Date.parse(r['@timestamp']);
      this.baselines.set(key, { start: Number.isFinite(t) ? t : timeMs, values: new Set() });
    }
  }
  observe(r: FlowRecord, timeMs: number): string | undefined {
    const subject = subjectOf(r, this.spec.per);
    if (subject === undefined) return undefined;
    const value = this.value(r);
    if (value === undefined) return undefined;
    const key = this.keyOf(subject);
    let b = this.baselines.get(key);
    if (b === undefined) {
      b = { start: timeMs, values: new Set([value]) };
      this.baselines.set(key, b);
      return undefined;
    }
    if (b.values.has(value)) return undefined;
    if (b.values.size >= this.spec.max_values) {
      this.baselines.counters.baselineFull++;
      return undefined;
    }
    b.values.add(value);
    this.baselines.touch(key);
    if (timeMs - b.start < this.spec.learning) return undefined;
    return `first ${this.spec.of.join(', ')} ${value} for ${this.spec.per} ${subject} (learning since ${new Date(b.start).toISOString()}, ${b.values.size - 1} known)`;
  }
}

/* ---------- fan-out ---------- */

class FanOut implements StatefulCheck {
  private readonly value: (r: FlowRecord) => string | undefined;
  /** Per subject: distinct value → last seen, oldest first; never more than `more_than + 1` values. */
  private readonly subjects: Lru<Map<string, number>>;
  constructor(
    private readonly spec: FanOutSpec,
    maxKeys: number,
    counters: StateCounters,
  ) {
    this.value = valueReader(spec.distinct);
    this.subjects = new Lru(maxKeys, counters);
  }
  get size(): number {
    return this.subjects.size;
  }
  observe(r: FlowRecord, timeMs: number): string | undefined {
    const subject = subjectOf(r, this.spec.per);
    const value = this.value(r);
    if (subject === undefined || value === undefined) return undefined;
    let seen = this.subjects.get(subject);
    if (seen === undefined) this.subjects.set(subject, (seen = new Map()));
    seen.delete(value);
    seen.set(value, timeMs);
    const horizon = timeMs - this.spec.over;
    for (const [v, t] of seen) {
      if (t >= horizon && seen.size <= this.spec.more_than + 1) break;
      seen.delete(v);
    }
    if (seen.size <= this.spec.more_than) return undefined;
    return `${seen.size} distinct ${this.spec.distinct.join(', ')} in ${this.spec.over / 1000}s from ${this.spec.per} ${subject} (more than ${this.spec.more_than})`;
  }
}

/* ---------- rate ---------- */

class Rate implements StatefulCheck {
  /** Per subject: a ring of the last `more_than + 1` record times. */
  private readonly subjects: Lru<{ ring: Float64Array; next: number; filled: number }>;
  constructor(
    private readonly spec: RateSpec,
    maxKeys: number,
    counters: StateCounters,
  ) {
    this.subjects = new Lru(maxKeys, counters);
  }
  get size(): number {
    return this.subjects.size;
  }
  observe(r: FlowRecord, timeMs: number): string | undefined {
    const subject = subjectOf(r, this.spec.per);
    if (subject === undefined) return undefined;
    let s = this.subjects.get(subject);
    if (s === undefined) this.subjects.set(subject, (s = { ring: new Float64Array(this.spec.more_than + 1), next: 0, filled: 0 }));
    const n = s.ring.length;
    s.ring[s.next] = timeMs;
    s.next = (s.next + 1) % n;
    if (s.filled < n) s.filled++;
    if (s.filled < n) return undefined;
    // The ring is full: its oldest entry is the one `next` points at.
    const oldest = s.ring[s.next]!;
    if (timeMs - oldest > this.spec.over) return undefined;
    return `${n} new connections in ${((timeMs - oldest) / 1000).toFixed(1)}s from ${this.spec.per} ${subject} (more than ${this.spec.more_than} in ${this.spec.over / 1000}s)`;
  }
}

/* ---------- beaconing ---------- */

interface BeaconTarget {
  ring: Float64Array;
  next: number;
  filled: number;
  last: number;
}

/** Beacon targets kept per subject; past it the oldest target is forgotten (counted). */
const MAX_TARGETS_PER_SUBJECT = 1000;

class Beacon implements StatefulCheck {
  private readonly value: (r: FlowRecord) => string | undefined;
  /** Per subject, per target: the last `min_repeats + 1` contact times. */
  private readonly targets: Lru<Map<string, BeaconTarget>>;
  constructor(
    private readonly spec: BeaconSpec,
    maxKeys: number,
    private readonly counters: StateCounters,
  ) {
    this.value = valueReader(spec.of);
    // Each subject holds up to MAX_TARGETS_PER_SUBJECT targets: the subjects share the key budget.
    this.targets = new Lru(Math.max(100, Math.floor(maxKeys / 100)), counters);
  }
  get size(): number {
    return this.targets.size;
  }
  observe(r: FlowRecord, timeMs: number): string | undefined {
    const subject = subjectOf(r, this.spec.per);
    const target = this.value(r);
    if (subject === undefined || target === undefined) return undefined;
    let bySubject = this.targets.get(subject);
    if (bySubject === undefined) this.targets.set(subject, (bySubject = new Map()));
    let s = bySubject.get(target);
    if (s === undefined) {
      if (bySubject.size >= MAX_TARGETS_PER_SUBJECT) {
        bySubject.delete(bySubject.keys().next().value as string);
        this.counters.evicted++;
      }
      bySubject.set(target, (s = { ring: new Float64Array(this.spec.min_repeats + 1), next: 0, filled: 0, last: -Infinity }));
    }
    // Packets of one connection (or a retry burst) closer together than the shortest interval are one contact.
    if (timeMs - s.last < this.spec.min_interval) return undefined;
    s.last = timeMs;
    const n = s.ring.length;
    s.ring[s.next] = timeMs;
    s.next = (s.next + 1) % n;
    if (s.filled < n) s.filled++;
    if (s.filled < n) return undefined;
    let min = Infinity;
    let max = -Infinity;
    let prev = s.ring[s.next]!;
    for (let i = 1; i < n; i++) {
      const t = s.ring[(s.next + i) % n]!;
      const d = t - prev;
      prev = t;
      if (d < min) min = d;
      if (d > max) max = d;
    }
    if (max > this.spec.max_interval) return undefined;
    const jitter = (max - min) / 2;
    if (jitter > this.spec.max_jitter) return undefined;
    const mean = (min + max) / 2;
    return `${this.spec.min_repeats} repeats to ${target} every ${(mean / 1000).toFixed(1)}s ±${(jitter / 1000).toFixed(1)}s from ${this.spec.per} ${subject}`;
  }
}

export function createCheck(ruleId: string, s: StatefulSpec, maxKeys: number, counters: StateCounters, baselines: Baselines): StatefulCheck {
  switch (s.kind) {
    case 'first_contact':
      return new FirstContact(ruleId, s.spec, baselines, maxKeys);
    case 'fan_out':
      return new FanOut(s.spec, maxKeys, counters);
    case 'rate':
      return new Rate(s.spec, maxKeys, counters);
    case 'beacon':
      return new Beacon(s.spec, maxKeys, counters);
  }
}
