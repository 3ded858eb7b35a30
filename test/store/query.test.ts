import t, { type Test } from 'tap';
import { parseCidr } from '../../src/net/ip.js';
import type { FlowRecord } from '../../src/record.js';
import {
  decodeCursor,
  encodeCursor,
  planQuery,
  scanFlows,
  type FlowFilter,
  type Order,
  type Position,
  StoreReader,
} from '../../src/store/query.js';
import { parsePartition } from '../../src/store/keys.js';
import { BASE_MS, buildDataset, startEnv, type Env } from '../api/store-helper.js';

const data = buildDataset();
let env: Env;
let refs: string[];

t.before(async () => {
  env = await startEnv();
  refs = await env.writer.write(data);
});
t.teardown(() => env.close());

/** Walks every page (small pages, to cross many boundaries) and returns the refs in order. */
const reader = (): StoreReader => new StoreReader(env.redis, env.writer.keys, { retentionMs: 0, registryTtlMs: 0 });

async function walk(f: FlowFilter, order: Order, limit = 3, between?: () => Promise<void>): Promise<string[]> {
  const plan = await planQuery(reader(), f);
  const out: string[] = [];
  let after: Position | undefined;
  for (let page = 0; page < 1000; page++) {
    const res = await scanFlows(reader(), f, plan, limit, { order, scanBudget: 10_000, ...(after ? { after } : {}) });
    out.push(...res.hits.map((h) => `${h.partition}/${h.id}`));
    if (res.resume === undefined) return out;
    after = res.resume;
    if (between) await between();
  }
  throw new Error('pagination did not end');
}

/** The store's order: partition (bucket, writer), then entry number. */
export function refOrder(a: string, b: string): number {
  const [pa, ia] = a.split('/') as [string, string];
  const [pb, ib] = b.split('/') as [string, string];
  const x = parsePartition(pa)!;
  const y = parsePartition(pb)!;
  return x.bucket - y.bucket || (x.writer < y.writer ? -1 : x.writer > y.writer ? 1 : 0) || Number(ia.split('-')[1]) - Number(ib.split('-')[1]);
}

function expected(pred: (r: FlowRecord) => boolean, order: Order = 'desc'): string[] {
  const hits = data.map((r, i) => ({ r, ref: refs[i]! })).filter((x) => pred(x.r));
  hits.sort((a, b) => (order === 'desc' ? refOrder(b.ref, a.ref) : refOrder(a.ref, b.ref)));
  return hits.map((h) => h.ref);
}

const remoteIp = '198.51.100.2';
const cases: { name: string; filter: () => FlowFilter; pred: (r: FlowRecord) => boolean; index?: string }[] = [
  { name: 'no filter', filter: () => ({}), pred: () => true, index: 'scan' },
  { name: 'direction', filter: () => ({ directions: ['ingress'] }), pred: (r) => r.network.direction === 'ingress' },
  { name: 'container name', filter: () => ({ container: 'mailer' }), pred: (r) => r.container?.name === 'mailer', index: 'container' },
  { name: 'container id prefix', filter: () => ({ container: 'b2b2b2' }), pred: (r) => r.container?.name === 'resolver', index: 'container' },
  { name: 'compose service (two containers)', filter: () => ({ service: 'web' }), pred: (r) => ['web-1', 'v6app'].includes(r.container?.name ?? '') },
  { name: 'unknown container', filter: () => ({ container: 'nope' }), pred: () => false },
  { name: 'host', filter: () => ({ host: 'docker-host-1' }), pred: () => true },
  { name: 'other host', filter: () => ({ host: 'elsewhere' }), pred: () => false },
  { name: 'exact IP either side', filter: () => ({ ip: parseCidr(remoteIp)! }), pred: (r) => r.source.ip === remoteIp || r.destination.ip === remoteIp, index: 'ip' },
  { name: 'src IP', filter: () => ({ srcIp: parseCidr(remoteIp)! }), pred: (r) => r.source.ip === remoteIp },
  { name: 'IPv4 CIDR', filter: () => ({ ip: parseCidr('198.51.100.0/24')! }), pred: (r) => r.source.ip === remoteIp || r.destination.ip === remoteIp },
  { name: 'IPv4 CIDR no match', filter: () => ({ ip: parseCidr('10.0.0.0/8')! }), pred: () => false },
  { name: 'IPv6 exact, compressed form', filter: () => ({ ip: parseCidr('2001:db8::2')! }), pred: (r) => r.network.type === 'ipv6' },
  { name: 'IPv6 CIDR', filter: () => ({ dstIp: parseCidr('2001:db8::/32')! }), pred: (r) => r.network.type === 'ipv6' && r.network.direction === 'egress' },
  { name: 'IPv6 CIDR container side', filter: () => ({ ip: parseCidr('fd00:17::/64')! }), pred: (r) => r.network.type === 'ipv6' },
  { name: 'port either side', filter: () => ({ port: 25 }), pred: (r) => r.source.port === 25 || r.destination.port === 25 },
  { name: 'dst port', filter: () => ({ dstPort: 53 }), pred: (r) => r.destination.port === 53 },
  { name: 'transport', filter: () => ({ transport: 'udp' }), pred: (r) => r.network.transport === 'udp' },
  { name: 'country', filter: () => ({ country: 'US' }), pred: (r) => r.network.type === 'ipv6' },
  { name: 'asn', filter: () => ({ asn: 64500 }), pred: (r) => r.network.type === 'ipv4' },
  { name: 'log prefix', filter: () => ({ prefix: 'DOCKER-FWD:' }), pred: (r) => r.log?.prefix === 'DOCKER-FWD:' },
  {
    name: 'time range',
    filter: () => ({ sinceMs: BASE_MS + 10_000, untilMs: BASE_MS + 20_000 }),
    pred: (r) => Date.parse(r['@timestamp']) >= BASE_MS + 10_000 && Date.parse(r['@timestamp']) <= BASE_MS + 20_000,
  },
  {
    name: 'container and time and prefix',
    filter: () => ({ container: 'mailer', prefix: 'DOCKER-FWD:', sinceMs: BASE_MS + 5000 }),
    pred: (r) => r.container?.name === 'mailer' && r.log?.prefix === 'DOCKER-FWD:' && Date.parse(r['@timestamp']) >= BASE_MS + 5000,
  },
];

t.test('each filter, both orders, walked page by page, equals the expected set', async (t) => {
  for (const c of cases) {
    for (const order of ['desc', 'asc'] as const) {
      t.same(await walk(c.filter(), order), expected(c.pred, order), `${c.name} (${order})`);
    }
    if (c.index !== undefined) t.equal((await planQuery(reader(), c.filter())).index, c.index, `${c.name} uses the ${c.index} index`);
  }
  t.ok(expected(() => true).length >= 45, 'the dataset is the whole corpus');
});

t.test('pagination stays correct while new records arrive between pages', async (t) => {
  const before = expected((r) => r.container?.name === 'mailer');
  let n = 0;
  const addNewer = async (): Promise<void> => {
    // Newer than anything stored: a newest-first walk must neither repeat nor skip because of them.
    const r = structuredClone(data[0]!);
    r['@timestamp'] = new Date(BASE_MS + 3_600_000 + n++ * 1000).toISOString();
    await env.writer.write([r]);
  };
  const got = await walk({ container: 'mailer', untilMs: undefined }, 'desc', 2, addNewer);
  const newer = got.slice(0, got.length - before.length);
  t.same(got.slice(got.length - before.length), before, 'every original record once, in order');
  t.equal(new Set(got).size, got.length, 'no duplicates');
  t.ok(newer.length <= 1, 'at most the record added before the first page started');
  t.ok(n > 3, 'records were added between pages');
});

t.test('many records in one millisecond page correctly (ties broken by entry number)', async (t) => {
  const same = Array.from({ length: 25 }, () => {
    const r = structuredClone(data[0]!);
    r['@timestamp'] = new Date(BASE_MS - 86_400_000).toISOString();
    r.log = { ...r.log, prefix: 'tie-test' };
    return r;
  });
  const ids = await env.writer.write(same);
  const got = await walk({ prefix: 'tie-test', untilMs: BASE_MS - 86_000_000 }, 'desc', 4);
  t.same([...got].sort(), [...ids].sort());
  t.equal(new Set(got).size, 25);
});

t.test('a scan budget stops early with a position to resume from', async (t) => {
  const f: FlowFilter = { prefix: 'no-such-prefix', sinceMs: BASE_MS };
  const plan = await planQuery(reader(), f);
  const res = await scanFlows(reader(), f, plan, 10, { order: 'desc', scanBudget: 5 });
  t.equal(res.hits.length, 0);
  t.equal(res.examined, 5);
  t.ok(res.resume, 'resume position returned');
});

t.test('cursor encoding round-trips and rejects anything else', async (t) => {
  const c = { order: 'asc' as const, position: { partition: '2994467.w1', n: 17 }, query: 'abc', sinceMs: 5 };
  t.same(decodeCursor(encodeCursor(c)), c);
  for (const bad of ['', 'not base64!', Buffer.from('{"v":2}').toString('base64url'), Buffer.from('[]').toString('base64url'), encodeCursor(c).slice(0, -3), 'x'.repeat(300)]) {
    t.equal(decodeCursor(bad), undefined, JSON.stringify(bad.slice(0, 20)));
  }
  t.equal(decodeCursor(Buffer.from(JSON.stringify({ v: 2, o: 'asc', p: 'x:y', n: 1, q: 'a' })).toString('base64url')), undefined, 'not a partition');
  t.equal(decodeCursor(Buffer.from(JSON.stringify({ v: 2, o: 'asc', p: '1.w1', n: 1.5, q: 'a' })).toString('base64url')), undefined, 'not an entry number');
});

t.test('address parsing', async (t) => {
  for (const bad of ['1.2.3', '1.2.3.4/33', '::1/129', 'fe80::1%eth0', 'host.example', '1.2.3.4/', '1.2.3.4/a']) t.equal(parseCidr(bad), undefined, bad);
  t.equal(parseCidr('fd00:0017:0000:0000:0000:0000:0000:0002')?.exact, 'fd00:17::2');
  t.equal(parseCidr('::ffff:198.51.100.2')?.version, 6);
  t.equal(parseCidr('0.0.0.0/0')?.prefixLength, 0);
});
