import { readdirSync, writeFileSync, writevSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import t, { type Test } from 'tap';
import type { FlowRecord } from '../../src/record.js';
import { connectRedis } from '../../src/store/connect.js';
import { encodeContext, encodeRecord } from '../../src/store/encode.js';
import { storeKeys } from '../../src/store/keys.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/store/redis-server.js';
import { StreamWriter, type Origin, type StreamWriterDeps, type StreamWriterOptions } from '../../src/store/stream-writer.js';
import type { StreamIndexer } from '../../src/store/types.js';
import { startRedis } from '../helpers/redis.js';
import { makeRecords, messageOf, partitionStreams, readStreams, seqOf, silent, T0, until } from './records.js';
import { ENTRY_FIELDS, entryValues, ORIGINAL_FIELD } from '../../src/store/encode.js';
import { bucketOf, partitionName } from '../../src/store/keys.js';
import { tempDir } from '../helpers/temp.js';
import { smallTmpfs, tmpfsUnavailable } from '../helpers/tmpfs.js';

let n = 0;

function makeWriter(client: Redis, spoolDir: string, prefix: string, opts: Partial<StreamWriterOptions> = {}, deps: Partial<StreamWriterDeps> = {}): StreamWriter {
  return new StreamWriter(
    client,
    { batchMaxRecords: 100, flushIntervalMs: 5, maxQueueRecords: 1000, ...opts, keyPrefix: prefix, spoolDir },
    { logger: silent, registry: new Registry(), ...deps },
  );
}

/** Runs `action` right after the pipeline carrying the `nth` record is sent: a failure while batches are in flight. */
function onDispatch(nth: number, action: () => void): StreamIndexer {
  let added = 0;
  return {
    facts: () => undefined,
    build(entries) {
      const before = added;
      added += entries.length;
      if (before < nth && added >= nth) setImmediate(action);
      return undefined;
    },
  };
}

async function failures(registry: Registry): Promise<number> {
  const m = await registry.getSingleMetric('dockflow_store_batch_failures_total')?.get();
  return m?.values[0]?.value ?? 0;
}

/** Pushes like a receiver: TCP/file wait for drain when told to, UDP never waits; yields to I/O every 100 records. */
/** Pushes as the service does: each record with the message it was parsed from (stored as message and context). */
async function pushAll(w: StreamWriter, records: FlowRecord[], origin: Origin, onEach?: (i: number) => void | Promise<void>): Promise<void> {
  let waiter: (() => void) | undefined;
  w.onDrain(() => waiter?.());
  for (let i = 0; i < records.length; i++) {
    await onEach?.(i);
    const more = w.push(records[i]!, origin, messageOf(records[i]!));
    if (!more && origin !== 'udp') await new Promise<void>((r) => (waiter = r));
    if (i % 100 === 99) await yieldLoop();
  }
}

/** Each record exactly once, and within each stream in push order. */
function checkExactlyOnceInOrder(t: Test, entries: Awaited<ReturnType<typeof readStreams>>, count: number, from = 0): void {
  const seqs = entries.map((e) => seqOf(e.record));
  t.equal(seqs.length, count, 'as many entries as records');
  t.equal(new Set(seqs).size, count, 'no duplicates');
  t.ok(
    seqs.every((s) => s >= from && s < from + count),
    'only these records',
  );
  const outOfOrder = entries.filter((e, i) => i > 0 && entries[i - 1]!.stream === e.stream && seqOf(entries[i - 1]!.record) > seqOf(e.record));
  t.equal(outOfOrder.length, 0, 'order kept within each stream');
}

/** SIGKILL, then waits until the process is gone. */
async function killEmbedded(server: EmbeddedRedis): Promise<void> {
  process.kill(server.pid, 'SIGKILL');
  await until(() => {
    try {
      process.kill(server.pid, 0);
      return false;
    } catch {
      return true;
    }
  }, 'redis-server gone');
}

/** The test helper's redis-server (no persistence: a kill loses what it held), a client and a fresh key prefix. */
async function helperRedis(t: Test) {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = connectRedis(redis.url, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  return { redis, client, prefix: `o${n++}` };
}

/**
 * The embedded redis-server (what the service runs) with `appendfsync always`, a client on it and a fresh key
 * prefix; `kill()` is SIGKILL, `restart()` starts it again on the same port and data. Under `everysec`, Redis itself
 * may acknowledge writes it has not yet written to the AOF (flushAppendOnlyFile defers the write by up to 2 s while
 * a slow fsync runs, the likeliest cause of a CI run on a busy disk that came up short), and a kill then loses them
 * whatever the writer does; these tests are about the writer.
 */
async function aofRedis(t: Test) {
  const dataDir = tempDir(t, 'aof');
  const start = (port?: number): Promise<EmbeddedRedis> => startEmbeddedRedis({ dataDir, port, appendFsync: 'always', logger: silent });
  let server = await start();
  t.teardown(() => server.stop());
  const client = connectRedis(server.url, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  return {
    client,
    prefix: `o${n++}`,
    kill: () => killEmbedded(server),
    restart: async (): Promise<void> => {
      server = await start(server.port);
    },
  };
}

// The helper's server runs without persistence: what Redis acknowledged before a kill is gone after it. Exactly-once
// across a kill *in the middle of writing* is therefore checked against the embedded server with its AOF on.
t.test('Redis killed mid-stream (AOF): every TCP record lands exactly once, in order', async (t) => {
  const { client, prefix, ...aof } = await aofRedis(t);
  const registry = new Registry();
  let restarted: Promise<void> | undefined;
  const killer = onDispatch(6000, () => {
    restarted = aof
      .kill()
      .then(() => new Promise((r) => setTimeout(r, 300)))
      .then(() => aof.restart());
  });
  const w = makeWriter(client, tempDir(t, 'spool'), prefix, {}, { registry, indexer: killer });
  await w.start();
  const records = makeRecords(20_000);
  await pushAll(w, records, 'tcp');
  await until(() => restarted !== undefined, 'killed');
  await restarted;
  await until(() => w.stats().stored === records.length, 'all stored', 30_000);
  t.ok((await failures(registry)) > 0, 'batches in flight failed and were retried');
  checkExactlyOnceInOrder(t, await readStreams(client, storeKeys(prefix)), records.length);
  const s = w.stats();
  t.equal(s.pushed.tcp, s.stored);
  t.equal(s.spooled, 0, 'TCP never spools while running');
  await w.close(1000);
});

t.test('Redis killed mid-stream (AOF): UDP overflows to the spool and is replayed in order', async (t) => {
  const { client, prefix, ...aof } = await aofRedis(t);
  const spoolDir = tempDir(t, 'spool');
  const w = makeWriter(client, spoolDir, prefix, { spoolSegmentBytes: 64 * 1024 });
  await w.start();
  const records = makeRecords(20_000);
  let restarted: Promise<void> | undefined;
  await pushAll(w, records, 'udp', async (i) => {
    if (i === 3000) await aof.kill();
    // Restarted while UDP keeps coming: new records must queue behind the spool, not overtake it.
    if (i === 12_000) restarted = aof.restart();
  });
  await restarted;
  await until(() => w.stats().stored === records.length, 'all stored', 30_000);
  const s = w.stats();
  t.ok(s.spooled > 5000, `overflow went to the spool (${s.spooled})`);
  t.equal(s.replayed, s.spooled, 'all of it replayed');
  t.equal(s.pushed.udp, s.stored, 'nothing dropped');
  checkExactlyOnceInOrder(t, await readStreams(client, storeKeys(prefix)), records.length);
  await until(() => readdirSync(spoolDir).length === 0, 'replayed segments deleted');
  t.equal(w.stats().spoolBytes, 0);
  await w.close(1000);
});

t.test('Redis stopped mid-stream (SIGSTOP): the writer drops the silent connection, and once Redis runs again every record lands exactly once, in order', async (t) => {
  const { redis, client, prefix } = await helperRedis(t);
  const registry = new Registry();
  let resumed: Promise<void> | undefined;
  const stopper = onDispatch(6000, () => {
    redis.pause();
    resumed = new Promise((r) => setTimeout(r, 4000)).then(() => redis.resume());
  });
  const w = makeWriter(client, tempDir(t, 'spool'), prefix, { replyTimeoutMs: 400 }, { registry, indexer: stopper });
  await w.start();
  const records = makeRecords(20_000);
  const pushed = pushAll(w, records, 'tcp');
  await until(() => resumed !== undefined, 'stopped');
  // The batches waiting on the silent server fail (uncertain) while it is stopped, not when it continues.
  await until(async () => (await failures(registry)) > 0, 'batches failed while Redis was stopped', 3000);
  t.pass('batches failed (uncertain) while Redis was stopped');
  await resumed;
  await pushed;
  await until(() => w.stats().stored === records.length, 'all stored', 30_000);
  // Batches the server read before it stopped run when it continues, after the writer gave up on them: the lookup
  // on reconnection finds them, so they are not written twice.
  checkExactlyOnceInOrder(t, await readStreams(client, storeKeys(prefix)), records.length);
  await w.close(1000);
});

t.test('Redis killed (helper kill/restart): TCP waits for drain, then everything lands in order', async (t) => {
  const { redis, client, prefix } = await helperRedis(t);
  const w = makeWriter(client, tempDir(t, 'spool'), prefix, { maxQueueRecords: 500 });
  await w.start();
  await redis.kill();
  await until(() => !w.stats().redisUp, 'writer sees Redis down');
  let pushed = 0;
  const pushing = pushAll(w, makeRecords(3000), 'tcp', (i) => void (pushed = i));
  // Waits for the bound rather than a fixed time: a loaded machine may not reach it in any given time.
  await until(() => w.stats().queued >= 500, 'the queue filled while Redis is down');
  const pausedAt = pushed;
  await new Promise((r) => setTimeout(r, 200));
  t.equal(pushed, pausedAt, 'pushing stays paused while Redis is down');
  t.ok(pausedAt >= 499 && pausedAt < 600, `pushing paused at the queue bound while down (${pausedAt})`);
  await redis.restart();
  await pushing;
  await until(() => w.stats().stored === 3000, 'all stored');
  checkExactlyOnceInOrder(t, await readStreams(client, storeKeys(prefix)), 3000);
  await w.close(1000);
});

t.test('spool full: UDP beyond queue and spool is dropped and counted; the counts add up', async (t) => {
  const { redis, client, prefix } = await helperRedis(t);
  const records = makeRecords(1000);
  // Room in the spool for exactly the 200 records after the first 100 (which fill the queue).
  // They go there as staged: the partition, the direction and the entry's values; each a frame with its 4-byte length.
  const line = (r: FlowRecord): string =>
    JSON.stringify({ v: 2, p: partitionName(bucketOf(T0), 'w1'), d: r.network.direction, e: entryValues(r, Date.parse(r['@timestamp'])) });
  const spoolMaxBytes = records.slice(100, 300).reduce((sum, r) => sum + 4 + Buffer.byteLength(line(r)), 0);
  const w = makeWriter(client, tempDir(t, 'spool'), prefix, { maxQueueRecords: 100, spoolMaxBytes });
  await w.start();
  await redis.kill();
  await until(() => !w.stats().redisUp, 'down');
  await pushAll(w, records, 'udp');
  const down = w.stats();
  t.equal(down.queued, 100);
  t.equal(down.spooled, 200, 'spool took what fit');
  t.equal(down.dropped['spool-full'], 700);
  await redis.restart();
  await until(() => w.stats().stored === 300, 'queue and spool stored');
  const s = w.stats();
  t.equal(s.pushed.udp, s.stored + s.dropped['spool-full'], 'pushed = stored + dropped');
  const entries = await readStreams(client, storeKeys(prefix));
  t.same(
    entries.map((e) => seqOf(e.record)).sort((a, b) => a - b),
    Array.from({ length: 300 }, (_, i) => i),
    'the first 300 stored, the rest dropped',
  );
  await w.close(1000);
});

t.test('spool on a full disk (tmpfs): records the disk refuses are counted spool-write-failed; the counts add up', { skip: tmpfsUnavailable() }, async (t) => {
  const { redis, client, prefix } = await helperRedis(t);
  const spoolDir = smallTmpfs(t, 512 * 1024);
  const records = makeRecords(8000);
  const w = makeWriter(client, spoolDir, prefix, { maxQueueRecords: 100, spoolSegmentBytes: 64 * 1024 });
  await w.start();
  await redis.kill();
  await until(() => !w.stats().redisUp, 'down');
  await pushAll(w, records, 'udp');
  // The spool writes every 100 ms or 64 KiB: let its last write happen while Redis is still down.
  await new Promise((r) => setTimeout(r, 300));
  const down = w.stats();
  t.ok(down.dropped['spool-write-failed'] > 0, `the disk filled: ${down.dropped['spool-write-failed']} records refused`);
  await redis.restart();
  await until(() => w.stats().queued === 0 && w.stats().spoolBytes === 0 && w.stats().inFlight === 0, 'queue and spool stored', 60_000);
  const s = w.stats();
  t.comment(JSON.stringify({ pushed: s.pushed.udp, stored: s.stored, dropped: s.dropped, spooled: s.spooled, replayed: s.replayed }));
  t.equal(s.dropped['spool-torn'], 0, 'the spool stayed in frame');
  t.equal(s.pushed.udp, s.stored + s.dropped['spool-full'] + s.dropped['spool-write-failed'], 'pushed = stored + dropped, exactly');
  t.equal((await readStreams(client, storeKeys(prefix))).length, s.stored);
  await w.close(1000);
});

t.test('a short or failed spool write (injected) keeps the spool in frame; what it lost is counted', async (t) => {
  const { redis, client, prefix } = await helperRedis(t);
  const spoolDir = tempDir(t, 'spool');
  // Every third write call is short; from the 20th on the disk is full until `room` is set.
  let calls = 0;
  let full = false;
  const spoolWritev: StreamWriterDeps['spoolWritev'] = (fd, buffers, position) => {
    calls++;
    if (full) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    const first = buffers[0] as Buffer;
    return calls % 3 === 0 ? writevSync(fd, [first.subarray(0, Math.ceil(first.length / 2))], position) : writevSync(fd, buffers, position);
  };
  const records = makeRecords(3000);
  const w = makeWriter(client, spoolDir, prefix, { maxQueueRecords: 100 }, { spoolWritev });
  await w.start();
  await redis.kill();
  await until(() => !w.stats().redisUp, 'down');
  await pushAll(w, records.slice(0, 1500), 'udp');
  await new Promise((r) => setTimeout(r, 200));
  full = true;
  await pushAll(w, records.slice(1500), 'udp');
  await new Promise((r) => setTimeout(r, 200));
  full = false;
  const lost = w.stats().dropped['spool-write-failed'];
  t.ok(lost > 0, `${lost} records refused by the full disk`);
  await redis.restart();
  await until(() => w.stats().queued === 0 && w.stats().spoolBytes === 0 && w.stats().inFlight === 0, 'queue and spool stored', 60_000);
  const s = w.stats();
  t.equal(s.dropped['spool-torn'], 0, 'in frame');
  t.equal(s.pushed.udp, s.stored + s.dropped['spool-write-failed'], 'pushed = stored + dropped');
  const seqs = (await readStreams(client, storeKeys(prefix))).map((e) => seqOf(e.record)).sort((a, b) => a - b);
  t.same(seqs.slice(0, 1400), Array.from({ length: 1400 }, (_, i) => i), 'everything before the disk filled is stored');
  await w.close(1000);
});

t.test('messages with invalid UTF-8 and NUL go through the spool and into Redis as their exact bytes', async (t) => {
  const { redis, client, prefix } = await helperRedis(t);
  const records = makeRecords(400);
  const raws = records.map((r, i) => Buffer.concat([Buffer.from(messageOf(r)), Buffer.from([0x20, 0xff, 0x00, 0xc3, 0x28 + (i % 2)])]));
  const w = makeWriter(client, tempDir(t, 'spool'), prefix, { maxQueueRecords: 100, keepOriginal: true });
  await w.start();
  await redis.kill();
  await until(() => !w.stats().redisUp, 'down');
  for (const [i, r] of records.entries()) w.push(r, 'udp', raws[i]!.toString('utf8'), raws[i]);
  t.equal(w.stats().spooled, 300, 'beyond the queue: spooled');
  await redis.restart();
  await until(() => w.stats().stored === 400, 'stored');
  const stored: string[] = [];
  // Kept as received (`o`): the entry's last field.
  for (const stream of await partitionStreams(client, storeKeys(prefix))) {
    for (const [, fields] of await client.xrangeBuffer(stream, '-', '+')) {
      const names = fields.filter((_, i) => i % 2 === 0).map((f) => f.toString());
      stored.push(fields[names.indexOf(ORIGINAL_FIELD) * 2 + 1]!.toString('hex'));
    }
  }
  t.same(stored.sort(), raws.map((b) => b.toString('hex')).sort(), 'every message as its bytes, queued or spooled');
  await w.close(1000);
});

t.test('close() with Redis down writes the rest to the spool; the next writer replays it', async (t) => {
  const { client, prefix, ...aof } = await aofRedis(t);
  const spoolDir = tempDir(t, 'spool');
  const registry = new Registry();
  // Killed while batches are in flight: some were stored, some not, some unknown.
  let killed: Promise<void> | undefined;
  const killer = onDispatch(2500, () => (killed = aof.kill()));
  // A queue that holds every record: this test is about close(), and a TCP push must not wait for a drain that a
  // dead Redis never brings.
  const first = makeWriter(client, spoolDir, prefix, { maxQueueRecords: 10_000 }, { registry, indexer: killer });
  await first.start();
  const records = makeRecords(6000);
  await pushAll(first, records.slice(0, 4000), 'tcp');
  await killed;
  await pushAll(first, records.slice(4000), 'udp');
  await first.close(300);
  const s1 = first.stats();
  t.ok((await failures(registry)) > 0, 'batches in flight failed');
  t.ok(s1.spooled > 0, `left in the spool at close (${s1.spooled})`);
  t.ok(readdirSync(spoolDir).length > 0, 'spool on disk');

  await aof.restart();
  await until(() => client.status === 'ready', 'ready again');
  const second = makeWriter(client, spoolDir, prefix);
  await second.start();
  await until(async () => (await readStreams(client, storeKeys(prefix))).length >= 6000 && second.stats().queued === 0, 'replayed', 30_000);
  checkExactlyOnceInOrder(t, await readStreams(client, storeKeys(prefix)), 6000);
  const s2 = second.stats();
  t.equal(s1.stored + s2.stored, 6000, 'stored by one run or the other, once');
  await until(() => readdirSync(spoolDir).length === 0, 'spool emptied');
  await second.close(1000);
});

t.test('what close() spools is the entry as it would have been stored: messages with any characters come back the same', async (t) => {
  const { redis, client, prefix } = await helperRedis(t);
  const spoolDir = tempDir(t, 'spool');
  const first = makeWriter(client, spoolDir, prefix, { keepOriginal: true });
  await first.start();
  await redis.kill();
  await until(() => !first.stats().redisUp, 'down');
  const records = makeRecords(3);
  const messages = records.map((r, i) => messageOf(r).replace('IN=', ['préfixe€ ', '😀 \u0001', ''][i]! + 'IN='));
  records.forEach((r, i) => first.push(r, 'tcp', messages[i]));
  first.push(makeRecords(1, 3)[0]!, 'tcp'); // no message: the flat fields only
  await first.close(100);
  t.equal(first.stats().spooled, 4);
  await redis.restart();
  await until(() => client.status === 'ready', 'ready again');
  const second = makeWriter(client, spoolDir, prefix, { keepOriginal: true });
  await second.start();
  await until(() => second.stats().stored === 4, 'replayed');
  const stored: string[] = [];
  for (const stream of await partitionStreams(client, storeKeys(prefix))) {
    for (const [, fields] of await client.xrange(stream, '-', '+')) {
      const o = fields.indexOf('o');
      stored.push(o >= 0 ? (fields[o + 1] as string) : 'flat only');
    }
  }
  t.same(stored.sort(), [...messages, 'flat only'].sort());
  await second.close(1000);
});

t.test('a torn spool line left by a crash is counted, the rest replayed', async (t) => {
  const { client, prefix } = await helperRedis(t);
  const spoolDir = tempDir(t, 'spool');
  const records = makeRecords(4);
  const lines = records.map((r) => `{"r":${encodeRecord(r)}}`);
  writeFileSync(join(spoolDir, '0000001000000000.ndjson'), `${lines.slice(0, 3).join('\n')}\n${lines[3]!.slice(0, 50)}`);
  const w = makeWriter(client, spoolDir, prefix);
  await w.start();
  await until(() => w.stats().stored === 3, 'replayed');
  t.equal(w.stats().dropped['spool-torn'], 1);
  t.same(
    (await readStreams(client, storeKeys(prefix))).map((e) => seqOf(e.record)).sort(),
    [0, 1, 2],
  );
  await w.close(1000);
});

t.test('spool lines in both forms are replayed; a message and context that make no record are counted torn', async (t) => {
  const { client, prefix } = await helperRedis(t);
  const spoolDir = tempDir(t, 'spool');
  const records = makeRecords(4);
  const messageForm = (r: FlowRecord): string => `{"m":${JSON.stringify(messageOf(r))},"x":${encodeContext(r)}}`;
  const lines = [
    messageForm(records[0]!),
    `{"r":${encodeRecord(records[1]!)}}`,
    messageForm(records[2]!),
    `{"m":"<13>Jan  1 00:00:00 h app: not a LOG line","x":${encodeContext(records[3]!)}}`,
    `{"m":${JSON.stringify(messageOf(records[3]!))},"x":7}`,
  ];
  writeFileSync(join(spoolDir, '0000001000000000.ndjson'), `${lines.join('\n')}\n`);
  const w = makeWriter(client, spoolDir, prefix, { keepOriginal: true });
  await w.start();
  await until(() => w.stats().stored === 3, 'replayed');
  t.equal(w.stats().dropped['spool-torn'], 2);
  t.same((await readStreams(client, storeKeys(prefix))).map((e) => seqOf(e.record)).sort(), [0, 1, 2]);
  const forms: string[] = [];
  for (const stream of await partitionStreams(client, storeKeys(prefix))) {
    for (const [, fields] of await client.xrange(stream, '-', '+')) forms.push(fields.filter((_, i) => i % 2 === 0).join(','));
  }
  const flat = ENTRY_FIELDS.join(',');
  t.same(forms.sort(), [flat, `${flat},o`, `${flat},o`].sort(), 'a replayed message is stored with its message again (original kept)');
  await w.close(1000);
});

t.test('records a previous run sent without an answer are looked up, not sent twice', async (t) => {
  const { client, prefix } = await helperRedis(t);
  const keys = storeKeys(prefix);
  const [a, b, c] = makeRecords(3).map((r) => ({ ...r, network: { ...r.network, direction: 'egress' as const } })) as [FlowRecord, FlowRecord, FlowRecord];
  // The previous run's XADD of `a` reached Redis, that of `b` did not; neither was answered before it stopped.
  const part = partitionName(bucketOf(T0), 'w1');
  const values = (r: FlowRecord): string[] => entryValues(r, Date.parse(r['@timestamp']));
  await client.zadd(keys.partitions, bucketOf(T0), part);
  await client.xadd(keys.stream(part), `${T0}-0`, ...ENTRY_FIELDS.flatMap((f, i) => [f, values(a)[i]!]));
  const spoolDir = tempDir(t, 'spool');
  const line = (r: FlowRecord, id?: string): string => JSON.stringify({ v: 2, p: part, d: 'egress', e: values(r), x: r, id });
  const lines = [line(a, `${T0}-0`), line(b, `${T0}-1`), line(c)];
  writeFileSync(join(spoolDir, '0000001000000000.ndjson'), lines.join('\n') + '\n');
  const seen: string[] = [];
  const indexer: StreamIndexer<FlowRecord> = { facts: (r) => r, build: (entries) => void seen.push(...entries.map((e) => `${seqOf(e.facts)}@${e.id}`)) };
  const w = makeWriter(client, spoolDir, prefix, {}, { indexer });
  await w.start();
  await until(() => w.stats().stored === 3, 'stored');
  const entries = await readStreams(client, keys);
  t.same(
    entries.map((e) => seqOf(e.record)),
    [0, 1, 2],
    'a once (found), then b and c',
  );
  t.equal(entries[0]!.id, `${T0}-0`);
  t.notOk(seen.includes(`0@${T0}-0`), 'the found record is not indexed again: the script call that stored it indexed it');
  t.equal(seen.length, 2, 'b and c are indexed with their writes');
  t.equal(w.stats().replayed, 3);
  await w.close(1000);
});
