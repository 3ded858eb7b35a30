/**
 * Several dockflow processes on one store: two ingesters at once (distinct ids; a third with a taken id is refused),
 * and an API-only process (`ingest: false`, `--no-ingest`) answering from what the ingesters stored. A Redis Cluster
 * URL is refused while the store layout is not cluster-safe (see test/store/cluster-layout.test.ts for why).
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { gunzipSync } from 'node:zlib';
import t, { type Test } from 'tap';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { loadConfig, type ConfigInput } from '../src/config/index.js';
import { startService, type Service } from '../src/service.js';
import { fixture } from './helpers/paths.js';
import { startRedis } from './helpers/redis.js';
import { serveProcess } from './helpers/serve-process.js';
import { storedCount } from './helpers/streams.js';
import { tempDir } from './helpers/temp.js';

const silent = pino({ level: 'silent' });

async function serve(t: Test, redisUrl: string, file: ConfigInput = {}): Promise<Service> {
  const config = loadConfig({
    file: {
      ...file,
      syslog: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
      http: { port: 0 },
      redis: { url: redisUrl },
      store: { spoolDir: tempDir(t, 'scale'), flushIntervalMs: 5, ...file.store },
      docker: { enabled: false },
      logLevel: 'silent',
    },
  });
  const service = await startService(config, { logger: silent });
  t.teardown(() => service.close());
  return service;
}

async function sendTcp(port: number, payload: Buffer): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  for (let off = 0; off < payload.length; off += 64 * 1024) {
    if (!socket.write(payload.subarray(off, off + 64 * 1024))) await once(socket, 'drain');
  }
  socket.end();
  await once(socket, 'close');
}

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const burst = (): string[] =>
  gunzipSync(readFileSync(fixture('bench', 'burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz')))
    .toString('utf8')
    .split('\n')
    .filter((l) => l !== '');

const tcpPort = (s: Service): number => s.syslogAddresses().find((a) => a.transport === 'tcp')!.port;

/** Sum of the members' scores over every key matching `pattern`. */
async function sumScores(redis: Redis, pattern: string): Promise<number> {
  let n = 0;
  for (const key of await redis.keys(pattern)) {
    const all = await redis.zrange(key, '0', '-1', 'WITHSCORES');
    for (let i = 1; i < all.length; i += 2) n += Number(all[i]);
  }
  return n;
}

/** Entry numbers in the value lists matching `pattern` (4 bytes each). */
async function sumRefs(redis: Redis, pattern: string): Promise<number> {
  let n = 0;
  for (const key of await redis.keys(pattern)) n += (await redis.strlen(key)) / 4;
  return n;
}

t.test('two ingesters feed one store at once: every record stored once, indexed once and counted once', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const a = await serve(t, redis.url, { store: { ingesterId: 'ingester-a' } });
  const b = await serve(t, redis.url, { store: { ingesterId: 'ingester-b' } });
  await t.rejects(serve(t, redis.url, { store: { ingesterId: 'ingester-a' } }), { code: 'DOCKFLOW_INGESTER_ID_IN_USE', message: /ingester id "ingester-a" is in use/ }, 'a second process with a taken id is refused');

  const msgs = burst();
  const half = Math.floor(msgs.length / 2);
  await Promise.all([
    sendTcp(tcpPort(a), Buffer.from(msgs.slice(0, half).join('\n') + '\n')),
    sendTcp(tcpPort(b), Buffer.from(msgs.slice(half).join('\n') + '\n')),
  ]);
  await waitFor('every record', async () => (await storedCount(client)) >= msgs.length);
  t.equal(await storedCount(client), msgs.length, 'stored once each: no entry-ID collision lost or doubled one');
  // v2 layout (docs/storage.md): each record's entry number is in its partition's direction list once (4 bytes).
  t.equal(await sumRefs(client, 'dockflow:{*}:r:d|*'), msgs.length, 'one direction-index reference per record');
  t.equal(await sumScores(client, 'dockflow:{*}:n:dst:*'), msgs.length, 'per-partition top-N counts each record once');
  t.ok((await client.zrange('dockflow:{g}:parts', '0', '-1')).some((p) => p.endsWith('.ingester-a')) && (await client.zrange('dockflow:{g}:parts', '0', '-1')).some((p) => p.endsWith('.ingester-b')), 'each ingester writes partitions of its own');
  t.same((await client.keys('dockflow:ingester:*:lease')).sort(), ['dockflow:ingester:ingester-a:lease', 'dockflow:ingester:ingester-b:lease']);
});

t.test('an API-only process (ingest: false) serves what the ingesters stored, and listens for no syslog', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const ingester = await serve(t, redis.url, { store: { ingesterId: 'ingester-a' } });
  const api = await serve(t, redis.url, { ingest: false });
  t.same(api.syslogAddresses(), [], 'no listeners');
  const msgs = burst().slice(0, 2000);
  await sendTcp(tcpPort(ingester), Buffer.from(msgs.join('\n') + '\n'));
  await waitFor('stored', async () => (await storedCount(client)) >= msgs.length);
  t.same(await client.keys('dockflow:ingester:*'), ['dockflow:ingester:ingester-a:lease'], 'the API process holds no ingester lease');

  const base = `http://127.0.0.1:${api.httpAddress().port}`;
  const health = await fetch(`${base}/healthz`);
  t.equal(health.status, 200);
  t.same(Object.keys(((await health.json()) as { checks: object }).checks), ['redis', 'api'], 'health: Redis and the API, no ingest checks');
  let seen = 0;
  let cursor: string | undefined;
  do {
    const page = (await (await fetch(`${base}/api/flows?since=1970-01-01T00:00:00Z&limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).json()) as { items: unknown[]; next_cursor?: string | null };
    seen += page.items.length;
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined);
  t.equal(seen, msgs.length, 'every record the ingester stored, through the API process');
  const stats = await api.close();
  t.equal(stats, true, 'closes cleanly');
});

t.test('dockflow serve --no-ingest: the CLI flag', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const proc = serveProcess(t, { REDIS_URL: redis.url, HTTP_PORT: '0', DOCKFLOW_DOCKER: 'false', DOCKFLOW_SPOOL_DIR: tempDir(t, 'scale') }, undefined, ['--no-ingest']);
  await proc.logged('dockflow serving');
  t.match(proc.log(), /API only \(--no-ingest\)/);
  t.match(proc.log(), /"syslog":\[\]/);
  proc.child.kill('SIGTERM');
  t.same((await proc.exited)[0], 0);
});

t.test('a Redis Cluster URL is refused with the reason while the store layout is not cluster-safe', async (t) => {
  await t.rejects(serve(t, 'redis+cluster://127.0.0.1:1,127.0.0.1:2'), { code: 'DOCKFLOW_CONFIG_INVALID', message: /Redis Cluster.*CROSSSLOT.*docs\/scaling\.md/s });
});
