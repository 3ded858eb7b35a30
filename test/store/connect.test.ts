import t from 'tap';
import { connectCluster, connectRedis, parseRedisTarget, reconnectDelayMs, redactUrl } from '../../src/store/connect.js';
import { startRedisCluster } from '../helpers/redis-cluster.js';
import { startRedis } from '../helpers/redis.js';
import { silent, until } from './records.js';

t.test('commands fail at once while Redis is down (no offline queue), and the client reconnects', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = connectRedis(redis.url, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  await redis.kill();
  await until(() => client.status !== 'ready', 'sees the outage');
  await t.rejects(client.ping(), /enableOfflineQueue|Connection is closed|closed/i, 'rejected, not queued');
  await redis.restart();
  await until(() => client.status === 'ready', 'reconnected');
  t.equal(await client.ping(), 'PONG');
});

t.test('reconnect backoff grows and is capped; URLs are logged without passwords', async (t) => {
  t.same([1, 2, 3, 7, 50].map(reconnectDelayMs), [50, 100, 200, 2000, 2000]);
  t.equal(redactUrl('redis://user:secret@127.0.0.1:6379/0'), 'redis://user:***@127.0.0.1:6379/0');
  t.equal(redactUrl('redis://127.0.0.1:6379'), 'redis://127.0.0.1:6379');
});

t.test('REDIS_URL: one server, or a cluster by some of its nodes', async (t) => {
  const table: Array<[string, unknown]> = [
    ['redis://127.0.0.1:6379', { kind: 'single', url: 'redis://127.0.0.1:6379' }],
    ['unix:///run/redis.sock', { kind: 'single', url: 'unix:///run/redis.sock' }],
    ['redis+cluster://h1:7000,h2:7001,h3:7002', { kind: 'cluster', seeds: [{ host: 'h1', port: 7000 }, { host: 'h2', port: 7001 }, { host: 'h3', port: 7002 }], tls: false }],
    ['redis+cluster://h1', { kind: 'cluster', seeds: [{ host: 'h1', port: 6379 }], tls: false }],
    ['rediss+cluster://u:p%40ss@h1:7000,[::1]:7001/', { kind: 'cluster', seeds: [{ host: 'h1', port: 7000 }, { host: '::1', port: 7001 }], username: 'u', password: 'p@ss', tls: true }],
    ['REDIS+CLUSTER://:secret@10.0.0.1:7000/0', { kind: 'cluster', seeds: [{ host: '10.0.0.1', port: 7000 }], password: 'secret', tls: false }],
  ];
  for (const [url, want] of table) t.same(parseRedisTarget(url), want, url);
  const bad: Array<[string, RegExp]> = [
    ['redis+cluster://', /no cluster node/],
    ['redis+cluster://h1:7000/2', /no database other than 0/],
    ['redis+cluster://h1:99999', /bad port/],
    ['redis+cluster://h1:x', /cannot read node/],
  ];
  for (const [url, re] of bad) t.throws(() => parseRedisTarget(url), { code: 'CONFIG_INVALID', message: re }, url);
  t.equal(redactUrl('redis+cluster://u:secret@h1:7000,h2:7001'), 'redis+cluster://u:***@h1:7000,h2:7001');
  t.equal(redactUrl('redis+cluster://h1:7000,h2:7001'), 'redis+cluster://h1:7000,h2:7001');
});

t.test("a cluster client connects through one seed, learns every master, and keeps dockflow's no-offline-queue policy", async (t) => {
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const target = parseRedisTarget(`redis+cluster://${cluster.nodes[1]!.address}`);
  if (target.kind !== 'cluster') throw new Error('not a cluster');
  const client = connectCluster(target, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  t.equal(client.nodes('master').length, 3, 'three masters learned from one seed');
  await client.set('{k}a', '1');
  t.equal(await client.get('{k}a'), '1');
  t.equal(client.options.enableOfflineQueue, false, 'no offline queue, as for one Redis');
});
