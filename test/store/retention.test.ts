import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import t, { type Test } from 'tap';
import type { FlowRecord } from '../../src/record.js';
import { connectRedis } from '../../src/store/connect.js';
import { FlowIndexer } from '../../src/store/indexer.js';
import { BUCKET_MS, bucketOf, parsePartition, storeKeys, type StoreKeys } from '../../src/store/keys.js';
import { planQuery, scanFlows, StoreReader } from '../../src/store/query.js';
import { DELETE_MARGIN_MS } from '../../src/store/retention.js';
import { StreamWriter, type StreamWriterOptions } from '../../src/store/stream-writer.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { tempDir } from '../helpers/temp.js';
import { realRecords, silent, until } from './records.js';

let server: TestRedis;
let client: Redis;
let n = 0;

t.before(async () => {
  server = await startRedis();
  client = connectRedis(server.url, silent);
  await until(() => client.status === 'ready', 'redis ready');
});
t.teardown(async () => {
  client.disconnect();
  await server.stop();
});

function writer(t: Test, opts: Partial<StreamWriterOptions>, now: () => number): { w: StreamWriter; keys: StoreKeys } {
  const prefix = `r${n++}`;
  const w = new StreamWriter(
    client,
    { batchMaxRecords: 500, flushIntervalMs: 2, maxQueueRecords: 5000, trimIntervalMs: 3_600_000, ...opts, keyPrefix: prefix, spoolDir: tempDir(t, 'spool') },
    { logger: silent, registry: new Registry(), indexer: new FlowIndexer({ keyPrefix: prefix }), now },
  );
  return { w, keys: storeKeys(prefix) };
}

/** Pushes one record per packet time, waiting for the writer when it asks. */
async function feed(w: StreamWriter, times: Iterable<number>): Promise<number> {
  const real = realRecords();
  let pushed = 0;
  let drained: (() => void) | undefined;
  w.onDrain(() => drained?.());
  for (const time of times) {
    const r = real[pushed % real.length] as FlowRecord;
    // The writer encodes what it takes at once: one object serves every push.
    const rec = { ...r, '@timestamp': new Date(time).toISOString() };
    pushed++;
    if (!w.push(rec, 'tcp')) await new Promise<void>((res) => (drained = res));
  }
  return pushed;
}

/**
 * The store's invariants: every key belongs to a listed partition (nothing unreachable, nothing left of a deleted
 * one), every index value lists only entries that exist, every entry is in its direction's list.
 */
async function checkStore(t: Test, keys: StoreKeys): Promise<number> {
  const listed = new Set(await client.zrange(keys.partitions, '0', '-1'));
  let total = 0;
  for (const key of await client.keys(`${keys.prefix}:*`)) {
    const part = /\{([^}]+)\}/.exec(key)?.[1];
    if (part === 'g' || part === undefined) continue;
    if (!listed.has(part)) t.fail(`${key} belongs to no listed partition`);
  }
  for (const part of listed) {
    const len = await client.xlen(keys.stream(part));
    total += len;
    const seen = new Uint8Array(len);
    for (const value of await client.zrange(keys.values(part), '0', '-1')) {
      const refs = (await client.getBuffer(keys.refs(part, value))) ?? Buffer.alloc(0);
      for (let i = 0; i < refs.length; i += 4) {
        const e = refs.readUInt32BE(i);
        if (e >= len) t.fail(`${part} ${value} points at entry ${e} of ${len}`);
        else if (value.startsWith('d|')) seen[e] = 1;
      }
    }
    if (seen.includes(0)) t.fail(`${part}: an entry is in no direction list`);
  }
  return total;
}

async function usedMemory(): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
}

t.test('a record cap deletes the oldest partitions whole; nothing dangles, memory falls back', async (t) => {
  const now = Date.now();
  const base = (bucketOf(now) - 10) * BUCKET_MS;
  const { w, keys } = writer(t, { maxRecords: 3000, retentionMs: 0 }, () => now);
  await w.start();
  // 8 partitions of 1,000 records each.
  const times = Array.from({ length: 8000 }, (_, i) => base + Math.floor(i / 1000) * BUCKET_MS + (i % 1000));
  const before = await usedMemory();
  await feed(w, times);
  await until(() => w.stats().stored === 8000, 'stored');
  const full = await usedMemory();
  await w.trimNow();
  const left = await checkStore(t, keys);
  t.ok(left <= 3000 && left >= 2000, `at most the cap, within one partition of it (${left})`);
  t.same((await client.zrange(keys.partitions, '0', '-1')).map((p) => parsePartition(p)!.bucket - bucketOf(base)), [5, 6, 7], 'the newest partitions kept');
  // Five of eight partitions deleted (their large values freed in the background): memory falls by about as much.
  await until(async () => (await usedMemory()) < full - (full - before) * 0.4, 'memory falls back with the records', 10_000);
  t.pass('memory falls back with the records');
  // The writer writes on into a partition it had deleted, and registers it again.
  await feed(w, [base + 7 * BUCKET_MS + 5000]);
  await until(() => w.stats().stored === 8001, 'stored again');
  await checkStore(t, keys);
  await w.close(1000);
});

t.test('an age limit under a sustained feed of 12,000 records a minute: deleted as they age, nothing dangles', async (t) => {
  const start = (bucketOf(Date.now()) - 6) * BUCKET_MS;
  let clock = start;
  const retentionMs = 10 * 60_000;
  const { w, keys } = writer(t, { retentionMs }, () => clock);
  await w.start();
  let pushed = 0;
  const minutes = 26;
  for (let minute = 0; minute < minutes; minute++) {
    // 12,000 records in this simulated minute, the clock advancing with the packets.
    pushed += await feed(
      w,
      Array.from({ length: 12_000 }, (_, i) => start + minute * 60_000 + i * 5),
    );
    clock = start + (minute + 1) * 60_000;
    await until(() => w.stats().stored === pushed, `minute ${minute} stored`, 60_000);
    if (minute % 5 === 4 || minute === minutes - 1) {
      await w.trimNow();
      const kept = await checkStore(t, keys);
      const oldest = (await client.zrange(keys.partitions, '0', '0', 'WITHSCORES'))[1];
      // Deleted once its bucket ended retention + the margin ago.
      const horizon = clock - retentionMs - DELETE_MARGIN_MS;
      t.ok((Number(oldest) + 1) * BUCKET_MS > horizon, `minute ${minute}: nothing older than retention left`);
      t.ok(kept <= (retentionMs + DELETE_MARGIN_MS + 2 * BUCKET_MS) / 5, `minute ${minute}: ${kept} records kept, bounded by retention`);
    }
  }
  t.equal(w.stats().dropped.expired, 0, 'a live feed never expires on arrival');
  t.ok((await client.zrange(keys.partitions, '0', '-1')).length <= 3, 'only the partitions within retention remain');
  await w.close(1000);
});

t.test('a replayed backlog: packets older than retention are counted, the rest stored where queries find them', async (t) => {
  const now = Date.now();
  const retentionMs = 2 * 3_600_000;
  const { w, keys } = writer(t, { retentionMs }, () => now);
  await w.start();
  const old = Array.from({ length: 500 }, (_, i) => now - 3 * 3_600_000 + i * 1000);
  const recent = Array.from({ length: 500 }, (_, i) => now - 3_600_000 + i * 1000);
  await feed(w, [...old, ...recent]);
  await until(() => w.stats().stored === 500, 'the recent half stored');
  t.equal(w.stats().dropped.expired, 500, 'the half past retention counted expired');
  await w.trimNow();
  t.equal(await checkStore(t, keys), 500);
  const reader = new StoreReader(client, keys, { retentionMs, now: () => now });
  const plan = await planQuery(reader, {});
  const res = await scanFlows(reader, {}, plan, 1000, { order: 'asc', scanBudget: 10_000 });
  t.equal(res.hits.length, 500, 'every stored record is found');
  await w.close(1000);
});
