import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import t, { type Test } from 'tap';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import type { FlowRecord } from '../../src/record.js';
import { connectRedis } from '../../src/store/connect.js';
import { IndexOps } from '../../src/store/index-ops.js';
import { storeKeys } from '../../src/store/keys.js';
import { StreamWriter, type StreamWriterOptions } from '../../src/store/stream-writer.js';
import type { IndexEntry, StreamIndexer } from '../../src/store/types.js';
import { fixture } from '../helpers/paths.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { tempDir } from '../helpers/temp.js';
import { makeRecords, messageOf, partitionStreams, plain, projected, readStreams, seqOf, silent, T0, until } from './records.js';
import { ENTRY_FIELDS } from '../../src/store/encode.js';
import { bucketOf, bucketStartMs, partitionName } from '../../src/store/keys.js';

let redis: TestRedis;
let client: Redis;
let n = 0;

t.before(async () => {
  redis = await startRedis();
  client = connectRedis(redis.url, silent);
  await until(() => client.status === 'ready', 'redis ready');
});
t.teardown(async () => {
  client.disconnect();
  await redis.stop();
});

/** An indexer that counts each record, by its sequence number, in the sorted set `key`. */
function seqCounter(key: string, facts: (r: FlowRecord) => number = seqOf): StreamIndexer<number> {
  return {
    facts,
    build(entries) {
      const ops = new IndexOps();
      for (const e of entries) ops.incr(ops.key(key), String(e.facts));
      return ops;
    },
  };
}

/** A writer on its own key prefix and spool directory. */
function writer(t: Test, opts: Partial<StreamWriterOptions> = {}, deps: { indexer?: StreamIndexer; now?: () => number } = {}) {
  const prefix = opts.keyPrefix ?? `t${n++}`;
  const spoolDir = opts.spoolDir ?? tempDir(t, 'writer');
  const registry = new Registry();
  const w = new StreamWriter(client, { batchMaxRecords: 100, flushIntervalMs: 5, retentionMs: 0, ...opts, keyPrefix: prefix, spoolDir }, { logger: silent, registry, ...deps });
  return { w, keys: storeKeys(prefix), registry, spoolDir };
}

const idNum = (id: string): [number, number] => id.split('-').map(Number) as [number, number];
const increasing = (ids: string[]): boolean =>
  ids.every((id, i) => {
    if (i === 0) return true;
    const [a, b] = [idNum(ids[i - 1]!), idNum(id)];
    return b[0] > a[0] || (b[0] === a[0] && b[1] > a[1]);
  });

t.test('records land in batches, in partitions by packet time, decoding back to their stored fields and in order', async (t) => {
  const { w, keys, registry } = writer(t);
  await w.start();
  // Three 10-minute buckets.
  const records = [...makeRecords(1234), ...makeRecords(300, 600_000), ...makeRecords(300, 1_200_000)];
  for (const r of records) w.push(r, 'tcp');
  await until(() => w.stats().stored === records.length, 'all stored');
  const entries = await readStreams(client, keys);
  t.equal(entries.length, records.length);
  const parts = [...new Set(entries.map((e) => e.partition))];
  t.same(parts, [0, 1, 2].map((k) => partitionName(bucketOf(T0) + k, 'w1')), 'one partition per bucket, listed in the registry');
  for (const part of parts) {
    const list = entries.filter((e) => e.partition === part);
    t.same(list.map((e) => e.id), list.map((_, i) => `${bucketStartMs(bucketOf(T0)) + parts.indexOf(part) * 600_000}-${i}`), 'IDs are the bucket start and entry numbers from 0');
    const seqs = list.map((e) => seqOf(e.record));
    t.same(seqs, [...seqs].sort((a, b) => a - b), 'order kept within a partition');
  }
  const bySeq = new Map(entries.map((e) => [seqOf(e.record), e.record]));
  t.ok(records.every((r) => JSON.stringify(plain(bySeq.get(seqOf(r))!)) === JSON.stringify(projected(r))), 'every record decodes back to its stored fields');
  const s = w.stats();
  t.equal(s.pushed.tcp, records.length);
  t.equal(s.storedByDirection.egress + s.storedByDirection.ingress + s.storedByDirection['container-to-host'] + s.storedByDirection['host-to-container'], records.length);
  const metrics = await registry.metrics();
  t.match(metrics, /dockflow_store_records_stored_total\{direction="egress"\} \d+/);
  t.match(metrics, /dockflow_store_redis_up 1/);
  t.match(metrics, /dockflow_store_redis_write_seconds_count \d+/);
  await w.close(1000);
  t.equal(w.push(records[0]!, 'tcp'), false, 'closed');
  t.equal(w.stats().dropped.closed, 1);
});

t.test('a partial batch is written after flushIntervalMs', async (t) => {
  const { w, keys } = writer(t, { batchMaxRecords: 500 });
  await w.start();
  for (const r of makeRecords(3)) w.push(r, 'udp');
  await until(() => w.stats().stored === 3, 'partial batch flushed');
  t.equal((await readStreams(client, keys)).length, 3);
  await w.close(1000);
});

t.test('a record older than retention on arrival is counted, not stored', async (t) => {
  const { w, keys } = writer(t, { retentionMs: 3_600_000 });
  await w.start();
  const [old, fresh] = makeRecords(2);
  old!['@timestamp'] = new Date(Date.now() - 3 * 3_600_000).toISOString();
  t.equal(w.push(old!, 'tcp'), true, 'taken');
  w.push(fresh!, 'tcp');
  await until(() => w.stats().stored === 1, 'the fresh one stored');
  t.equal(w.stats().dropped.expired, 1);
  t.equal((await readStreams(client, keys)).length, 1);
  await w.close(1000);
});

t.test('IDs strictly increase across a restart, even with the clock going backwards', async (t) => {
  let clock = Date.now() + 60_000; // the first writer's clock is a minute ahead
  const first = writer(t, {}, { now: () => clock });
  await first.w.start();
  for (const r of makeRecords(500)) first.w.push(r, 'tcp');
  await until(() => first.w.stats().stored === 500, 'first stored');
  await first.w.close(1000);
  clock -= 120_000; // then the clock is set back
  const second = writer(t, { keyPrefix: first.keys.prefix }, { now: () => clock });
  await second.w.start();
  for (const r of makeRecords(300, 500)) second.w.push(r, 'tcp');
  clock -= 1; // and steps back once more mid-run
  for (const r of makeRecords(300, 800)) second.w.push(r, 'tcp');
  await until(() => second.w.stats().stored === 600, 'second stored');
  const entries = await readStreams(client, first.keys);
  t.equal(entries.length, 1100);
  for (const stream of new Set(entries.map((e) => e.stream))) {
    const list = entries.filter((e) => e.stream === stream);
    t.ok(increasing(list.map((e) => e.id)), `${stream}: IDs strictly increase`);
    t.same(
      list.map((e) => seqOf(e.record)),
      list.map((e) => seqOf(e.record)).sort((a, b) => a - b),
      `${stream}: in push order`,
    );
  }
  await second.w.close(1000);
});

t.test('the indexer gets the IDs Redis stored, its writes applied in the same script call', async (t) => {
  const seen: Array<[string, string, number]> = [];
  const indexer: StreamIndexer<FlowRecord> = {
    facts: (record) => record,
    build(entries: ReadonlyArray<IndexEntry<FlowRecord>>) {
      const ops = new IndexOps();
      for (const { facts: record, stream, id } of entries) {
        seen.push([stream, id, seqOf(record)]);
        ops.zadd(ops.key(`${stream}:by-seq`), String(seqOf(record)), id);
      }
      return ops;
    },
  };
  const { w, keys } = writer(t, {}, { indexer });
  await w.start();
  for (const r of makeRecords(777)) w.push(r, 'tcp');
  await until(() => w.stats().stored === 777, 'stored');
  const entries = await readStreams(client, keys);
  t.same(
    seen.map(([s, id, seq]) => `${s} ${id} ${seq}`).sort(),
    entries.map((e) => `${e.stream} ${e.id} ${seqOf(e.record)}`).sort(),
  );
  for (const stream of new Set(entries.map((e) => e.stream))) {
    const ids = entries.filter((e) => e.stream === stream).map((e) => e.id);
    t.same(await client.zrange(`${stream}:by-seq`, '0', '-1'), ids, `${stream} index written with the stored IDs`);
  }
  await w.close(1000);
});

t.test('an entry Redis refuses: the rest of its batch is indexed apart, and each entry is counted once', async (t) => {
  const prefix = `t${n++}`;
  const counter = (entries: ReadonlyArray<IndexEntry<string>>): IndexOps => {
    const ops = new IndexOps();
    for (const { facts: direction } of entries) ops.incr(ops.key(`${prefix}:count`), direction);
    return ops;
  };
  const indexer: StreamIndexer<string> = { facts: (r) => r.network.direction, build: counter };
  const { w, keys, registry } = writer(t, { keyPrefix: prefix, flushIntervalMs: 50 }, { indexer });
  await w.start();
  // The ingress record is in a partition (bucket) of its own.
  const [first, a, b, c] = makeRecords(4).map((r, i) => ({ ...r, network: { ...r.network, direction: i === 2 ? ('ingress' as const) : ('egress' as const) } }));
  b!['@timestamp'] = new Date(T0 + 600_000).toISOString();
  w.push(first!, 'tcp');
  await until(() => w.stats().stored === 1, 'the writer is running');
  // XADD to a key of another type fails (WRONGTYPE): that one entry is refused, the others are stored.
  const ingress = keys.stream(partitionName(bucketOf(T0) + 1, 'w1'));
  await client.set(ingress, 'not a stream');
  for (const r of [a!, b!, c!]) w.push(r, 'tcp', messageOf(r));
  await until(() => w.stats().stored === 3, 'the egress ones stored');
  await until(async () => (await client.zscore(`${prefix}:count`, 'egress')) === '3', 'indexed apart');
  t.equal(await client.zscore(`${prefix}:count`, 'ingress'), null, 'the refused entry is not indexed');
  t.ok((await registry.getSingleMetric('dockflow_store_batch_failures_total')?.get())!.values[0]!.value > 0, 'the failure is counted');
  await client.del(ingress);
  await until(() => w.stats().stored === 4, 'the refused one stored when resent');
  await until(async () => (await client.zscore(`${prefix}:count`, 'ingress')) === '1', 'indexed with its resend');
  t.equal(await client.zscore(`${prefix}:count`, 'egress'), '3', 'the others are not counted again');
  await w.close(1000);
});

t.test('a record the indexer fails on is stored unindexed and counted; the rest of its batch is indexed', async (t) => {
  const prefix = `t${n++}`;
  const indexer = seqCounter(`${prefix}:seen`, (r) => {
    if (seqOf(r) === 1) throw new Error('indexer bug');
    return seqOf(r);
  });
  const { w, registry } = writer(t, { keyPrefix: prefix, flushIntervalMs: 10 }, { indexer });
  await w.start();
  for (const r of makeRecords(3)) w.push(r, 'tcp', messageOf(r));
  await until(() => w.stats().stored === 3, 'all three stored');
  await until(async () => (await client.zcard(`${prefix}:seen`)) === 2, 'the other two indexed');
  t.same(await client.zrange(`${prefix}:seen`, '0', '-1'), ['0', '2']);
  t.equal((await registry.getSingleMetric('dockflow_store_index_errors_total')?.get())!.values[0]!.value, 1, 'counted');
  await w.close(1000);
});

t.test('scripts flushed from Redis mid-stream: every record is still indexed exactly once', async (t) => {
  const prefix = `t${n++}`;
  const indexer = seqCounter(`${prefix}:seen`);
  const { w } = writer(t, { keyPrefix: prefix, flushIntervalMs: 5, batchMaxRecords: 50 }, { indexer });
  await w.start();
  const records = makeRecords(600);
  for (let i = 0; i < records.length; i++) {
    w.push(records[i]!, 'tcp', messageOf(records[i]!));
    if (i === 300) await client.script('FLUSH');
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 10));
  }
  await until(() => w.stats().stored === 600, 'all stored');
  await until(async () => (await client.zcard(`${prefix}:seen`)) === 600, 'all indexed');
  const counts = await client.zrange(`${prefix}:seen`, '0', '-1', 'WITHSCORES');
  t.same(new Set(counts.filter((_, i) => i % 2 === 1)), new Set(['1']), 'each once');
  await w.close(1000);
});

t.test('an index write Redis refuses is counted; the batch is stored, not resent', async (t) => {
  const prefix = `t${n++}`;
  const indexer = seqCounter(`${prefix}:counted`);
  await client.set(`${prefix}:counted`, 'not a sorted set');
  const { w, registry, keys } = writer(t, { keyPrefix: prefix, flushIntervalMs: 5 }, { indexer });
  await w.start();
  for (const r of makeRecords(5)) w.push(r, 'tcp', messageOf(r));
  await until(() => w.stats().stored === 5, 'stored');
  t.equal((await registry.getSingleMetric('dockflow_store_index_errors_total')?.get())!.values[0]!.value, 1, 'one batch, one index error');
  t.equal((await readStreams(client, keys)).length, 5, 'stored once');
  await w.close(1000);
});

t.test('push returns false when the queue is full and drain follows', async (t) => {
  const { w } = writer(t, { maxQueueRecords: 300, batchMaxRecords: 100, maxBatchesInFlight: 1 });
  await w.start();
  let drains = 0;
  w.onDrain(() => drains++);
  const results = makeRecords(400).map((r) => w.push(r, 'tcp'));
  t.equal(results.indexOf(false), 299, 'false from the record that fills the queue');
  t.equal(w.stats().queued, 400, 'the record given is still taken');
  await until(() => w.stats().stored === 400, 'stored');
  t.ok(drains >= 1, 'drain called');
  await w.close(1000);
});

t.test('the original message is kept only when asked, byte for byte whatever it holds', async (t) => {
  for (const keepOriginal of [false, true]) {
    const { w, keys } = writer(t, { keepOriginal });
    await w.start();
    const opts = createLineOptions({ referenceMs: Date.UTC(2026, 0, 15) });
    const lines = readFileSync(fixture('store', 'flows.kmsg.txt'), 'utf8').split('\n').filter(Boolean);
    const pushed: FlowRecord[] = [];
    const messages = new Map<string, string>();
    for (const [i, line] of lines.entries()) {
      // Control bytes and CRLF in a LOG prefix: RESP carries arguments by length, not by separator.
      const message = i === 3 ? line.replace('IN=', '\x1f\r\n\x00IN=') : line;
      const record = parseLine(message, opts);
      if (typeof record === 'string') continue;
      record['@timestamp'] = new Date(T0 + i).toISOString();
      w.push(record, 'tcp', message);
      pushed.push(record);
      messages.set(record['@timestamp'], message);
    }
    await until(() => w.stats().stored === pushed.length, 'all stored');
    const raw: Array<[string, string[]]> = [];
    for (const stream of await partitionStreams(client, keys)) raw.push(...((await client.xrange(stream, '-', '+')) as Array<[string, string[]]>));
    const shapes = new Set(raw.map(([, fields]) => fields.filter((_, k) => k % 2 === 0).join(',')));
    t.same([...shapes], [keepOriginal ? `${ENTRY_FIELDS.join(',')},o` : ENTRY_FIELDS.join(',')], 'one fixed field set');
    for (const e of await readStreams(client, keys)) {
      if (keepOriginal) t.equal(e.record.event?.original, messages.get(e.record['@timestamp']), 'event.original as it came');
      else t.equal(e.record.event?.original, undefined);
    }
    if (keepOriginal) t.ok(raw.some(([, fields]) => fields.includes(messages.get(pushed[2]!['@timestamp'])!)) || raw.some(([, f]) => f.some((v) => v.includes('\x1f\r\n\x00IN='))), 'control bytes kept');
    await w.close(1000);
  }
});
