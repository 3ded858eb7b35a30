/**
 * Many distinct addresses (60,000 destinations in 20 minutes): top-N by destination answers without spreading a huge
 * array into one call, and CIDR filters use the address index, not a read of every address.
 */
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import type { FlowRecord } from '../../src/record.js';
import { appFor } from './app-helper.js';
import { buildDataset, CONTAINERS, enrich, startEnv, type Env } from './store-helper.js';

const N = 60_000;
const START = Date.now() - 25 * 60_000;
let env: Env;
let app: FastifyInstance;
const dst = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

t.before(async () => {
  env = await startEnv();
  const base = buildDataset().find((r) => r.network.direction === 'egress')!;
  const t0 = Date.now();
  for (let from = 0; from < N; from += 5000) {
    const batch: FlowRecord[] = [];
    for (let i = from; i < Math.min(N, from + 5000); i++) {
      const r = enrich(base, START + Math.floor((i / N) * 20 * 60_000), CONTAINERS.mailer);
      r.destination.ip = dst(i);
      batch.push(r);
    }
    await env.writer.write(batch);
  }
  t.comment(`${N} records with ${N} distinct destinations written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  app = await appFor(env);
});
t.teardown(async () => {
  await app.close();
  await env.close();
});

const get = (url: string) => app.inject({ method: 'GET', url });

t.test('top-N by destination over 60,000 distinct values answers (no stack overflow), bounded, and says whether it is exact', async (t) => {
  for (const q of ['by=dst&since=1h', 'by=dst&since=1h&limit=1000', 'by=dst&since=30m&direction=egress']) {
    const before = process.memoryUsage().heapUsed;
    const started = process.hrtime.bigint();
    const res = await get(`/api/stats/top?${q}`);
    t.equal(res.statusCode, 200, q);
    const body = res.json() as { top: { value: string; count: number }[]; exact: boolean; partial: boolean };
    t.ok(body.top.length > 0, `${q}: ${body.top.length} values, exact ${body.exact}`);
    t.ok(body.top.every((e) => e.count === 1), 'every destination was seen once');
    t.comment(`${q}: ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(0)} ms, heap +${((process.memoryUsage().heapUsed - before) / 2 ** 20).toFixed(1)} MiB`);
  }
});

t.test('CIDR filters: a narrow one through the address index, a wide one paged within the scan budget', async (t) => {
  // 10.0.2.0/24 holds 256 of the destinations (i = 0x200 … 0x2ff).
  const narrow = await get('/api/flows?dst_ip=10.0.2.0/24&since=1h&limit=5000');
  t.equal(narrow.statusCode, 200);
  const nb = narrow.json() as { index: string; count: number; next_cursor: string | null };
  t.equal(nb.index, 'cidr');
  t.equal(nb.count, 256);
  t.equal(nb.next_cursor, null);
  for (const q of ['ip=0.0.0.0/0', 'dst_ip=10.0.0.0/8', 'dst_ip=8.8.0.0/16', 'ip=::/0']) {
    // 8.8.0.0/16 and ::/0 hold no address ever seen: answered empty from the address index, without a scan.
    const started = process.hrtime.bigint();
    const res = await get(`/api/flows?${q}&since=1h&limit=100`);
    t.equal(res.statusCode, 200, q);
    const body = res.json() as { index: string; count: number; examined: number; next_cursor: string | null };
    t.ok(body.examined <= 20_000, `${q}: examined ${body.examined} entries, index ${body.index}`);
    if (q === 'dst_ip=8.8.0.0/16' || q === 'ip=::/0') t.match(body, { index: 'cidr', count: 0, examined: 0, next_cursor: null });
    t.comment(`${q}: ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(0)} ms, ${body.count} items`);
  }
  const conns = await get('/api/connections?dst_ip=10.0.0.0/8&since=1h');
  t.equal(conns.statusCode, 200);
  const cb = conns.json() as { partial: boolean; next_cursor: string | null; packets: number };
  t.equal(cb.partial, true, 'connections over 60,000 packets: partial');
  t.type(cb.next_cursor, 'string');
  t.comment(`connections page: ${cb.packets} packets`);
});
