import { newHourMemo, parseIsoAt, type Instant } from '../parse/time.js';
import type { FlowRecord } from '../record.js';
import { composeServiceOf, containerOf, remoteEndpoint } from './fields.js';
import type { CompiledRule, RuleSet, Severity } from './rules.js';
import { Baselines, createCheck, subjectOf, type StateCounters, type StatefulCheck } from './state.js';

/**
 * An alert as flat fields (one Redis stream entry, one webhook body, one API item). `kind` is `new` when a group
 * opens and `repeat` when a group that saw more than one matching record closes, with the final `count`.
 */
export interface Alert {
  /** Stream entry ID, once stored. */
  id?: string;
  rule: string;
  severity: Severity;
  description: string;
  kind: 'new' | 'repeat';
  /** Matching records in the group so far (1 for `new`). */
  count: number;
  /** `<rule>|<subject>|<remote>`: the grouping key, the same on a group's `new` and `repeat`. */
  group: string;
  /** @timestamp of the group's first and last matching record. */
  time: string;
  last: string;
  reason?: string;
  direction: string;
  transport?: string;
  src_ip?: string;
  src_port?: number;
  dst_ip?: string;
  dst_port?: number;
  remote_ip?: string;
  remote_port?: number;
  remote_country?: string;
  remote_asn?: number;
  container_id?: string;
  container_name?: string;
  service?: string;
  image?: string;
  host?: string;
  prefix?: string;
  /** Where the first record is stored (`<direction>/<entry id>`), when known (records read back from the store). */
  flow?: string;
}

export interface DetectorOptions {
  /** Default grouping window (a rule's `group_window` overrides it). */
  groupWindowMs: number;
  /** Open groups kept; past it the oldest is closed early. */
  maxGroups: number;
  /** Keys per stateful rule (subjects, targets); past it the least recently used is forgotten. */
  maxStateKeys: number;
  /** Where first-contact baselines live (shared with what persists them). */
  baselines?: Baselines;
  onAlert(alert: Alert): void;
  /** Every group as it closes, with its final count (whether or not a `repeat` was raised). */
  onGroupClosed?(alert: Alert): void;
}

interface Group {
  alert: Alert;
  count: number;
  last: string;
  untilMs: number;
}

interface ActiveRule {
  rule: CompiledRule;
  check: StatefulCheck | undefined;
}

/**
 * Runs compiled rules over records one at a time (live, or over history in time order) and groups what fires.
 * Synchronous and allocation-free for records no rule matches: each rule is one closure call.
 */
export class Detector {
  readonly counters: StateCounters & { groupsEvicted: number };
  readonly baselines: Baselines;
  /** Matching records per rule (after stateful conditions), for the per-rule counter. */
  readonly fired = new Map<string, number>();
  private active: ActiveRule[] = [];
  /** Checks that see every record (first contact's learning clock). */
  private watchers: StatefulCheck[] = [];
  private readonly groups = new Map<string, Group>();

  constructor(private readonly opts: DetectorOptions) {
    // The baselines' counters, when given, are the detector's too: one set of state counters.
    this.counters = Object.assign(opts.baselines?.counters ?? { evicted: 0, baselineFull: 0 }, { groupsEvicted: 0 });
    this.baselines = opts.baselines ?? new Baselines(opts.maxStateKeys, this.counters);
  }

  get rules(): readonly CompiledRule[] {
    return this.active.map((a) => a.rule);
  }

  get openGroups(): number {
    return this.groups.size;
  }

  /** State sizes by rule, for the metrics. */
  stateSizes(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const a of this.active) if (a.check !== undefined) out[a.rule.id] = a.check.size;
    return out;
  }

  /** Swaps in a new rule set; a stateful rule whose condition state is unchanged keeps its state. */
  setRules(set: RuleSet): void {
    const old = new Map(this.active.map((a) => [a.rule.id, a]));
    this.active = set.rules.map((rule) => {
      const prev = old.get(rule.id);
      if (rule.stateful === undefined) return { rule, check: undefined };
      if (prev?.check !== undefined && prev.rule.stateKey === rule.stateKey) return { rule, check: prev.check };
      return { rule, check: createCheck(rule.id, rule.stateful, this.opts.maxStateKeys, this.counters, this.baselines) };
    });
    this.watchers = this.active.flatMap((a) => (a.check?.seen !== undefined ? [a.check] : []));
    for (const rule of set.rules) if (!this.fired.has(rule.id)) this.fired.set(rule.id, 0);
  }

  /**
   * Windows and learning periods follow the records' own time (@timestamp, read only once a rule matches), so a
   * backlog or a replay is judged as it happened; `fallbackMs` stands in for an unreadable @timestamp. `flow`: where
   * the record is stored, when known.
   */
  observe(r: FlowRecord, fallbackMs: number, flow?: string): void {
    const watchers = this.watchers;
    for (let i = 0; i < watchers.length; i++) watchers[i]!.seen!(r, fallbackMs);
    const active = this.active;
    let timeMs = NaN;
    for (let i = 0; i < active.length; i++) {
      const a = active[i]!;
      if (!a.rule.matches(r)) continue;
      if (timeMs !== timeMs) timeMs = recordTimeMs(r, fallbackMs);
      let reason: string | undefined;
      if (a.check !== undefined) {
        reason = a.check.observe(r, timeMs);
        if (reason === undefined) continue;
      }
      this.fire(a.rule, r, timeMs, reason, flow);
    }
  }

  /** Closes groups whose window has passed (`nowMs` in the same clock as `observe`'s times). */
  sweep(nowMs: number): void {
    for (const [key, g] of this.groups) {
      if (g.untilMs > nowMs) continue;
      this.groups.delete(key);
      this.close(g);
    }
  }

  /** Closes every group (end of a hunt, shutdown). */
  flush(): void {
    for (const g of this.groups.values()) this.close(g);
    this.groups.clear();
  }

  private close(g: Group): void {
    this.opts.onGroupClosed?.({ ...g.alert, count: g.count, last: g.last });
    if (g.count > 1) this.opts.onAlert({ ...g.alert, kind: 'repeat', count: g.count, last: g.last });
  }

  private fire(rule: CompiledRule, r: FlowRecord, timeMs: number, reason: string | undefined, flow: string | undefined): void {
    this.fired.set(rule.id, (this.fired.get(rule.id) ?? 0) + 1);
    const remote = remoteEndpoint(r);
    const subject = subjectOf(r, 'container') ?? '';
    const key = `${rule.id}|${subject}|${remote.ip ?? ''}`;
    const g = this.groups.get(key);
    if (g !== undefined) {
      if (timeMs < g.untilMs) {
        g.count++;
        g.last = r['@timestamp'];
        return;
      }
      this.groups.delete(key);
      this.close(g);
    }
    const alert = toAlert(rule, r, key, reason, flow);
    this.groups.set(key, { alert, count: 1, last: alert.time, untilMs: timeMs + (rule.groupWindowMs ?? this.opts.groupWindowMs) });
    if (this.groups.size > this.opts.maxGroups) {
      const [oldestKey, oldest] = this.groups.entries().next().value as [string, Group];
      this.groups.delete(oldestKey);
      this.counters.groupsEvicted++;
      this.close(oldest);
    }
    this.opts.onAlert(alert);
  }
}

const instant: Instant = { ms: 0, micros: 0, precise: false };
const hour = newHourMemo();

/** The record's @timestamp in ms (the parser's ISO reader: no allocation, one Date.UTC per hour), else the fallback. */
export function recordTimeMs(r: FlowRecord, fallbackMs: number): number {
  const s = r['@timestamp'];
  return parseIsoAt(s, 0, instant, hour) === s.length ? instant.ms : fallbackMs;
}

function toAlert(rule: CompiledRule, r: FlowRecord, group: string, reason: string | undefined, flow: string | undefined): Alert {
  const c = containerOf(r);
  const remote = remoteEndpoint(r);
  const a: Alert = {
    rule: rule.id,
    severity: rule.severity,
    description: rule.description,
    kind: 'new',
    count: 1,
    group,
    time: r['@timestamp'],
    last: r['@timestamp'],
    direction: r.network.direction,
  };
  const set = <K extends keyof Alert>(k: K, v: Alert[K] | undefined): void => {
    if (v !== undefined) a[k] = v;
  };
  set('reason', reason);
  set('transport', r.network.transport);
  set('src_ip', r.source.ip);
  set('src_port', r.source.port);
  set('dst_ip', r.destination.ip);
  set('dst_port', r.destination.port);
  set('remote_ip', remote.ip);
  set('remote_port', remote.port);
  set('remote_country', remote.geo?.country_iso_code);
  set('remote_asn', remote.as?.number);
  set('container_id', c?.id);
  set('container_name', c?.name);
  set('service', composeServiceOf(r));
  set('image', c?.image?.name);
  set('host', r.host?.name);
  set('prefix', r.log?.prefix);
  set('flow', flow ?? r.event?.id);
  return a;
}

/** The alert's fields for XADD, in a fixed order; numbers as text. */
export function alertFields(a: Alert): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(a)) {
    if (k === 'id' || v === undefined) continue;
    out.push(k, String(v));
  }
  return out;
}

const NUMERIC: ReadonlySet<string> = new Set(['count', 'src_port', 'dst_port', 'remote_port', 'remote_asn']);

/** A stream entry back into an alert. */
export function alertFromFields(id: string, fields: readonly string[]): Alert {
  const a: Record<string, unknown> = { id };
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i]!;
    const v = fields[i + 1]!;
    a[k] = NUMERIC.has(k) ? Number(v) : v;
  }
  return a as unknown as Alert;
}
