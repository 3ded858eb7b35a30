import type { FlowRecord } from '../record.js';
import { lookupField, type Field } from './fields.js';
import { parseCidr, rangeMatcher, type AddressRange } from './ip.js';

/**
 * The condition language (Falco-like):
 *
 *   expr       := or
 *   or         := and ('or' and)*
 *   and        := unary ('and' unary)*
 *   unary      := 'not' unary | '(' expr ')' | MACRO | comparison
 *   comparison := FIELD ('=' | '!=' | '<' | '<=' | '>' | '>=') VALUE
 *               | FIELD ('in' | 'not in') '(' VALUE (',' VALUE)* ')'   a VALUE may name a list, which is expanded
 *               | FIELD ('startswith' | 'endswith' | 'contains') VALUE
 *               | FIELD 'exists'
 *
 * Values are numbers, quoted strings or bare words. On address fields a value may be a CIDR; on number fields a
 * value may be a range `6660-6669`. Everything is compiled once into closures over precompiled accessors.
 */
export type Predicate = (r: FlowRecord) => boolean;

export class ConditionError extends Error {
  override name = 'ConditionError';
}

type Token = { kind: 'word' | 'string' | 'punct'; text: string; pos: number };

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    if (c === '(' || c === ')' || c === ',') {
      out.push({ kind: 'punct', text: c, pos: i++ });
      continue;
    }
    if (c === '=' || c === '!' || c === '<' || c === '>') {
      const two = src.slice(i, i + 2);
      if (two === '!=' || two === '<=' || two === '>=') {
        out.push({ kind: 'punct', text: two, pos: i });
        i += 2;
      } else if (c === '!') {
        throw new ConditionError(`unexpected '!' at ${i}`);
      } else {
        out.push({ kind: 'punct', text: c, pos: i++ });
      }
      continue;
    }
    if (c === '"' || c === "'") {
      const end = src.indexOf(c, i + 1);
      if (end < 0) throw new ConditionError(`unterminated string at ${i}`);
      out.push({ kind: 'string', text: src.slice(i + 1, end), pos: i });
      i = end + 1;
      continue;
    }
    let j = i;
    while (j < src.length && !/[\s(),=!<>"']/.test(src[j]!)) j++;
    out.push({ kind: 'word', text: src.slice(i, j), pos: i });
    i = j;
  }
  return out;
}

export interface CompileScope {
  /** List name → items (already expanded). */
  lists: ReadonlyMap<string, readonly string[]>;
  /** Macro name → its condition text. */
  macros: ReadonlyMap<string, string>;
  /**
   * Macros compiled so far, shared by every rule compiled with this scope: each is compiled once, and remembers its
   * answer for the last record it saw, so a macro used by several rules is evaluated once per record.
   */
  compiled?: Map<string, Predicate>;
}

/** The predicate, answering again for the same record without evaluating (records do not change while detected). */
function remembering(p: Predicate): Predicate {
  let last: FlowRecord | undefined;
  let answer = false;
  return (r) => {
    if (r !== last) {
      answer = p(r);
      last = r;
    }
    return answer;
  };
}

const KEYWORDS = new Set(['and', 'or', 'not', 'in', 'exists', 'startswith', 'endswith', 'contains']);

class Parser {
  private i = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly scope: CompileScope,
    private readonly expanding: readonly string[],
    /** Fields the condition reads, for the rule's documentation and the state's keys. */
    readonly fieldsRead: Set<string>,
  ) {}

  parse(): Predicate {
    const p = this.or();
    const t = this.tokens[this.i];
    if (t !== undefined) throw new ConditionError(`unexpected '${t.text}' at ${t.pos}`);
    return p;
  }

  private peek(): Token | undefined {
    return this.tokens[this.i];
  }
  private isWord(text: string): boolean {
    const t = this.peek();
    return t !== undefined && t.kind === 'word' && t.text === text;
  }
  private expect(text: string): void {
    const t = this.tokens[this.i];
    if (t === undefined || t.text !== text || t.kind === 'string') throw new ConditionError(`expected '${text}' ${t ? `at ${t.pos}, got '${t.text}'` : 'at the end'}`);
    this.i++;
  }

  private or(): Predicate {
    const parts = [this.and()];
    while (this.isWord('or')) {
      this.i++;
      parts.push(this.and());
    }
    if (parts.length === 1) return parts[0]!;
    if (parts.length === 2) {
      const [a, b] = parts as [Predicate, Predicate];
      return (r) => a(r) || b(r);
    }
    return (r) => {
      for (const p of parts) if (p(r)) return true;
      return false;
    };
  }

  private and(): Predicate {
    const parts = [this.unary()];
    while (this.isWord('and')) {
      this.i++;
      parts.push(this.unary());
    }
    if (parts.length === 1) return parts[0]!;
    if (parts.length === 2) {
      const [a, b] = parts as [Predicate, Predicate];
      return (r) => a(r) && b(r);
    }
    if (parts.length === 3) {
      const [a, b, c] = parts as [Predicate, Predicate, Predicate];
      return (r) => a(r) && b(r) && c(r);
    }
    return (r) => {
      for (const p of parts) if (!p(r)) return false;
      return true;
    };
  }

  private unary(): Predicate {
    const t = this.peek();
    if (t === undefined) throw new ConditionError('unexpected end of condition');
    if (t.kind === 'word' && t.text === 'not') {
      this.i++;
      const p = this.unary();
      return (r) => !p(r);
    }
    if (t.kind === 'punct' && t.text === '(') {
      this.i++;
      const p = this.or();
      this.expect(')');
      return p;
    }
    if (t.kind !== 'word' || KEYWORDS.has(t.text)) throw new ConditionError(`unexpected '${t.text}' at ${t.pos}`);
    const macro = this.scope.macros.get(t.text);
    if (macro !== undefined) {
      this.i++;
      if (this.expanding.includes(t.text)) throw new ConditionError(`macro ${t.text} refers to itself (${[...this.expanding, t.text].join(' → ')})`);
      const done = this.scope.compiled?.get(t.text);
      if (done !== undefined) return done;
      try {
        const p = remembering(new Parser(tokenize(macro), this.scope, [...this.expanding, t.text], this.fieldsRead).parse());
        this.scope.compiled?.set(t.text, p);
        return p;
      } catch (err) {
        if (err instanceof ConditionError) throw new ConditionError(`in macro ${t.text}: ${err.message}`);
        throw err;
      }
    }
    return this.comparison();
  }

  private value(): string {
    const t = this.tokens[this.i];
    if (t === undefined || (t.kind === 'punct')) throw new ConditionError(`expected a value ${t ? `at ${t.pos}` : 'at the end'}`);
    this.i++;
    return t.text;
  }

  private comparison(): Predicate {
    const nameTok = this.tokens[this.i++]!;
    const field = lookupField(nameTok.text);
    if (field === undefined) {
      throw new ConditionError(`unknown field or macro '${nameTok.text}' at ${nameTok.pos}`);
    }
    this.fieldsRead.add(nameTok.text);
    const op = this.peek();
    if (op === undefined) throw new ConditionError(`expected an operator after ${nameTok.text}`);
    if (op.kind === 'word' && op.text === 'exists') {
      this.i++;
      const get = field.get;
      return (r) => get(r) !== undefined;
    }
    let negate = false;
    if (op.kind === 'word' && op.text === 'not') {
      this.i++;
      negate = true;
      if (!this.isWord('in')) throw new ConditionError(`expected 'in' after '${nameTok.text} not'`);
    }
    const o = this.tokens[this.i++]!;
    if (o === undefined) throw new ConditionError(`expected an operator after ${nameTok.text}`);
    let p: Predicate;
    if (o.kind === 'word' && o.text === 'in') {
      this.expect('(');
      const items: string[] = [];
      if (!(this.peek()?.kind === 'punct' && this.peek()?.text === ')')) {
        for (;;) {
          const v = this.value();
          const list = this.scope.lists.get(v);
          if (list !== undefined) items.push(...list);
          else items.push(v);
          if (this.peek()?.text === ',' && this.peek()?.kind === 'punct') {
            this.i++;
            continue;
          }
          break;
        }
      }
      this.expect(')');
      p = compileIn(nameTok.text, field, items);
    } else if (o.kind === 'word' && (o.text === 'startswith' || o.text === 'endswith' || o.text === 'contains')) {
      const v = this.value();
      const get = field.get;
      if (field.type !== 'string' && field.type !== 'ip') throw new ConditionError(`${o.text} needs a text field, ${nameTok.text} is a ${field.type}`);
      p =
        o.text === 'startswith'
          ? (r) => {
              const x = get(r);
              return typeof x === 'string' && x.startsWith(v);
            }
          : o.text === 'endswith'
            ? (r) => {
                const x = get(r);
                return typeof x === 'string' && x.endsWith(v);
              }
            : (r) => {
                const x = get(r);
                return typeof x === 'string' && x.includes(v);
              };
    } else if (o.kind === 'punct' && ['=', '!=', '<', '<=', '>', '>='].includes(o.text)) {
      const v = this.value();
      p = compileCompare(nameTok.text, field, o.text, v);
    } else {
      throw new ConditionError(`unknown operator '${o.text}' at ${o.pos}`);
    }
    if (negate) {
      const q = p;
      return (r) => !q(r);
    }
    return p;
  }
}

function toNumber(field: string, v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new ConditionError(`${field} is a number, '${v}' is not`);
  return n;
}

function toBool(field: string, v: string): boolean {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new ConditionError(`${field} is true or false, '${v}' is neither`);
}

function toRange(field: string, v: string): AddressRange {
  const r = parseCidr(v);
  if (r === undefined) throw new ConditionError(`${field} is an address, '${v}' is not an address or CIDR`);
  return r;
}

function compileCompare(name: string, field: Field, op: string, v: string): Predicate {
  const get = field.get;
  switch (field.type) {
    case 'number': {
      const n = toNumber(name, v);
      switch (op) {
        case '=':
          return (r) => get(r) === n;
        case '!=':
          return (r) => get(r) !== n;
        case '<':
          return (r) => (get(r) as number) < n;
        case '<=':
          return (r) => (get(r) as number) <= n;
        case '>':
          return (r) => (get(r) as number) > n;
        default:
          return (r) => (get(r) as number) >= n;
      }
    }
    case 'ip': {
      if (op !== '=' && op !== '!=') throw new ConditionError(`${name} is an address: only =, != and in apply`);
      const m = rangeMatcher([toRange(name, v)]);
      const g = get as (r: FlowRecord) => string | undefined;
      return op === '=' ? (r) => m(g(r)) : (r) => !m(g(r));
    }
    case 'bool': {
      if (op !== '=' && op !== '!=') throw new ConditionError(`${name} is true or false: only = and != apply`);
      const b = toBool(name, v);
      return op === '=' ? (r) => get(r) === b : (r) => get(r) !== b;
    }
    default: {
      if (op === '=') return (r) => get(r) === v;
      if (op === '!=') return (r) => get(r) !== v;
      throw new ConditionError(`${name} is text: only =, !=, in, startswith, endswith and contains apply`);
    }
  }
}

function compileIn(name: string, field: Field, items: readonly string[]): Predicate {
  const get = field.get;
  switch (field.type) {
    case 'number': {
      const singles = new Set<number>();
      const ranges: [number, number][] = [];
      for (const item of items) {
        const m = /^(\d+)-(\d+)$/.exec(item);
        if (m !== null) ranges.push([Number(m[1]), Number(m[2])]);
        else singles.add(toNumber(name, item));
      }
      if (ranges.length === 0) return (r) => singles.has(get(r) as number);
      return (r) => {
        const x = get(r);
        if (typeof x !== 'number') return false;
        if (singles.has(x)) return true;
        for (const [lo, hi] of ranges) if (x >= lo && x <= hi) return true;
        return false;
      };
    }
    case 'ip': {
      const m = rangeMatcher(items.map((i) => toRange(name, i)));
      const g = get as (r: FlowRecord) => string | undefined;
      return (r) => m(g(r));
    }
    case 'bool': {
      const set = new Set(items.map((i) => toBool(name, i)));
      return (r) => set.has(get(r) as boolean);
    }
    default: {
      const set = new Set(items);
      return (r) => set.has(get(r) as string);
    }
  }
}

/** Compiles a condition; throws ConditionError saying where it is wrong. */
export function compileCondition(text: string, scope: CompileScope, fieldsRead: Set<string> = new Set()): Predicate {
  const tokens = tokenize(text);
  if (tokens.length === 0) throw new ConditionError('empty condition');
  return new Parser(tokens, scope, [], fieldsRead).parse();
}
