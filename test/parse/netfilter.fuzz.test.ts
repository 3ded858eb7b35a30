import { readFileSync } from 'node:fs';
import t from 'tap';
import { isRecord, SKIP_REASONS } from '../../src/record.js';
import { bridgeMatcher, DEFAULT_BRIDGES } from '../../src/parse/direction.js';
import { parseNetfilter } from '../../src/parse/netfilter.js';
import { fixture } from '../helpers/paths.js';

/** mulberry32: a small seeded PRNG, so a failing case can be replayed from its seed and index. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = 0x5eed2;
const CASES = 20_000;
const opts = { isBridge: bridgeMatcher(DEFAULT_BRIDGES) };

const corpus = [
  ...['tcp-egress-smtp', 'udp-dns-egress', 'icmp-echo', 'ingress-published-port', 'container-to-host', 'host-to-container'].flatMap((sc) =>
    readFileSync(fixture('netfilter', `${sc}.kmsg.txt`), 'utf8').split('\n').filter(Boolean).map((l) => l.slice(l.indexOf(';') + 1)),
  ),
  ...readFileSync(fixture('netfilter', 'variants.txt'), 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.slice(l.indexOf('\t') + 1)),
];
const TOKENS = ['[', ']', '=', ' ', '(', ')', ':', 'IN=', ' OUT=', 'SRC=', 'DST=', 'PROTO=', 'LEN=', 'ID=', 'OPT (', 'INCOMPLETE [', 'ARP ', 'MAC=', 'FRAG:', 'SPI=0x', '::', '.', '\n', '\u0000', 'é', '\ud800'];

t.test('random and mutated input never throws', async (t) => {
  const rnd = prng(SEED);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

  function randomText(): string {
    const n = int(300);
    let s = '';
    for (let k = 0; k < n; k++) s += rnd() < 0.3 ? pick(TOKENS) : String.fromCharCode(rnd() < 0.9 ? 32 + int(95) : int(0x10000));
    return s;
  }

  function mutate(line: string): string {
    let s = line;
    const rounds = 1 + int(4);
    for (let r = 0; r < rounds; r++) {
      const at = int(s.length + 1);
      switch (int(8)) {
        case 0: // truncate
          s = s.slice(0, at);
          break;
        case 1: {
          // duplicate a key=value token somewhere else
          const tokens = s.split(' ');
          s = `${s.slice(0, at)} ${pick(tokens)} ${s.slice(at)}`;
          break;
        }
        case 2: // delete a few characters
          s = s.slice(0, at) + s.slice(at + 1 + int(5));
          break;
        case 3: // insert structure characters
          s = s.slice(0, at) + pick(['[', ']', '=', '[[', ']]', '(', ')']) + s.slice(at);
          break;
        case 4: // huge numbers
          s = s.replace(/=(\d+)/, `=${'9'.repeat(1 + int(400))}`);
          break;
        case 5: {
          // swap two tokens
          const tokens = s.split(' ');
          const i = int(tokens.length);
          const j = int(tokens.length);
          [tokens[i], tokens[j]] = [tokens[j]!, tokens[i]!];
          s = tokens.join(' ');
          break;
        }
        case 6: // random token
          s = s.slice(0, at) + pick(TOKENS) + s.slice(at);
          break;
        default: // replace a character
          s = s.slice(0, at) + String.fromCharCode(int(256)) + s.slice(at + 1);
      }
    }
    return s;
  }

  function huge(): string {
    const base = pick(corpus);
    switch (int(4)) {
      case 0:
        return base + 'X'.repeat(100_000);
      case 1:
        return base.slice(0, base.indexOf('SRC=')) + '['.repeat(50_000) + ']'.repeat(50_000);
      case 2:
        return 'IN= OUT= ' + 'SRC=1.2.3.4 '.repeat(8_000);
      default:
        return base + ' DF'.repeat(33_000);
    }
  }

  let records = 0;
  const reasons = new Map<string, number>();
  for (let k = 0; k < CASES; k++) {
    const kind = k % 1000 === 999 ? 2 : int(2);
    const text = kind === 2 ? huge() : kind === 0 ? randomText() : mutate(pick(corpus));
    const start = rnd() < 0.1 ? int(text.length + 2) : 0;
    let r: ReturnType<typeof parseNetfilter>;
    try {
      r = parseNetfilter(text, start, opts);
    } catch (err) {
      t.fail(`case ${k} (seed ${SEED}) threw ${String(err)}: ${JSON.stringify(text.slice(0, 300))}`);
      continue;
    }
    if (isRecord(r)) {
      records++;
      if (typeof r.network.direction !== 'string') t.fail(`case ${k}: record without a direction`);
      JSON.stringify(r);
    } else if (!SKIP_REASONS.includes(r)) {
      t.fail(`case ${k}: unknown outcome ${String(r)}`);
    } else {
      reasons.set(r, (reasons.get(r) ?? 0) + 1);
    }
  }
  t.ok(records > 0, `${records} records`);
  t.ok(reasons.size > 1, `reasons ${JSON.stringify([...reasons])}`);
});
