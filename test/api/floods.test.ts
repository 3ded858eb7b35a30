/**
 * Floods against the API's caps, on loopback with bounded counts: idle HTTP connections, live followers, and a burst
 * faster than the live tail's rate cap. Each shows real requests still served, the refusals counted, and `/healthz`
 * saying so.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import t from 'tap';
import { healthRoutes } from '../../src/api/health.js';
import { defaultApiLimits, describeCounters, newCounters, type ApiCounters, type ApiLimits } from '../../src/api/limits.js';
import type { FastifyInstance } from 'fastify';
import { appFor } from './app-helper.js';
import { BASE_MS, buildDataset, CONTAINERS, enrich, startEnv, type Env } from './store-helper.js';

let env: Env;
t.before(async () => {
  env = await startEnv();
});
t.teardown(() => env.close());

async function waitUntil(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** An app listening on loopback with these limits, its counters and a /healthz that reports them. */
async function serve(overrides: Partial<ApiLimits>): Promise<{ app: FastifyInstance; port: number; counters: ApiCounters }> {
  const limits = defaultApiLimits(overrides);
  const counters = newCounters();
  let load = (): { clients: number; queries: number } => ({ clients: 0, queries: 0 });
  const health = { checks: () => ({ api: { ok: true, detail: describeCounters(counters, load(), limits) } }) };
  const app = await appFor(env, {
    limits,
    counters,
    load: (l) => {
      load = l;
    },
    plugins: [healthRoutes({ health, registry: new Registry() })],
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, port: (app.server.address() as AddressInfo).port, counters };
}

function request(port: number, path: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

t.test('a flood of idle HTTP connections holds at most maxConnections, briefly; real requests are served; /healthz counts it', async (t) => {
  const { app, port, counters } = await serve({ maxConnections: 20, headersTimeoutMs: 500, keepAliveTimeoutMs: 500, idleTimeoutMs: 500 });
  t.teardown(() => app.close());
  const FLOOD = 300;
  const sockets: net.Socket[] = [];
  let closedByServer = 0;
  await Promise.all(
    Array.from({ length: FLOOD }, () =>
      new Promise<void>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => resolve());
        s.on('error', () => resolve());
        s.on('close', () => {
          closedByServer += 1;
          resolve();
        });
        sockets.push(s);
      }),
    ),
  );
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  await waitUntil('refusals counted', () => counters.connectionsRefused >= FLOOD - 20);
  const open = await new Promise<number>((resolve) => app.server.getConnections((_e, n) => resolve(n)));
  t.ok(open <= 20, `${open} connections open on the server during the flood (cap 20)`);
  // Idle connections never send a byte: the server closes them after idleTimeoutMs, and real clients get in.
  let attempts = 0;
  let served: { status: number; body: string } | undefined;
  while (served === undefined && attempts < 200) {
    attempts += 1;
    served = await request(port, '/healthz').catch(() => undefined);
    if (served === undefined) await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(served?.status, 200, `a real request served (attempt ${attempts})`);
  await waitUntil('every idle connection closed by the server', () => closedByServer >= FLOOD);
  t.match(JSON.parse(served!.body), { status: 'ok', checks: { api: { detail: new RegExp(`refused: ${counters.connectionsRefused} connections|refused: \\d+ connections`) } } });
  t.comment(`flood ${FLOOD} idle connections, cap 20: refused ${counters.connectionsRefused}, all closed by the server; real request served on attempt ${attempts}`);
});

t.test('live followers over the cap get 503 with Retry-After, counted; queries are still served', async (t) => {
  const { app, port, counters } = await serve({ maxLiveClients: 3 });
  t.teardown(() => app.close());
  const followers: http.ClientRequest[] = [];
  t.teardown(() => followers.forEach((r) => r.destroy()));
  const follow = (): Promise<http.IncomingMessage> =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/api/flows/live', agent: false }, resolve);
      req.on('error', reject);
      followers.push(req);
    });
  for (let i = 0; i < 3; i++) t.equal((await follow()).statusCode, 200, `follower ${i + 1}`);
  const statuses: number[] = [];
  for (let i = 0; i < 20; i++) {
    const res = await follow();
    statuses.push(res.statusCode ?? 0);
    t.equal(res.headers['retry-after'], '2');
    res.resume();
  }
  t.same(new Set(statuses), new Set([503]), '20 more refused');
  t.equal(counters.liveRefused, 20);
  t.equal((await request(port, `/api/flows?limit=1`)).status, 200, 'queries still served');
  const health = JSON.parse((await request(port, '/healthz')).body) as { checks: { api: { detail: string } } };
  t.match(health.checks.api.detail, /3\/3 live followers/);
  t.match(health.checks.api.detail, /20 followers/);
  followers[0]!.destroy();
  await waitUntil('a slot frees', async () => {
    const res = await follow();
    res.resume();
    return res.statusCode === 200;
  });
});

t.test('a burst faster than the live rate cap: followers get what fits and an exact count of what was skipped', async (t) => {
  const { app, port, counters } = await serve({ liveMaxRecordsPerSecond: 50 });
  t.teardown(() => app.close());
  const req = http.get({ host: '127.0.0.1', port, path: '/api/flows/live', agent: false });
  t.teardown(() => req.destroy());
  const res = await new Promise<http.IncomingMessage>((resolve) => req.once('response', resolve));
  res.setEncoding('utf8');
  let text = '';
  res.on('data', (c: string) => (text += c));
  await waitUntil('subscribed', () => text.includes(': subscribed'));
  const base = buildDataset()[0]!;
  const N = 2000;
  // Now: the live tail follows the partitions being written (the current and previous 10-minute bucket).
  const now = Date.now();
  const records = Array.from({ length: N }, (_, i) => enrich(base, now + i, CONTAINERS.mailer));
  for (let i = 0; i < N; i += 500) await env.writer.write(records.slice(i, i + 500));
  const tally = (): { flows: number; skipped: number } => ({
    flows: (text.match(/^event: flow$/gm) ?? []).length,
    skipped: [...text.matchAll(/^event: gap\ndata: \{"skipped":(\d+)\}$/gm)].reduce((n, m) => n + Number(m[1]), 0),
  });
  await waitUntil('every record delivered or counted as skipped', () => tally().flows + tally().skipped >= N);
  const { flows, skipped } = tally();
  t.equal(flows + skipped, N, `${flows} delivered + ${skipped} skipped = ${N}`);
  t.ok(skipped > 0, 'the cap skipped some');
  t.equal(counters.liveSkipped, skipped, 'counted');
});
