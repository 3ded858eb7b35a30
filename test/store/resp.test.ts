import { join } from 'node:path';
import { Redis } from 'ioredis';
import t, { type Test } from 'tap';
import { RespConnection, RespConnectionError, RespWriter, type RespTarget } from '../../src/store/resp.js';
import { startRedis } from '../helpers/redis.js';
import { silent, until } from './records.js';

/** A connection that counts its handshakes; closed when the test ends. */
function connection(t: Test, target: RespTarget, setup?: () => { payload: Buffer; replies: number }) {
  const state = { ready: 0 };
  const conn = new RespConnection(target, { logger: silent, onReady: () => state.ready++, ...(setup ? { setup } : {}) });
  t.teardown(() => conn.close());
  conn.connect();
  return { conn, state };
}

const command = (...args: Array<string | Buffer>): Buffer => {
  const w = new RespWriter(16).command(args.length);
  for (const a of args) w.arg(a);
  return w.bytes();
};

t.test('arguments are sent with their UTF-8 byte lengths; replies come back in order, error replies as values', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const { conn } = connection(t, { host: '127.0.0.1', port: redis.port });
  await until(() => conn.isReady, 'ready');
  const text = 'é€😀 and a long tail '.repeat(200);
  const bytes = Buffer.from([0, 13, 10, 255, 36, 42]);
  const payload = Buffer.concat([command('SET', 'text', text), command('SET', 'bytes', bytes), command('GET', 'text'), command('INCR', 'text'), command('PING')]);
  const replies = await conn.send(payload, 5);
  t.same(replies.slice(0, 3), ['OK', 'OK', text]);
  t.ok(replies[3] instanceof Error && (replies[3] as Error).name === 'ReplyError', 'an error reply is that command’s reply');
  t.equal(replies[4], 'PONG');
  const check = new Redis(redis.port, '127.0.0.1');
  t.teardown(() => check.disconnect());
  t.same(await check.getBuffer('bytes'), bytes, 'a Buffer argument is sent as it is');
});

t.test('AUTH with a user, SELECT, and the setup commands run on every connection', async (t) => {
  const redis = await startRedis({ args: () => ['--user', 'writer', 'on', '>s3cret', '~*', '&*', '+@all', '--user', 'default', 'off'] });
  t.teardown(() => redis.stop());
  const target = { host: '127.0.0.1', port: redis.port, username: 'writer', password: 's3cret', db: 3 };
  const { conn, state } = connection(t, target, () => ({ payload: command('INCR', 'handshakes'), replies: 1 }));
  await until(() => conn.isReady, 'ready');
  t.same(await conn.send(command('SET', 'where', 'db3'), 1), ['OK']);
  const check = new Redis({ port: redis.port, host: '127.0.0.1', username: 'writer', password: 's3cret', db: 3 });
  t.teardown(() => check.disconnect());
  t.equal(await check.get('where'), 'db3');
  t.equal(await check.client('LIST').then((list) => /name=dockflow-writer/.test(String(list))), true, 'named');

  // Lost: what is waiting for a reply fails as a connection error (Redis may or may not have run it).
  await redis.kill();
  const lost = await conn.send(command('BLPOP', 'never', '0'), 1).catch((err: unknown) => err);
  t.ok(lost instanceof RespConnectionError, 'not a ReplyError: the writer treats it as uncertain');
  await until(() => !conn.isReady, 'noticed');
  await t.rejects(conn.send(command('PING'), 1), RespConnectionError, 'a send while not ready fails at once');
  await redis.restart();
  await until(() => conn.isReady, 'reconnected');
  t.equal(state.ready, 2);
  t.same(await conn.send(command('GET', 'handshakes'), 1), ['1'], 'the setup ran again on the new server');
});

t.test('a wrong password fails the handshake: never ready, retried, nothing sent', async (t) => {
  const redis = await startRedis({ args: () => ['--requirepass', 'right'] });
  t.teardown(() => redis.stop());
  const { conn, state } = connection(t, { host: '127.0.0.1', port: redis.port, password: 'wrong' });
  const check = new Redis({ port: redis.port, host: '127.0.0.1', password: 'right' });
  t.teardown(() => check.disconnect());
  const connections = async (): Promise<number> => Number(/total_connections_received:(\d+)/.exec(await check.info('stats'))?.[1]);
  await until(async () => (await connections()) >= 3, 'retried');
  t.equal(conn.isReady, false);
  t.equal(state.ready, 0);
  await t.rejects(conn.send(command('PING'), 1), RespConnectionError);
});

t.test('a unix socket', async (t) => {
  const redis = await startRedis({ args: (dir) => ['--unixsocket', join(dir, 'redis.sock'), '--unixsocketperm', '700'] });
  t.teardown(() => redis.stop());
  const { conn } = connection(t, { path: join(redis.dir, 'redis.sock') });
  await until(() => conn.isReady, 'ready');
  t.same(await conn.send(command('PING'), 1), ['PONG']);
});
