import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { compileCondition, ConditionError, type Predicate } from './condition.js';
import { lookupField } from './fields.js';

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** `90s`, `10m`, `24h`, `30d`, `500ms`, or a number of milliseconds. */
export function parseDuration(text: string | number): number | undefined {
  if (typeof text === 'number') return Number.isFinite(text) && text >= 0 ? text : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$/.exec(text);
  if (m === null) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 'ms'];
  return Math.round(Number(m[1]) * unit);
}

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use 500ms, 30s, 10m, 24h, 7d)` });
    return z.NEVER;
  }
  return ms;
});
const count = z.number().int().min(1).max(100_000);
const subjectKind = z.enum(['container', 'service', 'host']);
const fieldList = z.union([z.string(), z.array(z.string()).min(1).max(4)]).transform((v) => (typeof v === 'string' ? [v] : v));

/** The stateful conditions: each says what it keeps, per what, for how long. */
const FirstContactSchema = z.strictObject({
  of: fieldList,
  per: subjectKind.default('service'),
  learning: duration,
  max_values: count.default(1000),
});
const FanOutSchema = z.strictObject({ distinct: fieldList, more_than: count.max(10_000), over: duration, per: subjectKind.default('container') });
const RateSchema = z.strictObject({ more_than: count.max(10_000), over: duration, per: subjectKind.default('container') });
const BeaconSchema = z.strictObject({
  min_repeats: z.number().int().min(2).max(100),
  max_jitter: duration,
  min_interval: duration.default(5000),
  max_interval: duration.default(3_600_000),
  per: subjectKind.default('container'),
  /** What one beacon target is: the remote address by default, or address and port. */
  of: fieldList.default(['remote.ip']),
});

export type FirstContactSpec = z.output<typeof FirstContactSchema>;
export type FanOutSpec = z.output<typeof FanOutSchema>;
export type RateSpec = z.output<typeof RateSchema>;
export type BeaconSpec = z.output<typeof BeaconSchema>;
export type StatefulSpec =
  | { kind: 'first_contact'; spec: FirstContactSpec }
  | { kind: 'fan_out'; spec: FanOutSpec }
  | { kind: 'rate'; spec: RateSpec }
  | { kind: 'beacon'; spec: BeaconSpec };

const ListItem = z.strictObject({ list: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), items: z.array(z.union([z.string(), z.number()])), append: z.boolean().optional() });
const MacroItem = z.strictObject({ macro: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), condition: z.string().min(1) });
const RuleItem = z.strictObject({
  rule: z.string().regex(/^[A-Za-z0-9_.-]+$/).max(100),
  description: z.string().optional(),
  severity: z.enum(SEVERITIES).optional(),
  condition: z.string().min(1).optional(),
  exceptions: z.array(z.strictObject({ name: z.string(), condition: z.string().min(1) })).optional(),
  enabled: z.boolean().optional(),
  tags: z.array(z.string()).optional(),
  /** Repeats of this rule for one container and remote within this window are one alert with a count. */
  group_window: duration.optional(),
  first_contact: FirstContactSchema.optional(),
  fan_out: FanOutSchema.optional(),
  rate: RateSchema.optional(),
  beacon: BeaconSchema.optional(),
});
type RuleInput = z.output<typeof RuleItem>;

export interface CompiledRule {
  id: string;
  description: string;
  severity: Severity;
  tags: readonly string[];
  /** The condition and none of the exceptions. */
  matches: Predicate;
  stateful?: StatefulSpec;
  groupWindowMs?: number;
  /** The file that defined (or last changed) it. */
  source: string;
  /** JSON of the stateful spec: state is kept across reloads while it does not change. */
  stateKey: string;
}

export interface RuleSet {
  rules: readonly CompiledRule[];
  files: readonly string[];
}

export class RuleLoadError extends Error {
  override name = 'RuleLoadError';
}

/** The `.yaml`/`.yml` files of a directory (sorted), or the file itself. */
export function ruleFiles(path: string): string[] {
  const st = statSync(path);
  if (!st.isDirectory()) return [path];
  return readdirSync(path)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => join(path, f));
}

interface Item {
  file: string;
  index: number;
  value: unknown;
}

/** Bounds on what one rule file may hold. */
const MAX_FILE_BYTES = 1024 * 1024;
const MAX_ITEMS = 5000;

function readItems(file: string, text?: string): Item[] {
  const src = text ?? readFileSync(file, 'utf8');
  if (src.length > MAX_FILE_BYTES) throw new RuleLoadError(`${file}: larger than ${MAX_FILE_BYTES} bytes`);
  const items: Item[] = [];
  for (const doc of parseAllDocuments(src)) {
    if (doc.errors.length > 0) throw new RuleLoadError(`${file}: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    if (!Array.isArray(value)) throw new RuleLoadError(`${file}: expected a list of rule, macro and list items`);
    for (const v of value) items.push({ file, index: items.length, value: v });
  }
  if (items.length > MAX_ITEMS) throw new RuleLoadError(`${file}: more than ${MAX_ITEMS} items`);
  return items;
}

const where = (it: Item): string => `${it.file} item ${it.index + 1}`;

function issue(it: Item, err: z.ZodError): RuleLoadError {
  const first = err.issues[0]!;
  const path = first.path.join('.');
  return new RuleLoadError(`${where(it)}: ${path !== '' ? `${path}: ` : ''}${first.message}`);
}

function checkFields(it: Item, fields: readonly string[]): void {
  for (const f of fields) if (lookupField(f) === undefined) throw new RuleLoadError(`${where(it)}: unknown field '${f}'`);
}

/**
 * Reads and compiles rule files in order: lists, macros and rules of later files override earlier ones by name
 * (a list with `append: true` extends it; a rule given only `rule` and `enabled` switches one on or off). Throws
 * RuleLoadError naming the file and item of the first problem.
 */
export function loadRules(files: readonly string[], texts: ReadonlyMap<string, string> = new Map()): RuleSet {
  const items: Item[] = [];
  for (const f of files) {
    try {
      items.push(...readItems(f, texts.get(f)));
    } catch (err) {
      if (err instanceof RuleLoadError) throw err;
      throw new RuleLoadError(`${f}: ${(err as Error).message}`);
    }
  }
  const lists = new Map<string, string[]>();
  const macros = new Map<string, string>();
  const rules = new Map<string, RuleInput & { source: string; item: Item }>();
  for (const it of items) {
    const v = it.value as Record<string, unknown>;
    if (typeof v !== 'object' || v === null) throw new RuleLoadError(`${where(it)}: expected a mapping`);
    if ('list' in v) {
      const p = ListItem.safeParse(v);
      if (!p.success) throw issue(it, p.error);
      const expanded = p.data.items.flatMap((x) => lists.get(String(x)) ?? [String(x)]);
      lists.set(p.data.list, p.data.append === true ? [...(lists.get(p.data.list) ?? []), ...expanded] : expanded);
    } else if ('macro' in v) {
      const p = MacroItem.safeParse(v);
      if (!p.success) throw issue(it, p.error);
      macros.set(p.data.macro, p.data.condition);
    } else if ('rule' in v) {
      const p = RuleItem.safeParse(v);
      if (!p.success) throw issue(it, p.error);
      const prev = rules.get(p.data.rule);
      const merged = { ...(prev ?? {}), ...definedOnly(p.data), source: it.file, item: it } as RuleInput & { source: string; item: Item };
      rules.set(p.data.rule, merged);
    } else {
      throw new RuleLoadError(`${where(it)}: expected a rule, macro or list`);
    }
  }
  const scope = { lists, macros, compiled: new Map() };
  const compiled: CompiledRule[] = [];
  for (const r of rules.values()) {
    if (r.enabled === false) continue;
    const it = r.item;
    if (r.condition === undefined) throw new RuleLoadError(`${where(it)}: rule ${r.rule} has no condition`);
    const kinds = (['first_contact', 'fan_out', 'rate', 'beacon'] as const).filter((k) => r[k] !== undefined);
    if (kinds.length > 1) throw new RuleLoadError(`${where(it)}: rule ${r.rule} has ${kinds.join(' and ')}; one stateful condition per rule`);
    let matches: Predicate;
    try {
      const cond = compileCondition(r.condition, scope);
      const exceptions = (r.exceptions ?? []).map((e) => compileCondition(e.condition, scope));
      matches = exceptions.length === 0 ? cond : exceptions.length === 1 ? ((e) => (x) => cond(x) && !e(x))(exceptions[0]!) : (x) => cond(x) && !exceptions.some((e) => e(x));
    } catch (err) {
      if (err instanceof ConditionError) throw new RuleLoadError(`${where(it)}: rule ${r.rule}: ${err.message}`);
      throw err;
    }
    let stateful: StatefulSpec | undefined;
    const k = kinds[0];
    if (k === 'first_contact') stateful = { kind: k, spec: r.first_contact! };
    else if (k === 'fan_out') stateful = { kind: k, spec: r.fan_out! };
    else if (k === 'rate') stateful = { kind: k, spec: r.rate! };
    else if (k === 'beacon') stateful = { kind: k, spec: r.beacon! };
    if (stateful !== undefined && 'of' in stateful.spec) checkFields(it, stateful.spec.of);
    if (stateful?.kind === 'fan_out') checkFields(it, stateful.spec.distinct);
    compiled.push({
      id: r.rule,
      description: r.description ?? r.rule,
      severity: r.severity ?? 'medium',
      tags: r.tags ?? [],
      matches,
      ...(stateful !== undefined ? { stateful } : {}),
      ...(r.group_window !== undefined ? { groupWindowMs: r.group_window } : {}),
      source: r.source,
      stateKey: JSON.stringify(stateful ?? null),
    });
  }
  return { rules: compiled, files: [...files] };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
