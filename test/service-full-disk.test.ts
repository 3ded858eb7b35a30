/**
 * A full disk under UDP load with Redis down: the service's spool and UDP backlog share a small tmpfs, which fills.
 * Every datagram sent is then stored or counted as dropped, by reason, exactly; nothing on disk goes out of frame;
 * the error log stays short.
 */
import dgram from 'node:dgram';
import { Writable } from 'node:stream';
import t from 'tap';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { loadConfig } from '../src/config/index.js';
import { createLineOptions, parseLine } from '../src/parse/line.js';
import { startService } from '../src/service.js';
import { messages, SCENARIOS } from './fixtures/syslog/corpus.js';
import { startRedis } from './helpers/redis.js';
import { storedCount } from './helpers/streams.js';
import { smallTmpfs, tmpfsUnavailable } from './helpers/tmpfs.js';

/** Sum of a metric's samples whose labels match `labels` (a regular expression over the label text). */
function metric(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name || !new RegExp(labels).test(m[2] ?? '')) continue;
    sum += Number(m[3]);
  }
  return sum;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const CASES = [
  { name: 'the UDP backlog and the spool on the disk', udpBacklogDiskBytes: 1024 ** 3 },
  { name: 'the spool alone on the disk (no UDP backlog on disk)', udpBacklogDiskBytes: 0 },
];

for (const c of CASES) t.test(`a full disk with Redis down, ${c.name}: stored + counted drops = sent, exactly`, { skip: tmpfsUnavailable() }, async (t) => {
  const disk = smallTmpfs(t, 5 * 1024 * 1024);
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url, { maxRetriesPerRequest: null });
  client.on('error', () => undefined);
  t.teardown(() => client.disconnect());

  // Error log lines, counted.
  const errors: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line.includes('"level":50')) errors.push(line);
      done();
    },
  });
  const config = loadConfig({
    file: {
      syslog: { host: '127.0.0.1', udpPort: 0, tcpEnabled: false, udpBacklogMemoryBytes: 512 * 1024, udpBacklogDiskBytes: c.udpBacklogDiskBytes },
      http: { port: 0 },
      redis: { url: redis.url },
      store: { spoolDir: disk, flushIntervalMs: 5, maxQueueRecords: 500 },
      docker: { enabled: false },
      geo: { enabled: false },
    },
  });
  const service = await startService(config, { logger: pino({ level: 'error' }, sink) });
  let closed = false;
  t.teardown(async () => {
    if (!closed) await service.close();
  });
  const port = service.syslogAddresses().find((a) => a.transport === 'udp')!.port;
  const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${service.httpAddress().port}/metrics`)).text();

  // Datagrams that each make a record, from the real captures.
  const opts = createLineOptions({});
  const corpus = SCENARIOS.flatMap((s) => [...messages(`${s}.rsyslog-rfc5424-udp.bin`), ...messages(`${s}.rsyslog-rfc3164-udp.bin`)]).filter(
    (m) => typeof parseLine(m, opts) !== 'string',
  );
  t.ok(corpus.length > 20, `${corpus.length} distinct datagrams`);

  await redis.kill();
  const socket = dgram.createSocket('udp4');
  const sent = 60_000;
  let sentBytes = 0;
  for (let i = 0; i < sent; i++) {
    const datagram = Buffer.from(corpus[i % corpus.length]!);
    sentBytes += datagram.length;
    await new Promise<void>((resolve, reject) => socket.send(datagram, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
    if (i % 500 === 499) await new Promise((r) => setTimeout(r, 5));
  }
  socket.close();

  // Everything sent has been read, or dropped by the kernel, and counted.
  const received = async (): Promise<{ handed: number; dropped: number; kernel: number; text: string }> => {
    const text = await scrape();
    return {
      handed: metric(text, 'dockflow_receive_messages_total', 'transport="udp"'),
      dropped: metric(text, 'dockflow_receive_dropped_total', 'transport="udp"'),
      kernel: metric(text, 'dockflow_receive_udp_kernel_drops'),
      text,
    };
  };
  // The receive thread's backlog holds what it read and did not yet hand on: wait until the ingest thread has it all
  // (it pauses while the writer spools, and resumes once Redis is back).
  await redis.restart();
  await waitFor('Redis to take the queue, the spool and the backlog', async () => {
    const r = await received();
    return (
      r.handed + r.dropped + r.kernel === sent &&
      metric(r.text, 'dockflow_receive_udp_backlog_bytes') === 0 &&
      metric(r.text, 'dockflow_store_spool_bytes') === 0 &&
      metric(r.text, 'dockflow_store_queue_records') === 0 &&
      metric(r.text, 'dockflow_store_records_stored_total') + metric(r.text, 'dockflow_store_records_dropped_total') + metric(r.text, 'dockflow_lines_skipped_total') >= r.handed
    );
  });
  const r = await received();
  const stored = await storedCount(client);
  const byReason = (name: string): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const m of r.text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))) if (Number(m[2]) > 0) out[m[1]!] = Number(m[2]);
    return out;
  };
  const receiveDrops = byReason('dockflow_receive_dropped_total');
  const storeDrops = byReason('dockflow_store_records_dropped_total');
  const skipped = metric(r.text, 'dockflow_lines_skipped_total');
  const storeDropped = metric(r.text, 'dockflow_store_records_dropped_total');
  t.comment(JSON.stringify({ sent, stored, kernel: r.kernel, receiveDrops, storeDrops, skipped, errorLogLines: errors.length }));
  t.ok(storeDropped + r.dropped > 0, 'the disk filled: something was dropped, and counted');
  t.equal(skipped, 0, 'every datagram parses');
  t.equal(stored + storeDropped + skipped + r.dropped + r.kernel, sent, 'stored + counted drops = sent');
  t.equal(metric(r.text, 'dockflow_receive_dropped_total', 'reason="backlog-torn"'), 0, 'no backlog chunk torn: the segments stayed in frame');
  t.equal(metric(r.text, 'dockflow_store_records_dropped_total', 'reason="spool-torn"'), 0, 'no spool record torn');
  t.ok(metric(r.text, 'dockflow_receive_bytes_total', 'transport="udp"') <= sentBytes, 'bytes received no more than sent');
  t.ok(errors.length < 60, `the error log stays short (${errors.length} lines)`);
  closed = true;
  await service.close();
});
