/**
 * Every query is bounded: hostile ranges, dates and cursors answer 400 (never 500), long ranges are clamped and say
 * so, heavy routes answer partial pages with a cursor, and concurrent heavy queries are limited. HTTP-level over a real
 * redis-server, so these keep guarding whatever store sits below.
 */
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import { buildDataset, BASE_MS, startEnv, type Env } from './store-helper.js';
import { appFor } from './app-helper.js';
import { defaultApiLimits } from '../../src/api/limits.js';

const data = buildDataset();
const RANGE = `since=${new Date(BASE_MS).toISOString()}&until=${new Date(BASE_MS + 3_600_000).toISOString()}`;
let env: Env;
let app: FastifyInstance;

t.before(async () => {
  env = await startEnv();
  await env.writer.write(data);
  app = await appFor(env, { limits: defaultApiLimits({ connectionsScanBudget: 7, maxConcurrentQueries: 1 }) });
});
t.teardown(async () => {
  await app.close();
  await env.close();
});

const get = (url: string) => app.inject({ method: 'GET', url });
const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

t.test('absurd times and tampered cursors answer 400', async (t) => {
  const urls = [
    '/api/flows?since=999999999w',
    '/api/flows?until=999999999w',
    '/api/flows?since=275760-09-14',
    '/api/flows?since=9999-99-99',
    '/api/stats/top?by=port&since=999999999w',
    '/api/stats/top?by=dst&until=999999999d',
    '/api/connections?since=999999999w',
    '/api/containers/mailer/inventory?new_since=999999999w',
    `/api/flows?cursor=${b64({ v: 1, o: 'desc', s: 1e300, m: 'e1', q: 'x', a: 1e300 })}`,
    `/api/flows?cursor=${b64({ v: 1, o: 'desc', s: 1, m: 'e1', q: 'x', b: -1e300 })}`,
    `/api/flows?cursor=${b64({ v: 1, o: 'desc', s: -1e300, m: 'e1', q: 'x' })}`,
    '/api/flows?cursor=!!!',
    `/api/connections?cursor=${b64({ v: 1, o: 'asc', s: 1, m: 'e1', q: 'x', a: 1e300 })}`,
  ];
  for (const url of urls) {
    const res = await get(url);
    t.equal(res.statusCode, 400, url);
    t.equal((res.json() as { error: string }).error, 'bad_request', url);
  }
});

t.test('a top-N over years is clamped to retention and the longest range, and says so', async (t) => {
  for (const q of ['since=520w', 'since=2016-01-01', 'since=1970-01-01&until=9999-12-31', 'since=1h&until=9999-12-31']) {
    const before = process.memoryUsage().heapUsed;
    const res = await get(`/api/stats/top?by=port&${q}`);
    t.equal(res.statusCode, 200, q);
    const body = res.json() as { covered: { since: string; until: string }; partial: boolean; partial_reasons: string[] };
    const span = Date.parse(body.covered.until) - Date.parse(body.covered.since);
    t.ok(span <= defaultApiLimits().topMaxRangeMs + 2 * 600_000, `${q}: covered ${body.covered.since} – ${body.covered.until}`);
    t.ok(Date.parse(body.covered.until) <= Date.now() + 120_000, `${q}: nothing counted in the future`);
    if (!q.startsWith('since=1h')) t.equal(body.partial, true, `${q}: partial`);
    t.ok(body.partial_reasons.length > 0 || !body.partial, `${q}: reasons ${body.partial_reasons.join('; ')}`);
    t.comment(`${q}: heap +${((process.memoryUsage().heapUsed - before) / 2 ** 20).toFixed(1)} MiB`);
  }
  const old = await get(`/api/stats/top?by=port&since=${new Date(Date.now() - 400 * 86_400_000).toISOString()}&until=${new Date(Date.now() - 390 * 86_400_000).toISOString()}`);
  t.equal(old.statusCode, 200, 'a range wholly older than retention');
  t.match(old.json(), { top: [], partial: true });
});

t.test('connections answer partial pages with a cursor; the pages together hold every packet once', async (t) => {
  let cursor: string | null = null;
  let packets = 0;
  let pages = 0;
  do {
    const res = await get(`/api/connections?${RANGE}&limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
    t.equal(res.statusCode, 200);
    const body = res.json() as { packets: number; partial: boolean; next_cursor: string | null; partial_reasons: string[] };
    packets += body.packets;
    t.ok(body.packets <= 7 + 1, 'at most the budget per page');
    if (body.next_cursor !== null) t.equal(body.partial, true, 'a page with a cursor is partial');
    cursor = body.next_cursor;
    pages += 1;
  } while (cursor !== null && pages < 1000);
  t.equal(packets, data.length, 'every packet folded once over the pages');
  t.ok(pages > 1, `${pages} pages`);
});

t.test('over the concurrent-query limit: 503 with Retry-After, counted; the running query completes', async (t) => {
  env.server.pause();
  try {
    const slow = get(`/api/flows?${RANGE}`);
    await new Promise((r) => setTimeout(r, 100));
    const busy = await get(`/api/stats/top?by=dst&${RANGE}`);
    t.equal(busy.statusCode, 503);
    t.equal(busy.headers['retry-after'], '2');
    t.equal((busy.json() as { error: string }).error, 'busy');
    const cheap = await get('/api/openapi.json');
    t.ok(cheap.statusCode < 500, 'light routes are not gated');
    env.server.resume();
    t.equal((await slow).statusCode, 200, 'the running query completes');
  } finally {
    env.server.resume();
  }
  t.equal((await get(`/api/stats/top?by=dst&${RANGE}`)).statusCode, 200, 'served again once the slot is free');
});

// Route → a valid query to mutate. Every parameter gets every hostile value; no answer may be a 5xx.
const ROUTES: Array<[string, string[]]> = [
  ['/api/flows', ['direction', 'container', 'service', 'host', 'ip', 'src_ip', 'dst_ip', 'port', 'src_port', 'dst_port', 'transport', 'country', 'asn', 'prefix', 'since', 'until', 'order', 'limit', 'cursor', 'format']],
  ['/api/connections', ['ip', 'dst_ip', 'since', 'until', 'idle_gap', 'limit', 'cursor', 'port']],
  ['/api/stats/top', ['by', 'direction', 'since', 'until', 'limit']],
  ['/api/containers/mailer/inventory', ['new_since', 'limit']],
];
const HOSTILE = ['', ' ', '-1', '0', '1e309', 'NaN', '999999999999999999999', '999999999w', '-5m', '0000-00-00', '9999-12-31T23:59:59Z', '1970-01-01', '0.0.0.0/0', '::/0',
  '1.2.3.4/33', '%00', '%C0%AE', '\u202e', 'a'.repeat(300), '[]', '{}', 'egress,egress,egress', '$(id)', '../../etc/passwd', 'e1', 'AAAA'];

t.test('fuzzed parameters on every route: no 5xx', async (t) => {
  let n = 0;
  for (const [path, params] of ROUTES) {
    for (const p of params) {
      for (const v of HOSTILE) {
        const base = path === '/api/stats/top' && p !== 'by' ? 'by=dst&' : '';
        const url = `${path}?${base}${p}=${encodeURIComponent(v)}`;
        const res = await get(url);
        n += 1;
        if (res.statusCode >= 500) t.fail(`${url} → ${res.statusCode} ${res.body.slice(0, 200)}`);
      }
    }
  }
  t.pass(`${n} requests, none answered 5xx`);
});
