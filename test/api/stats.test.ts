import t from 'tap';
import type { FastifyInstance } from 'fastify';
import type { FlowRecord } from '../../src/record.js';
import { topN } from '../../src/store/aggregate.js';
import { StoreReader } from '../../src/store/query.js';
import { appFor, LOSS } from './app-helper.js';
import { BASE_MS, buildDataset, CONTAINERS, enrich, startEnv, type Env } from './store-helper.js';

const data = buildDataset();
let env: Env;
let app: FastifyInstance;
const RANGE = `since=${new Date(BASE_MS).toISOString()}&until=${new Date(BASE_MS + 3_600_000).toISOString()}`;

t.before(async () => {
  env = await startEnv();
  await env.writer.write(data);
  app = await appFor(env);
});
t.teardown(async () => {
  await app.close();
  await env.close();
});

function count(values: (string | undefined)[]): { value: string; count: number }[] {
  const m = new Map<string, number>();
  for (const v of values) if (v !== undefined) m.set(v, (m.get(v) ?? 0) + 1);
  return [...m].map(([value, n]) => ({ value, count: n })).sort((a, b) => b.count - a.count || (a.value < b.value ? 1 : -1));
}

const remote = (r: FlowRecord) => (r.network.direction === 'ingress' || r.network.direction === 'host-to-container' ? r.source : r.destination);
const compressed = (ip: string | undefined) => (ip?.includes(':') ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip);

t.test('top-N by each dimension equals counting the records', async (t) => {
  const cases: [string, (r: FlowRecord) => string | undefined][] = [
    ['dst', (r) => compressed(r.destination.ip)],
    ['port', (r) => (r.destination.port !== undefined ? `${r.network.transport}/${r.destination.port}` : undefined)],
    ['country', (r) => remote(r).geo?.country_iso_code],
    ['asn', (r) => (remote(r).as?.number !== undefined ? String(remote(r).as!.number) : undefined)],
    ['container', (r) => r.container?.id],
  ];
  for (const [by, value] of cases) {
    const res = await app.inject({ method: 'GET', url: `/api/stats/top?by=${by}&${RANGE}&limit=100` });
    t.equal(res.statusCode, 200, by);
    const body = res.json() as { top: { value: string; count: number; name?: string }[]; distinct: number; loss: unknown };
    const want = count(data.map(value));
    t.same(body.top.map(({ value: v, count: c }) => ({ value: v, count: c })), want, by);
    t.equal(body.distinct, want.length);
    t.same(body.loss, LOSS);
    if (by === 'container') t.ok(body.top.every((e) => typeof e.name === 'string'), 'container names attached');
  }
});

t.test('top-N honours direction and a time range at minute resolution', async (t) => {
  const ingress = (await app.inject({ method: 'GET', url: `/api/stats/top?by=dst&direction=ingress&${RANGE}` })).json() as { top: { value: string; count: number }[] };
  t.same(ingress.top, count(data.filter((r) => r.network.direction === 'ingress').map((r) => compressed(r.destination.ip))).slice(0, 10));
  const later = `since=${new Date(BASE_MS + 3_600_000).toISOString()}&until=${new Date(BASE_MS + 7_200_000).toISOString()}`;
  const empty = (await app.inject({ method: 'GET', url: `/api/stats/top?by=dst&${later}` })).json() as { top: unknown[]; covered: { since: string } };
  t.same(empty.top, []);
  t.equal(empty.covered.since, new Date(BASE_MS + 3_600_000).toISOString());
});

const SKEW = { id: 'f0'.repeat(32), name: 'skew' };

t.test('a skewed range settles the top early and exactly, without merging every value', async (t) => {
  const at = BASE_MS + 30 * 60_000;
  const base = data[0]!;
  const heavy = Array.from({ length: 120 }, (_, i) => {
    const r = enrich(base, at + i, SKEW);
    r.destination.ip = '192.0.2.1';
    return r;
  });
  const tail = Array.from({ length: 400 }, (_, i) => {
    const r = enrich(base, at + 200 + i, SKEW);
    r.destination.ip = `10.9.${Math.floor(i / 250)}.${i % 250}`;
    return r;
  });
  await env.writer.write([...heavy, ...tail]);
  const reader = new StoreReader(env.redis, env.writer.keys, { retentionMs: 0 });
  const range = { by: 'dst' as const, sinceMs: at, untilMs: at + 59_000, maxReadEntries: 200_000 };
  const early = await topN(reader, { ...range, limit: 1, unionMaxEntries: 0 });
  t.same(early.entries, [{ value: '192.0.2.1', count: 120 }]);
  t.equal(early.distinct, undefined, 'not every value was read, so no distinct count is claimed');
  for (const limit of [1, 5, 70, 1000]) {
    const threshold = await topN(reader, { ...range, limit, unionMaxEntries: 0 });
    const union = await topN(reader, { ...range, limit, unionMaxEntries: Infinity });
    t.same(threshold.entries, union.entries, `limit ${limit}: the threshold answer equals the full merge`);
  }
  const all = await topN(reader, { ...range, limit: 1000 });
  t.equal(all.distinct, 401);
  t.equal(all.entries.reduce((n, e) => n + e.count, 0), 520);
});

t.test('destination inventory: first and last seen per remote address and service port; new since', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/api/containers/mailer/inventory' });
  t.equal(res.statusCode, 200);
  const body = res.json() as { containers: { id: string; name: string; destinations: { direction: string; ip: string; transport: string; port: number; first_seen: string; last_seen: string }[] }[]; loss: unknown };
  t.equal(body.containers.length, 1);
  const mailer = data.filter((r) => r.container?.name === 'mailer');
  t.same(body.containers[0]!.destinations, [
    {
      direction: 'egress',
      ip: '198.51.100.2',
      transport: 'tcp',
      port: 25,
      first_seen: mailer[0]!['@timestamp'],
      last_seen: mailer[mailer.length - 1]!['@timestamp'],
    },
  ], "the server's answers are folded onto the connection, not listed as port 44038");
  t.same(body.loss, LOSS);

  const lastMs = Date.parse(mailer[mailer.length - 1]!['@timestamp']);
  const fresh = structuredClone(mailer[0]!);
  fresh.destination.ip = '203.0.113.9';
  fresh.destination.port = 587;
  await env.writer.write([enrich(fresh, lastMs + 60_000, CONTAINERS.mailer)]);
  const news = (await app.inject({ method: 'GET', url: `/api/containers/a1a1a1a1/inventory?new_since=${new Date(lastMs + 1).toISOString()}` })).json() as typeof body;
  t.same(
    news.containers[0]!.destinations.map((d) => `${d.ip}:${d.port}`),
    ['203.0.113.9:587'],
    'only what was first seen after new_since',
  );
  const unknown = await app.inject({ method: 'GET', url: '/api/containers/nobody/inventory' });
  t.equal(unknown.statusCode, 404);
  const bad = await app.inject({ method: 'GET', url: '/api/containers/..%2F*/inventory' });
  t.equal(bad.statusCode, 400);
});
