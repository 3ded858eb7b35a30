import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import t from 'tap';
import { defaultApiLimits } from '../../src/api/limits.js';
import { buildApp } from '../../src/api/app.js';
import type { FlowRecord } from '../../src/record.js';
import { connectRedis } from '../../src/store/connect.js';
import { FlowIndexer } from '../../src/store/indexer.js';
import { storeKeys } from '../../src/store/keys.js';
import { migrateV1 } from '../../src/store/migrate.js';
import { StreamWriter } from '../../src/store/stream-writer.js';
import { buildDataset, BASE_MS } from '../api/store-helper.js';
import { fixture } from '../helpers/paths.js';
import { startRedis } from '../helpers/redis.js';
import { tempDir } from '../helpers/temp.js';
import { silent, until } from './records.js';

t.test('a store written by the version 1 writer is converted, every record readable through the API, the old keys gone', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.stop());
  const redis = connectRedis(server.url, silent);
  t.teardown(() => redis.disconnect());
  await until(() => redis.status === 'ready', 'ready');
  // The fixture: the commands that rebuild a store written by the version 1 code (its StreamWriter and FlowIndexer).
  const commands = readFileSync(fixture('store', 'v1-store.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]);
  const pl = redis.pipeline();
  for (const [cmd, ...args] of commands) pl.call(cmd!, ...args);
  for (const [err] of (await pl.exec()) ?? []) if (err) throw err;
  const v1Keys = (await redis.keys('dockflow:*')).length;
  t.ok(v1Keys > 20, 'the version 1 store is loaded');

  const keys = storeKeys('dockflow');
  const writer = new StreamWriter(
    redis,
    { keyPrefix: 'dockflow', spoolDir: tempDir(t, 'spool'), keepOriginal: true, retentionMs: 0, flushIntervalMs: 5 },
    { logger: silent, registry: new Registry(), indexer: new FlowIndexer({ keyPrefix: 'dockflow' }) },
  );
  await writer.start();
  const res = await migrateV1(redis, keys, writer);
  await writer.close(1000);
  const data = buildDataset();
  t.equal(res.read, data.length, 'every version 1 entry read');
  t.equal(res.unreadable, 0);
  t.equal(res.deletedKeys, v1Keys, 'every version 1 key deleted');
  t.same(await redis.keys('dockflow:flows:*'), []);

  const app = await buildApp({ redis, logger: pino({ level: 'silent' }), keyPrefix: 'dockflow', auth: { required: false }, lossReport: () => ({ dropped: {}, spooled: 0, pending: 0 }), retentionMs: 0, limits: defaultApiLimits({ retentionMs: 0 }) });
  t.teardown(() => app.close());
  const got = (await app.inject({ method: 'GET', url: `/api/flows?since=${new Date(BASE_MS - 60_000).toISOString()}&limit=1000&order=asc` })).json() as { items: FlowRecord[] };
  const view = (r: FlowRecord): string =>
    JSON.stringify([r['@timestamp'], r.network.direction, r.network.transport, r.source.ip, r.source.port, r.destination.ip, r.destination.port, r.container?.name, r.log?.prefix, r.iptables.ttl]);
  t.same(got.items.map(view).sort(), data.map(view).sort(), 'the same records, their parsed details from the kept message');
  t.ok(got.items.every((r) => typeof r.event?.original === 'string'), 'the original messages carried over');
  const mailer = (await app.inject({ method: 'GET', url: `/api/flows?container=mailer&since=${new Date(BASE_MS - 60_000).toISOString()}&limit=1000` })).json() as { items: FlowRecord[] };
  t.equal(mailer.items.length, data.filter((r) => r.container?.name === 'mailer').length, 'indexed in the new layout');
});
