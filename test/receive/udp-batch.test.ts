import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { cpSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { Redis } from 'ioredis';
import { loadUdpBatch, type UdpBatch } from '../../src/receive/udp-batch.js';
import { forEachDatagram } from '../../src/receive/udp-wire.js';
import { netnsUnsupported, sh, startReaper } from '../helpers/netns.js';
import { repoRoot } from '../helpers/paths.js';
import { freePort, startRedis } from '../helpers/redis.js';
import { serveProcess } from '../helpers/serve-process.js';
import { storedCount } from '../helpers/streams.js';
import { tempDir } from '../helpers/temp.js';
import { udpDatagrams } from './corpus.js';

const loaded = loadUdpBatch();
if (!('batch' in loaded)) throw new Error(`the addon must be built for these tests (npm install builds it): ${loaded.error}`);
const batch: UdpBatch = loaded.batch;
const addonPath = loaded.path;

/** What udp_batch.c guarantees a chunk can always take: one datagram of the largest size, with its header. */
const CHUNK_BYTES = 64 * 1024 + 65_536 + 512;

interface Received {
  from: string;
  bytes: Buffer;
  receivedAtMs: number;
}

function open(t: Test, host: string, family: 4 | 6): { fd: number; address: string; port: number } {
  const [fd, address, port] = batch.open(host, 0, family, 1 << 20);
  t.teardown(() => batch.close(fd));
  return { fd, address, port };
}

/** Reads until `count` datagrams have come (or 5 s pass), with `sealAt` as the reader would use it. */
async function readAll(t: Test, fds: number[], count: number, sealAt = 64 * 1024): Promise<{ got: Received[]; calls: number; full: number }> {
  const got: Received[] = [];
  const result = new Float64Array(3);
  const fdArray = Int32Array.from(fds);
  let calls = 0;
  let full = 0;
  const deadline = Date.now() + 5000;
  while (got.length < count && Date.now() < deadline) {
    const chunk = Buffer.alloc(CHUNK_BYTES);
    const used = batch.receive(fdArray, 20, chunk, 0, sealAt, result);
    calls++;
    if (result[1] === 1) full++;
    t.equal(result[2], 0, 'no read error');
    let n = 0;
    forEachDatagram(chunk.subarray(0, used), (start, end, from, receivedAtMs) => {
      got.push({ from, bytes: Buffer.from(chunk.subarray(start, end)), receivedAtMs });
      n++;
    });
    t.equal(n, result[0], 'result[0] counts the datagrams written');
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { got, calls, full };
}

async function send(to: { address: string; port: number }, datagrams: Buffer[], family: 4 | 6 = 4): Promise<string> {
  const s = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => s.bind(0, family === 6 ? '::1' : '127.0.0.1', resolve));
  for (const d of datagrams) await new Promise<void>((resolve, reject) => s.send(d, to.port, to.address, (err) => (err ? reject(err) : resolve())));
  const from = s.address().address;
  s.close();
  return from;
}

t.test('real rsyslog datagrams come out in the chunk layout, in order, with their sender and kernel receive time', async (t) => {
  const v4 = open(t, '127.0.0.1', 4);
  t.equal(v4.address, '127.0.0.1');
  t.ok(v4.port > 0, 'an ephemeral port was bound');
  const datagrams = udpDatagrams('tcp-egress-smtp.rsyslog-rfc5424-udp.bin');
  const before = Date.now();
  await send(v4, datagrams);
  const { got } = await readAll(t, [v4.fd], datagrams.length);
  t.equal(got.length, datagrams.length);
  t.ok(
    got.every((g, i) => g.bytes.equals(datagrams[i]!)),
    'every datagram, byte for byte, in order',
  );
  t.ok(
    got.every((g) => g.from === '127.0.0.1'),
    'the sender, as node:dgram prints it',
  );
  t.ok(
    got.every((g) => g.receivedAtMs >= before - 1 && g.receivedAtMs <= Date.now() + 1),
    'received-at is the kernel time of arrival (SO_TIMESTAMP), within the test',
  );
  t.ok(
    got.every((g, i) => i === 0 || g.receivedAtMs >= got[i - 1]!.receivedAtMs),
    'and never goes back',
  );
});

t.test('received-at is when the kernel took the datagram, not when it was read: a backlog does not move it', async (t) => {
  const s = open(t, '127.0.0.1', 4);
  await send(s, [Buffer.from('one'), Buffer.from('two')]);
  const sentBy = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const readFrom = Date.now();
  const { got } = await readAll(t, [s.fd], 2);
  t.equal(got.length, 2);
  t.ok(
    got.every((g) => g.receivedAtMs <= sentBy + 1 && g.receivedAtMs < readFrom - 250),
    `arrived by ${sentBy}, read from ${readFrom}: ${got.map((g) => g.receivedAtMs.toFixed(3)).join(', ')}`,
  );
});

t.test('IPv6 and dual-stack sockets name senders as node:dgram does', async (t) => {
  const v6 = open(t, '::1', 6);
  t.equal(v6.address, '::1');
  const any = open(t, '::', 6);
  t.equal(any.address, '::');
  const fromV6 = await send(v6, [Buffer.from('over IPv6')], 6);
  const fromV4 = await send({ address: '127.0.0.1', port: any.port }, [Buffer.from('IPv4 to a dual-stack socket')]);
  const { got } = await readAll(t, [v6.fd, any.fd], 2);
  t.same(
    got.map((g) => [g.from, g.bytes.toString()]).sort(),
    [
      [`::ffff:${fromV4}`, 'IPv4 to a dual-stack socket'],
      [fromV6, 'over IPv6'],
    ].sort(),
  );
});

t.test('an empty datagram and the largest one fit; a full chunk keeps the rest for the next call, losing none', async (t) => {
  const s = open(t, '127.0.0.1', 4);
  const datagrams = [Buffer.alloc(0), Buffer.alloc(65_507, 0x61), ...Array.from({ length: 300 }, (_, i) => Buffer.from(`seq=${i} ${'x'.repeat(2000)}`))];
  await send(s, datagrams);
  // A chunk seals past 8 KiB: the 300 datagrams (over 600 KB) take many calls, and most end on a full chunk.
  const { got, calls, full } = await readAll(t, [s.fd], datagrams.length, 8 * 1024);
  t.equal(got.length, datagrams.length, 'every datagram read came out');
  t.ok(
    got.every((g, i) => g.bytes.equals(datagrams[i]!)),
    'in order, byte for byte',
  );
  t.ok(full > 10, `${full} of ${calls} calls stopped for room`);
});

t.test('datagrams held back for room are written by a call with no sockets (as at close)', async (t) => {
  const s = open(t, '127.0.0.1', 4);
  const datagrams = Array.from({ length: 40 }, (_, i) => Buffer.from(`seq=${i} ${'y'.repeat(9000)}`));
  await send(s, datagrams);
  const result = new Float64Array(3);
  const first = Buffer.alloc(CHUNK_BYTES);
  const firstUsed = batch.receive(Int32Array.of(s.fd), 100, first, 0, 1, result);
  t.equal(result[1], 1, 'stopped for room');
  const got: string[] = [];
  forEachDatagram(first.subarray(0, firstUsed), (start, end) => got.push(first.toString('utf8', start, end)));
  for (;;) {
    const chunk = Buffer.alloc(CHUNK_BYTES);
    const used = batch.receive(new Int32Array(0), 0, chunk, 0, 1, result);
    forEachDatagram(chunk.subarray(0, used), (start, end) => got.push(chunk.toString('utf8', start, end)));
    if (result[1] !== 1) break;
  }
  // recvmmsg takes up to 64 at a time: all 40 were read by the first call, and only one fitted its chunk.
  t.same(
    got.map((g) => Number(/^seq=(\d+)/.exec(g)?.[1])),
    datagrams.map((_, i) => i),
    'all of them, in order',
  );
});

t.test('an idle socket: the call waits up to waitMs, or returns at once with 0', async (t) => {
  const s = open(t, '127.0.0.1', 4);
  const result = new Float64Array(3);
  const chunk = Buffer.alloc(CHUNK_BYTES);
  t.equal(batch.receive(Int32Array.of(s.fd), 0, chunk, 7, 1024, result), 7, 'nothing written: the length is unchanged');
  t.same([...result], [0, 0, 0]);
  // The quickest of several calls: one call can be preempted on a loaded machine, all of them hardly.
  let quickest = Infinity;
  for (let i = 0; i < 10; i++) {
    const start = performance.now();
    batch.receive(Int32Array.of(s.fd), 0, chunk, 0, 1024, result);
    quickest = Math.min(quickest, performance.now() - start);
  }
  t.ok(quickest < 20, `waitMs 0 does not wait (quickest of 10: ${quickest.toFixed(2)} ms)`);
  const start = performance.now();
  batch.receive(Int32Array.of(s.fd), 60, chunk, 0, 1024, result);
  const waited = performance.now() - start;
  t.ok(waited >= 55, `waitMs 60 waited ${waited.toFixed(1)} ms`);
  t.equal(result[0], 0, 'and returned with nothing');
  // From another process: this thread is blocked in the call. The wait is far longer than any process start, so only
  // a call that missed the datagram returns without it.
  const sender = spawn(process.execPath, ['-e', `setTimeout(() => { const s = require('node:dgram').createSocket('udp4'); s.send('wake', ${s.port}, '127.0.0.1', () => s.close()); }, 100)`]);
  const used = batch.receive(Int32Array.of(s.fd), 60_000, chunk, 0, 1024, result);
  await once(sender, 'exit');
  t.equal(result[0], 1, 'a datagram ends the wait');
  t.ok(used > 0);
});

t.test('bad arguments and failed binds throw, with the reason', async (t) => {
  const taken = open(t, '127.0.0.1', 4);
  t.throws(() => batch.open('127.0.0.1', taken.port, 4, 1 << 20), { message: /bind: Address already in use/, code: 'EADDRINUSE' });
  t.throws(() => batch.open('not an address', 0, 4, 1 << 20), { message: /not an IPv4 address/ });
  t.throws(() => batch.open('::1', 0, 4, 1 << 20), { message: /not an IPv4 address/ });
  t.throws(() => batch.open('127.0.0.1', 0, 6, 1 << 20), { message: /not an IPv6 address/ });
  const result = new Float64Array(3);
  t.throws(() => batch.receive(Int32Array.of(taken.fd), 0, Buffer.alloc(1000), 0, 10, result), TypeError, 'a chunk with no room for the largest datagram');
  t.throws(() => batch.receive(Int32Array.of(taken.fd), 0, Buffer.alloc(CHUNK_BYTES), 0, 10, new Float64Array(2)), TypeError, 'no room for the result');
  t.throws(() => batch.receive([taken.fd] as unknown as Int32Array, 0, Buffer.alloc(CHUNK_BYTES), 0, 10, result), TypeError, 'descriptors not in an Int32Array');
  t.throws(() => batch.receive(Int32Array.of(taken.fd), 0, Buffer.alloc(CHUNK_BYTES), CHUNK_BYTES + 1, 10, result), TypeError, 'a start past the chunk');
});

t.test('a closed descriptor is a read error, reported in result[2], not a crash', async (t) => {
  const [fd] = batch.open('127.0.0.1', 0, 4, 1 << 20);
  batch.close(fd);
  const result = new Float64Array(3);
  batch.receive(Int32Array.of(fd), 0, Buffer.alloc(CHUNK_BYTES), 0, 1024, result);
  t.equal(result[2], 9, 'EBADF');
});

t.test('the socket is released at close: its port can be bound again; a second close closes nothing', async (t) => {
  const [fd, , port] = batch.open('127.0.0.1', 0, 4, 1 << 20);
  t.equal(batch.close(fd), true);
  t.equal(batch.close(fd), false, 'the number may belong to another descriptor by now');
  t.equal(batch.close(0), false, 'nor is any descriptor the addon did not open');
  const s = dgram.createSocket('udp4');
  s.bind(port, '127.0.0.1');
  await once(s, 'listening');
  t.equal(s.address().port, port);
  s.close();
});

t.test('a thread that dies with its sockets open leaves no port bound', async (t) => {
  const code = `
    const { parentPort } = require('node:worker_threads');
    const batch = require(${JSON.stringify(addonPath)});
    const [, , port] = batch.open('127.0.0.1', 0, 4, 1 << 20);
    parentPort.postMessage(port);
    setImmediate(() => { throw new Error('the thread fails'); });`;
  const worker = new Worker(code, { eval: true });
  const [port] = (await once(worker, 'message')) as [number];
  const [err] = (await once(worker, 'error')) as [Error];
  t.match(err.message, /the thread fails/);
  await once(worker, 'exit');
  const s = dgram.createSocket('udp4');
  s.bind(port, '127.0.0.1');
  await once(s, 'listening');
  t.equal(s.address().port, port, 'bound again');
  s.close();
});

t.test('a link-local sender is named with its interface, exactly as node:dgram names it', async (t) => {
  const unsupported = await netnsUnsupported(['ip']);
  if (unsupported !== undefined) {
    t.plan(0, `skipped: ${unsupported}`);
    return;
  }
  // A veth pair inside a namespace of the test's own, a link-local address at each end: nothing leaves it.
  const ns = `dfll-${randomBytes(3).toString('hex')}`;
  const reaper = startReaper();
  reaper.netns(ns);
  t.teardown(async () => {
    await sh(['ip', 'netns', 'del', ns]).catch(() => undefined);
    reaper.disarm();
  });
  await sh(['ip', 'netns', 'add', ns]);
  const inNs = (...argv: string[]): Promise<unknown> => sh(['ip', '-n', ns, ...argv]);
  await inNs('link', 'add', 'dfl0', 'type', 'veth', 'peer', 'name', 'dfl1');
  await inNs('-6', 'addr', 'add', 'fe80::a/64', 'dev', 'dfl0', 'nodad');
  await inNs('-6', 'addr', 'add', 'fe80::b/64', 'dev', 'dfl1', 'nodad');
  await inNs('link', 'set', 'dfl0', 'up');
  await inNs('link', 'set', 'dfl1', 'up');
  const code = `
    const dgram = require('node:dgram');
    const batch = require(${JSON.stringify(addonPath)});
    const [fd, , port] = batch.open('::', 0, 6, 1 << 20);
    const viaDgram = dgram.createSocket('udp6');
    viaDgram.bind(0, '::', () => {
      const sender = dgram.createSocket('udp6');
      sender.bind(0, 'fe80::b%dfl1', () => {
        sender.send('hi', port, 'fe80::a%dfl1');
        sender.send('hi', viaDgram.address().port, 'fe80::a%dfl1');
      });
      viaDgram.on('message', (_m, rinfo) => {
        const chunk = Buffer.alloc(${CHUNK_BYTES});
        const result = new Float64Array(3);
        let used = 0;
        for (let i = 0; i < 100 && result[0] === 0; i++) used = batch.receive(Int32Array.of(fd), 20, chunk, 0, 1024, result);
        const address = chunk.toString('latin1', 5, 5 + chunk[4]);
        console.log(JSON.stringify({ dgram: rinfo.address, batch: address }));
        process.exit(0);
      });
    });
    setTimeout(() => process.exit(2), 5000);`;
  const { stdout } = await sh(['ip', 'netns', 'exec', ns, process.execPath, '-e', code]);
  const seen = JSON.parse(stdout) as { dgram: string; batch: string };
  t.equal(seen.dgram, 'fe80::b%dfl0', 'node:dgram: the address and the interface it came in on');
  t.equal(seen.batch, seen.dgram, 'the addon names it the same');
});

t.test('a checkout where the addon did not build: `auto` reads with node:dgram, says so, and the datagrams are stored', async (t) => {
  // A copy of the package without build/, as `npm install` leaves it when node-gyp fails (the install script then
  // only warns): the reader is chosen at run time, so nothing but the missing file makes the difference.
  const root = tempDir(t, 'no-addon');
  cpSync(join(repoRoot, 'src'), join(root, 'src'), { recursive: true });
  for (const file of ['package.json', 'tsconfig.json']) cpSync(join(repoRoot, file), join(root, file));
  symlinkSync(join(repoRoot, 'node_modules'), join(root, 'node_modules'));
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const [syslogPort, httpPort] = [await freePort(), await freePort()];
  const service = serveProcess(
    t,
    {
      REDIS_URL: redis.url,
      SYSLOG_HOST: '127.0.0.1',
      SYSLOG_UDP_PORT: String(syslogPort),
      SYSLOG_TCP: 'false',
      HTTP_PORT: String(httpPort),
      DOCKFLOW_SPOOL_DIR: join(root, 'spool'),
      DOCKFLOW_DOCKER: 'false',
      DOCKFLOW_UDP_READER: 'auto',
    },
    root,
  );
  await service.logged('dockflow serving');

  const datagrams = udpDatagrams('tcp-egress-smtp.rsyslog-rfc3164-udp.bin');
  const sender = dgram.createSocket('udp4');
  t.teardown(() => sender.close());
  for (const d of datagrams) await new Promise<void>((resolve, reject) => sender.send(d, syslogPort, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  for (let i = 0; i < 500 && (await storedCount(client)) < datagrams.length; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(await storedCount(client), datagrams.length, `${datagrams.length} datagrams, every one stored`);
  const lines = service.log().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string; reader?: string; err?: string });
  const fallback = lines.find((l) => l.msg?.startsWith('syslog UDP read with node:dgram'));
  t.ok(fallback, 'the fallback is logged as a warning');
  t.match(fallback?.err, /udp_batch\.node not found/, 'with the reason');
  t.ok(lines.some((l) => l.reader === 'dgram'), 'the listener reports the node:dgram reader');
  service.child.kill('SIGTERM');
  const [code] = await service.exited;
  t.equal(code, 0, 'a clean exit');
});
