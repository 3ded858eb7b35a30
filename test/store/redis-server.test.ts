import { symlinkSync, mkdirSync, existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import t from 'tap';
import { startEmbeddedRedis } from '../../src/store/redis-server.js';
import { freePort } from '../helpers/redis.js';
import { silent } from './records.js';
import { tempDir } from '../helpers/temp.js';

t.test('starts redis-server with AOF under dataDir, keeps data across stop/start, stops its child', async (t) => {
  const dataDir = join(tempDir(t, 'embedded'), 'redis');
  const server = await startEmbeddedRedis({ dataDir, logger: silent });
  t.match(server.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
  const client = new Redis(server.url, { lazyConnect: true });
  await client.connect();
  t.same(await client.config('GET', 'appendonly'), ['appendonly', 'yes']);
  t.same(await client.config('GET', 'bind'), ['bind', '127.0.0.1']);
  t.same(await client.config('GET', 'appendfsync'), ['appendfsync', 'everysec'], 'fsync every second by default');
  await client.set('k', 'v');
  client.disconnect();
  await server.stop();
  t.throws(() => process.kill(server.pid, 0), 'child gone after stop()');
  t.ok(existsSync(join(dataDir, 'appendonlydir')), 'AOF under dataDir');

  const again = await startEmbeddedRedis({ dataDir, port: server.port, appendFsync: 'always', logger: silent });
  t.teardown(() => again.stop());
  const c2 = new Redis(again.url, { lazyConnect: true });
  await c2.connect();
  t.equal(await c2.get('k'), 'v', 'data survived the restart');
  t.same(await c2.config('GET', 'appendfsync'), ['appendfsync', 'always'], 'or on every write, when asked');
  c2.disconnect();
});

t.test('a port already in use is reported as such', async (t) => {
  const port = await freePort();
  const blocker = net.createServer().listen(port, '127.0.0.1');
  t.teardown(() => blocker.close());
  await new Promise((r) => blocker.once('listening', r));
  await t.rejects(startEmbeddedRedis({ dataDir: tempDir(t, 'embedded'), port, logger: silent }), {
    code: 'DOCKFLOW_LISTEN_FAILED',
    message: new RegExp(`127\\.0\\.0\\.1:${port} is already in use`),
  });
});

t.test('a second server on the same live data directory is refused', async (t) => {
  const dataDir = tempDir(t, 'embedded');
  const server = await startEmbeddedRedis({ dataDir, logger: silent });
  t.teardown(() => server.stop());
  await t.rejects(startEmbeddedRedis({ dataDir, logger: silent }), { code: 'DOCKFLOW_REDIS_UNAVAILABLE', message: /still uses/ });
});

t.test('redis-server missing from PATH: a clear error saying how to install it', async (t) => {
  // A PATH holding node but not redis-server.
  const bin = join(tempDir(t, 'embedded'), 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  const saved = process.env.PATH;
  process.env.PATH = bin;
  t.teardown(() => void (process.env.PATH = saved));
  t.throws(() => execFileSync('redis-server', ['--version']), 'really not on this PATH');
  await t.rejects(startEmbeddedRedis({ dataDir: tempDir(t, 'embedded'), logger: silent }), {
    code: 'DOCKFLOW_REDIS_SERVER_MISSING',
    message: /apt-get install redis-server/,
  });
});
