import t from 'tap';
import { connectRedis, reconnectDelayMs, redactUrl } from '../../src/store/connect.js';
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
