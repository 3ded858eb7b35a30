/**
 * End to end: the real service (receivers, parser, enrichers, writer, HTTP) on free loopback ports with its own
 * redis-server, fed the real rsyslog captures over UDP, TCP-LF and TCP octet-counted; then the failure paths: Redis
 * killed mid-stream, SIGTERM mid-burst, junk and half-open senders.
 */
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import t, { type Test } from 'tap';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { loadConfig, type ConfigInput } from '../src/config/index.js';
import { createLineOptions, parseLine } from '../src/parse/line.js';
import type { FlowRecord } from '../src/record.js';
import { startService, type Service } from '../src/service.js';
import { decodeFlat } from '../src/store/encode.js';
import { freePort, startRedis, type TestRedis } from './helpers/redis.js';
import { fixture, repoRoot } from './helpers/paths.js';
import { messages, SCENARIOS } from './fixtures/syslog/corpus.js';
import { serveProcess } from './helpers/serve-process.js';
import { storedCount, streamKeys } from './helpers/streams.js';
import { tempDir } from './helpers/temp.js';

const silent = pino({ level: 'silent' });

async function serve(t: Test, redisUrl: string, spoolDir: string, file: ConfigInput = {}): Promise<Service> {
  const config = loadConfig({
    file: {
      ...file,
      syslog: { host: '127.0.0.1', udpPort: 0, tcpPort: 0, ...file.syslog },
      http: { port: 0 },
      redis: { url: redisUrl },
      // The original message kept: the test compares every parsed field with what was sent.
      store: { spoolDir, flushIntervalMs: 5, keepOriginal: true, ...file.store },
      docker: { enabled: false },
      logLevel: 'silent',
    },
  });
  const service = await startService(config, { logger: silent });
  let closed = false;
  t.teardown(async () => {
    if (!closed) await service.close();
  });
  const close = service.close;
  service.close = async () => {
    closed = true;
    return close();
  };
  return service;
}

const portOf = (s: Service, transport: 'tcp' | 'udp'): number => s.syslogAddresses().find((a) => a.transport === transport)!.port;

async function sendTcp(port: number, payload: Buffer, chunkBytes = 64 * 1024): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  for (let off = 0; off < payload.length; off += chunkBytes) {
    if (!socket.write(payload.subarray(off, off + chunkBytes))) await once(socket, 'drain');
  }
  socket.end();
  await once(socket, 'close');
}

/** Paced so that a loopback socket with an 8 MiB buffer never overflows: this test is about the service, not loss. */
async function sendUdp(port: number, datagrams: readonly string[]): Promise<void> {
  const socket = dgram.createSocket('udp4');
  for (let i = 0; i < datagrams.length; i++) {
    await new Promise<void>((resolve, reject) => socket.send(datagrams[i]!, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
    if (i % 200 === 199) await new Promise((r) => setTimeout(r, 2));
  }
  socket.close();
}

/** Every stored record, by direction, in partition then stream order. */
async function storedRecords(redis: Redis): Promise<Map<string, FlowRecord[]>> {
  const out = new Map<string, FlowRecord[]>();
  const reg = { containers: new Map(), asNames: new Map() };
  for (const key of await streamKeys(redis)) {
    let start = '-';
    for (;;) {
      const page = await redis.xrange(key, start, '+', 'COUNT', 5000);
      for (const [, fields] of page) {
        const r = decodeFlat(fields, reg)!;
        out.set(r.network.direction, [...(out.get(r.network.direction) ?? []), r]);
      }
      if (page.length < 5000) break;
      start = `(${page[page.length - 1]![0]}`;
    }
  }
  return out;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the service must have stored for these messages: the parser's own records, grouped by stream. */
function expectedByStream(msgs: readonly string[]): Map<string, FlowRecord[]> {
  const opts = createLineOptions({});
  const out = new Map<string, FlowRecord[]>();
  for (const m of msgs) {
    const r = parseLine(m, opts, Date.now());
    if (typeof r === 'string') continue;
    const key = r.network.direction;
    out.set(key, [...(out.get(key) ?? []), r]);
  }
  return out;
}

/** The fields that identify a packet; what enrichment adds and the receive time differ by design. */
const identity = (r: FlowRecord): string =>
  JSON.stringify([r['@timestamp'], r.log?.prefix, r.source.ip, r.source.port, r.destination.ip, r.destination.port, r.network.community_id, r.iptables, r.observer]);

function sameRecords(t: Test, actual: Map<string, FlowRecord[]>, expected: Map<string, FlowRecord[]>, label: string): void {
  t.same([...actual.keys()].sort(), [...expected.keys()].sort(), `${label}: the same streams`);
  for (const [key, want] of expected) {
    const got = actual.get(key) ?? [];
    t.equal(got.length, want.length, `${label}: ${key} holds every record`);
    const firstDiff = want.findIndex((w, i) => identity(w) !== (got[i] ? identity(got[i]) : undefined));
    t.equal(firstDiff, -1, `${label}: ${key} records equal and in arrival order`);
  }
}

const burstMessages = (): string[] => {
  const out: string[] = [];
  const lf = gunzipSync(readFileSync(fixture('bench', 'burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz'))).toString('utf8');
  for (const line of lf.split('\n')) if (line !== '') out.push(line);
  return out;
};

t.test('every captured message arrives in Redis, over each transport and framing', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const service = await serve(t, redis.url, tempDir(t, 'svc'));

  const cases: Array<[string, (scenario: string) => Promise<string[]>]> = [
    ['rfc3164 over TCP, LF framing', async (sc) => {
      await sendTcp(portOf(service, 'tcp'), readFileSync(fixture('syslog', `${sc}.rsyslog-rfc3164-tcp-lf.bin`)), 97);
      return messages(`${sc}.rsyslog-rfc3164-tcp-lf.bin`);
    }],
    ['rfc5424 over TCP, octet counting', async (sc) => {
      await sendTcp(portOf(service, 'tcp'), readFileSync(fixture('syslog', `${sc}.rsyslog-rfc5424-tcp-octet.bin`)), 61);
      return messages(`${sc}.rsyslog-rfc5424-tcp-octet.bin`);
    }],
    ['imklog rfc3164 over TCP, LF framing', async (sc) => {
      await sendTcp(portOf(service, 'tcp'), readFileSync(fixture('syslog', `${sc}.rsyslog-rfc3164imklog-tcp-lf.bin`)));
      return messages(`${sc}.rsyslog-rfc3164imklog-tcp-lf.bin`);
    }],
    ['rfc5424 over UDP', async (sc) => {
      const msgs = messages(`${sc}.rsyslog-rfc5424-udp.bin`);
      await sendUdp(portOf(service, 'udp'), msgs);
      return msgs;
    }],
    ['rfc3164 over UDP', async (sc) => {
      const msgs = messages(`${sc}.rsyslog-rfc3164-udp.bin`);
      await sendUdp(portOf(service, 'udp'), msgs);
      return msgs;
    }],
  ];
  for (const [name, send] of cases) {
    for (const scenario of SCENARIOS) {
      await client.flushdb();
      const msgs = await send(scenario);
      const expected = expectedByStream(msgs);
      const total = [...expected.values()].reduce((n, rs) => n + rs.length, 0);
      t.ok(total > 0, `${name} ${scenario}: the capture holds LOG lines`);
      await waitFor(`${name} ${scenario}`, async () => (await storedCount(client)) >= total);
      sameRecords(t, await storedRecords(client), expected, `${name} ${scenario}`);
    }
  }
});

t.test('the 50,000-line burst over one TCP connection: every record, in order', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const service = await serve(t, redis.url, tempDir(t, 'svc'));
  const msgs = burstMessages();
  await sendTcp(portOf(service, 'tcp'), Buffer.from(msgs.join('\n') + '\n'));
  const expected = expectedByStream(msgs);
  await waitFor('the burst', async () => (await storedCount(client)) >= msgs.length);
  sameRecords(t, await storedRecords(client), expected, 'burst');
  const metrics = await (await fetch(`http://127.0.0.1:${service.httpAddress().port}/metrics`)).text();
  t.match(metrics, /dockflow_records_parsed_total 50000/);
  t.match(metrics, /dockflow_receive_messages_total\{transport="tcp"\} 50000/);
});

t.test('Redis killed mid-stream and restarted: TCP waits, UDP is spooled, nothing accepted is lost', async (t) => {
  const redis: TestRedis = await startRedis({ persistent: true });
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url, { maxRetriesPerRequest: null });
  t.teardown(() => client.disconnect());
  const spoolDir = tempDir(t, 'svc');
  const service = await serve(t, redis.url, spoolDir, { store: { maxQueueRecords: 2000 } });

  const tcpMsgs = burstMessages().slice(0, 20_000);
  const half = Buffer.from(tcpMsgs.slice(0, 10_000).join('\n') + '\n');
  const rest = Buffer.from(tcpMsgs.slice(10_000).join('\n') + '\n');
  const udpMsgs = messages('tcp-egress-smtp.rsyslog-rfc5424-udp.bin');
  const udpRounds = 40;

  const tcp = net.connect(portOf(service, 'tcp'), '127.0.0.1');
  await once(tcp, 'connect');
  tcp.write(half);
  await waitFor('the first half', async () => (await storedCount(client)) >= 5000);
  await redis.kill();
  // While Redis is gone: the rest of the TCP stream (the sender is paused once the queue is full) and UDP traffic
  // well beyond the queue's bound.
  const tcpDone = new Promise<void>((resolve) => tcp.end(rest, () => resolve()));
  for (let i = 0; i < udpRounds; i++) await sendUdp(portOf(service, 'udp'), udpMsgs);
  await redis.restart();
  await tcpDone;

  const udpRecords = expectedByStream(udpMsgs);
  const udpPerRound = [...udpRecords.values()].reduce((n, rs) => n + rs.length, 0);
  const want = tcpMsgs.length + udpPerRound * udpRounds;
  await waitFor('everything after the outage', async () => (await storedCount(client)) >= want, 120_000);
  const stored = await storedRecords(client);
  const all = [...stored.values()].flat();
  t.equal(all.length, want, 'every TCP record and every UDP datagram the spool took is stored, once');
  const tcpStored = new Map([...stored].map(([k, rs]) => [k, rs.filter((r) => r.log?.format === 'rfc3164')]));
  sameRecords(t, new Map([...tcpStored].filter(([, rs]) => rs.length > 0)), expectedByStream(tcpMsgs), 'TCP across the outage');
  const metrics = await (await fetch(`http://127.0.0.1:${service.httpAddress().port}/metrics`)).text();
  t.match(metrics, /dockflow_store_records_spooled_total [1-9]\d*/, 'UDP went through the spool');
  t.notMatch(metrics, /dockflow_store_records_dropped_total\{reason="[^"]+"\} [1-9]/, 'no drops');
});

/**
 * Real captured lines with bytes a text decoding would change: NUL and invalid UTF-8 in the prefix, and at the end of
 * the line. Each is still one netfilter message.
 */
function mutatedLines(): Buffer[] {
  const out: Buffer[] = [];
  const lines = messages('tcp-egress-smtp.rsyslog-rfc3164-tcp-lf.bin').concat(messages('udp-dns-egress.rsyslog-rfc5424-tcp-lf.bin'));
  const inserts = [Buffer.from([0x00]), Buffer.from([0xff, 0xfe]), Buffer.from([0xc3]), Buffer.from([0xed, 0xa0, 0x80, 0x00]), Buffer.from([0xf4, 0x90, 0x80, 0x80])];
  for (const [i, line] of lines.slice(0, 20).entries()) {
    const b = Buffer.from(line);
    const insert = inserts[i % inserts.length]!;
    const at = b.indexOf('IN=') - 3;
    out.push(i % 2 === 0 ? Buffer.concat([b.subarray(0, at), insert, b.subarray(at)]) : Buffer.concat([b, Buffer.from(' '), insert]));
  }
  return out;
}

t.test('messages with NUL and invalid UTF-8 are stored byte-exact and parsed as one message, over TCP LF, octet-counted and UDP', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url, { maxRetriesPerRequest: null });
  t.teardown(() => client.disconnect());
  const service = await serve(t, redis.url, tempDir(t, 'svc'));
  const lines = mutatedLines();
  t.ok(lines.every((l) => l.includes(0) || l.toString('utf8').includes('\ufffd')), 'every line holds a NUL or invalid UTF-8');
  await sendTcp(portOf(service, 'tcp'), Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
  await sendTcp(portOf(service, 'tcp'), Buffer.concat(lines.flatMap((l) => [Buffer.from(`${l.length} `), l])));
  const udp = dgram.createSocket('udp4');
  for (const l of lines) await new Promise<void>((resolve, reject) => udp.send(l, portOf(service, 'udp'), '127.0.0.1', (err) => (err ? reject(err) : resolve())));
  udp.close();
  const want = lines.length * 3;
  await waitFor('every message', async () => (await storedCount(client)) >= want);
  const stored: string[] = [];
  const hosts = new Set<string>();
  for (const key of await streamKeys(client)) {
    for (const [, fields] of await client.xrangeBuffer(key, '-', '+')) {
      const names = fields.filter((_, i) => i % 2 === 0).map((f) => f.toString());
      // The message as received is kept (`o`, keepOriginal on in serve()).
      stored.push(fields[names.indexOf('o') * 2 + 1]!.toString('hex'));
      hosts.add(decodeFlat(fields.map((f) => f.toString()), { containers: new Map(), asNames: new Map() })!.host?.name ?? '');
    }
  }
  t.equal(stored.length, want, 'one record per message: none split at a NUL');
  const expected = lines.map((l) => l.toString('hex'));
  t.same(stored.sort(), [...expected, ...expected, ...expected].sort(), 'the stored message bytes are the bytes sent');
  t.same([...hosts], ['vm'], 'every record has the host of its own header');
});

t.test('junk, oversize frames and half-open connections leave the service healthy', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const service = await serve(t, redis.url, tempDir(t, 'svc'), { syslog: { maxMessageBytes: 4096, idleTimeoutMs: 300 } });
  const tcpPort = portOf(service, 'tcp');
  const good = messages('tcp-egress-smtp.rsyslog-rfc3164-tcp-lf.bin');

  // A connection that sends half a frame and goes silent.
  const halfOpen = net.connect(tcpPort, '127.0.0.1');
  await once(halfOpen, 'connect');
  halfOpen.write('<4>Nov 27 06:43:29 vm kernel: dockflow: IN=docker0 OUT=eth0 SRC=172.17.0.2 DST=19');
  const closedByServer = once(halfOpen, 'close');

  await sendTcp(tcpPort, Buffer.from(`${'x'.repeat(100_000)}\n\u0000\u00ff garbage \n<999>not syslog\n${good.join('\n')}\n`, 'latin1'));
  await sendTcp(tcpPort, Buffer.from(`99999999999 <4>oops\n`));
  await sendUdp(portOf(service, 'udp'), ['', 'junk', 'x'.repeat(60_000), good[0]!]);
  await closedByServer;

  await waitFor('the good lines', async () => (await storedCount(client)) >= good.length + 1);
  const health = await fetch(`http://127.0.0.1:${service.httpAddress().port}/healthz`);
  t.equal(health.status, 200, 'healthy');
  const metrics = await (await fetch(`http://127.0.0.1:${service.httpAddress().port}/metrics`)).text();
  t.match(metrics, /dockflow_receive_dropped_total\{transport="tcp",reason="oversize"\} 1/);
  t.match(metrics, /dockflow_receive_dropped_total\{transport="tcp",reason="bad-octet-count"\} 1/);
  t.match(metrics, /dockflow_receive_dropped_total\{transport="udp",reason="oversize"\} 1/);
  t.match(metrics, /dockflow_receive_tcp_idle_timeouts_total 1/);
  t.match(metrics, /dockflow_lines_skipped_total\{reason="not-netfilter"\} [1-9]/);
  t.equal(await storedCount(client), good.length + 1, 'junk stored nothing');
});

t.test('SIGTERM mid-burst: what was accepted is in Redis or in the spool, and the next start replays the spool', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const spoolDir = tempDir(t, 'svc');
  const [syslogPort, httpPort] = [await freePort(), await freePort()];
  const service = serveProcess(t, {
    REDIS_URL: redis.url,
    SYSLOG_HOST: '127.0.0.1',
    SYSLOG_TCP_PORT: String(syslogPort),
    SYSLOG_UDP: 'false',
    HTTP_PORT: String(httpPort),
    DOCKFLOW_SPOOL_DIR: spoolDir,
    DOCKFLOW_DOCKER: 'false',
  });
  await service.logged('dockflow serving');

  const msgs = [...burstMessages(), ...burstMessages(), ...burstMessages()];
  const socket = net.connect(syslogPort, '127.0.0.1');
  await once(socket, 'connect');
  socket.on('error', () => {});
  const payload = Buffer.from(msgs.join('\n') + '\n');
  let off = 0;
  const pump = (): void => {
    while (off < payload.length && !socket.destroyed) {
      const ok = socket.write(payload.subarray(off, (off += 16 * 1024)));
      if (!ok) return void socket.once('drain', () => setImmediate(pump));
    }
  };
  pump();
  await waitFor('part of the burst stored', async () => (await storedCount(client)) >= 20_000);
  service.child.kill('SIGTERM');
  const [code] = await service.exited;
  socket.destroy();
  t.equal(code, 0, `clean exit within the deadline\n${service.log().slice(-2000)}`);

  const stopped = service.log().split('\n').filter((l) => l.includes('"msg":"stopped"')).map((l) => JSON.parse(l) as { accepted: number; stored: number; spooled: number });
  t.equal(stopped.length, 1, 'the final report was logged');
  const { accepted, spooled } = stopped[0]!;
  t.ok(accepted >= 20_000 && accepted <= msgs.length, `accepted ${accepted} records before stopping`);
  const inSpool = readdirSync(spoolDir).length;
  t.comment(`accepted ${accepted}, stored ${await storedCount(client)}, spooled ${spooled} (${inSpool} spool files)`);

  // A new service on the same spool replays what the first could not write.
  await serve(t, redis.url, spoolDir);
  await waitFor('the spool replayed', async () => (await storedCount(client)) >= accepted, 60_000);
  const expected = expectedByStream(msgs.slice(0, accepted));
  sameRecords(t, await storedRecords(client), expected, 'accepted prefix of the burst');
});
