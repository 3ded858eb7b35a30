import t from 'tap';
import { Redis } from 'ioredis';
import { startRedis } from './redis.js';

t.test('the harness starts a real redis-server, kills and restarts it', async (t) => {
  const r = await startRedis();
  t.teardown(() => r.stop());
  const client = new Redis(r.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  t.equal(await client.ping(), 'PONG');
  client.disconnect();
  await r.kill();
  await r.restart();
  const again = new Redis(r.url);
  t.equal(await again.ping(), 'PONG');
  again.disconnect();
});
