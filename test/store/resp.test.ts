import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import t, { type Test } from 'tap';
import { connectRedis } from '../../src/store/connect.js';
import { encodeArgs, RespConnection, RespConnectionError, RespWriter, type RespTarget } from '../../src/store/resp.js';
import { freePort, startRedis } from '../helpers/redis.js';
import { tempDir } from '../helpers/temp.js';
import { silent, until } from './records.js';

/** A connection that counts its handshakes; closed when the test ends. */
function connection(t: Test, target: RespTarget, setup?: () => { payload: Buffer; replies: number }, replyTimeoutMs?: number) {
  const state = { ready: 0 };
  const conn = new RespConnection(target, { logger: silent, onReady: () => state.ready++, ...(setup ? { setup } : {}), replyTimeoutMs });
  t.teardown(() => conn.close());
  conn.connect();
  return { conn, state };
}

const command = (...args: Array<string | Buffer>): Buffer => {
  const w = new RespWriter(16).command(args.length);
  for (const a of args) w.arg(a);
  return w.bytes();
};

t.test('RespWriter: exact RESP for every argument, including where a string’s bytes need more digits than its length', async (t) => {
  const reference = (args: Array<string | Buffer>): Buffer =>
    Buffer.concat([Buffer.from(`*${args.length}\r\n`), ...args.flatMap((a) => [Buffer.from(`$${Buffer.byteLength(a)}\r\n`), Buffer.from(a), Buffer.from('\r\n')])]);
  const cases: Array<Array<string | Buffer>> = [
    ['PING'],
    ['SET', '', 'x'.repeat(9), 'y'.repeat(10)],
    ['a'.repeat(8) + 'é'], // 9 units, 10 bytes
    ['é'.repeat(5), '😀'.repeat(3), '€'.repeat(33), '€'.repeat(34)], // 10/12/99/102 bytes
    ['\ud800 lone surrogate', 'x'.repeat(99_999) + '€'], // 3 bytes for the lone unit; 5 -> 6 digits
    [Buffer.from([0, 13, 10]), 'tail'],
  ];
  for (const args of cases) {
    const w = new RespWriter(1).command(args.length);
    for (const a of args) w.arg(a);
    t.same(w.bytes(), reference(args), args.map((a) => a.length).join(','));
  }
  const raw = new RespWriter(8).raw(encodeArgs('XADD', 's')).arg('1-0').bytes();
  t.same(raw, Buffer.from('$4\r\nXADD\r\n$1\r\ns\r\n$3\r\n1-0\r\n'), 'raw bytes written as they are');
});

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

t.test('a server that stops answering: waiting sends fail as lost after the reply timeout, and it reconnects when it answers again', async (t) => {
  const redis = await startRedis({ args: () => ['--enable-debug-command', 'local'] });
  t.teardown(() => redis.stop());
  const { conn, state } = connection(t, { host: '127.0.0.1', port: redis.port }, undefined, 900);
  await until(() => conn.isReady, 'ready');
  t.same(await conn.send(command('PING'), 1), ['PONG']);
  // Two sends answered 0.5 s apart, 1 s in all: each answer within the timeout, so not a stall.
  const slow = Buffer.concat([command('DEBUG', 'SLEEP', '0.5'), command('PING')]);
  const first = conn.send(slow, 2);
  await new Promise((r) => setTimeout(r, 100));
  t.same(await Promise.all([first, conn.send(slow, 2)]), [['OK', 'PONG'], ['OK', 'PONG']]);
  redis.pause();
  const started = Date.now();
  const lost = await conn.send(command('PING'), 1).catch((err: unknown) => err);
  t.ok(lost instanceof RespConnectionError, 'failed as lost, so the writer treats its batch as uncertain');
  t.ok(Date.now() - started >= 850, 'after the timeout, not before');
  // The kernel still accepts connections for the stopped server: handshakes time out too, and are retried.
  await new Promise((r) => setTimeout(r, 2000));
  t.equal(conn.isReady, false, 'not ready while the server is silent');
  redis.resume();
  await until(() => conn.isReady, 'reconnected', 10_000);
  t.ok(state.ready >= 2);
  t.same(await conn.send(command('PING'), 1), ['PONG']);
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

t.test('TLS (rediss://): the writer connection takes the client’s TLS options', async (t) => {
  const certDir = tempDir(t, 'tls');
  const [key, cert] = [join(certDir, 'key.pem'), join(certDir, 'cert.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const tlsPort = await freePort();
  const redis = await startRedis({
    args: () => ['--tls-port', String(tlsPort), '--tls-cert-file', cert, '--tls-key-file', key, '--tls-ca-cert-file', cert, '--tls-auth-clients', 'no'],
  });
  t.teardown(() => redis.stop());
  const client = connectRedis(`rediss://127.0.0.1:${tlsPort}`, silent, { tls: { ca: readFileSync(cert) } });
  t.teardown(() => client.disconnect());
  const { host, port, tls } = client.options;
  const { conn } = connection(t, { host, port, tls });
  await until(() => conn.isReady, 'ready over TLS');
  t.same(await conn.send(command('SET', 'over', 'tls'), 1), ['OK']);
  // The client has no offline queue: a command before its own TLS handshake is done fails at once.
  await until(() => client.status === 'ready', 'the client ready over TLS');
  t.equal(await client.get('over'), 'tls');
});
