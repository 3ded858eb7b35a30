import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { hostname } from 'node:os';
import t from 'tap';
import { Redis } from 'ioredis';
import { connectCluster, connectRedis, parseRedisTarget } from '../../src/store/connect.js';
import { acquireIngesterLease, defaultIngesterId } from '../../src/store/ingester-lease.js';
import { storeKeys } from '../../src/store/keys.js';
import { startRedisCluster } from '../helpers/redis-cluster.js';
import { startRedis } from '../helpers/redis.js';
import { silent, until } from './records.js';

const key = storeKeys('dockflow').ingesterLease('node-a');

t.test('the default id is the hostname, made key-safe', async (t) => {
  const table: Array<[string, string]> = [
    ['web-01', 'web-01'],
    ['web 01.example.com', 'web-01'],
    ['höst:1', 'h-st-1'],
    ['', 'ingester'],
    ['x'.repeat(80), 'x'.repeat(32)],
  ];
  for (const [host, want] of table) t.equal(defaultIngesterId(host), want, JSON.stringify(host));
  t.equal(key, 'dockflow:ingester:node-a:lease');
});

t.test('one holder per id: a second process is refused with who holds it; released, the id is free again', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = connectRedis(redis.url, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');

  const first = await acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 3000 });
  t.ok(first.held);
  await t.rejects(acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 3000 }), {
    code: 'DOCKFLOW_INGESTER_ID_IN_USE',
    message: new RegExp(`in use by pid ${process.pid} on ${hostname()}.*DOCKFLOW_INGESTER_ID`),
  });
  const other = await acquireIngesterLease({ redis: client, logger: silent, key: storeKeys('dockflow').ingesterLease('node-b'), id: 'node-b', ttlMs: 3000 });
  t.ok(other.held, 'another id is free');
  // Renewed: still held after several times its TTL.
  await new Promise((r) => setTimeout(r, 200));
  const pttl = await client.pttl(key);
  t.ok(pttl > 2000 && pttl <= 3000, `renewed (pttl ${pttl})`);
  await first.release();
  t.equal(await client.exists(key), 0, 'released');
  const again = await acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 3000 });
  t.ok(again.held);
  await again.release();
  await other.release();
});

t.test("a dead process' lease on this machine is taken over; a live one's is not", async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = connectRedis(redis.url, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  const child = spawn(process.execPath, ['-e', '0']);
  await once(child, 'exit');
  await client.set(key, JSON.stringify({ token: 'x', host: hostname(), pid: child.pid, since: 'then' }), 'PX', 60_000);
  const lease = await acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 3000 });
  t.ok(lease.held, 'taken over from the exited pid');
  t.match(await client.get(key), new RegExp(`"pid":${process.pid}`));
  await lease.release();
  await client.set(key, JSON.stringify({ token: 'x', host: 'elsewhere', pid: child.pid, since: 'then' }), 'PX', 60_000);
  await t.rejects(acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 3000 }), { message: /on elsewhere/ }, "another machine's is not judged");
});

t.test('a lease that expired during an outage is taken again; one taken by another process is reported lost', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = connectRedis(redis.url, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  const lease = await acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 300 });
  t.teardown(() => lease.release());
  await client.del(key);
  await until(async () => (await client.exists(key)) === 1, 'taken again');
  t.ok(lease.held);
  const intruder = new Redis(redis.port, '127.0.0.1');
  t.teardown(() => intruder.disconnect());
  await intruder.set(key, JSON.stringify({ token: 'other', host: 'h', pid: 1, since: 's' }), 'PX', 60_000);
  await until(() => !lease.held, 'lost');
  t.match(await client.get(key), /"token":"other"/, "the other holder's lease is left alone");
});

t.test('the lease works the same on a Redis Cluster', async (t) => {
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const client = connectCluster(parseRedisTarget(cluster.url) as Extract<ReturnType<typeof parseRedisTarget>, { kind: 'cluster' }>, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  const lease = await acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 3000 });
  await t.rejects(acquireIngesterLease({ redis: client, logger: silent, key, id: 'node-a', ttlMs: 3000 }), { code: 'DOCKFLOW_INGESTER_ID_IN_USE' });
  await lease.release();
  t.equal(await client.exists(key), 0);
});
