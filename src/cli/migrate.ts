import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { loadConfig } from '../config/index.js';
import { connectRedis } from '../store/connect.js';
import { FlowIndexer } from '../store/indexer.js';
import { SCHEMA_VERSION, storeKeys } from '../store/keys.js';
import { migrateV1 } from '../store/migrate.js';
import { StreamWriter } from '../store/stream-writer.js';

const USAGE = `usage: dockflow migrate [--keep-v1]

Copies a store written by dockflow's version 1 layout (<prefix>:flows:<direction> streams) into the version 2
layout (docs/storage.md), then deletes the version 1 keys (--keep-v1 leaves them). Reads the same settings as
serve from the environment: REDIS_URL, DOCKFLOW_KEY_PREFIX, DOCKFLOW_INGESTER_ID, DOCKFLOW_KEEP_ORIGINAL,
DOCKFLOW_RETENTION_MS, DOCKFLOW_SPOOL_DIR.`;

export async function runMigrate(argv: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({ args: argv, options: { 'keep-v1': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (err) {
    process.stderr.write(`dockflow migrate: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const config = loadConfig({ env: process.env });
  if (config.redis.url === undefined) {
    process.stderr.write('dockflow migrate: set REDIS_URL to the store to migrate\n');
    return 2;
  }
  const logger = pino({ level: 'info' });
  const redis = connectRedis(config.redis.url, logger);
  while (redis.status !== 'ready') await new Promise((r) => setTimeout(r, 20));
  const keys = storeKeys(config.store.keyPrefix);
  const writer = new StreamWriter(
    redis,
    {
      keyPrefix: config.store.keyPrefix,
      writerId: config.store.ingesterId,
      keepOriginal: config.store.keepOriginal,
      retentionMs: config.store.retentionMs,
      spoolDir: config.store.spoolDir,
    },
    { logger, registry: new Registry(), indexer: new FlowIndexer({ keyPrefix: config.store.keyPrefix }) },
  );
  await writer.start();
  try {
    const res = await migrateV1(redis, keys, writer, { keepV1: values['keep-v1'] === true });
    await redis.set(keys.schema, String(SCHEMA_VERSION));
    const s = writer.stats();
    logger.info({ ...res, stored: s.stored, expired: s.dropped.expired }, 'migrated');
    return 0;
  } finally {
    await writer.close(10_000);
    redis.disconnect();
  }
}
