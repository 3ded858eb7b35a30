/**
 * The v2 layout on a real Redis Cluster: a partition's keys (stream, value lists, counters, inventories) carry the
 * partition as a hash tag and so share one slot, and the registries share `{g}`; a batch's index script runs on the
 * cluster. The whole service on a cluster (registries, retention, queries across partitions) is not verified yet,
 * so `CLUSTER_SAFE_LAYOUT` stays false and the end-to-end tests stay todo.
 */
import t from 'tap';
import type { Redis } from 'ioredis';
import { packetTimeMs } from '../../src/store/encode.js';
import { connectCluster, parseRedisTarget } from '../../src/store/connect.js';
import { INDEX_OPS_SCRIPT } from '../../src/store/index-ops.js';
import { FlowIndexer } from '../../src/store/indexer.js';
import { bucketOf, CLUSTER_SAFE_LAYOUT, partitionName, storeKeys } from '../../src/store/keys.js';
import { commonSlot } from '../../src/store/slot-connections.js';
import { startRedisCluster } from '../helpers/redis-cluster.js';
import { makeRecords, silent, until } from './records.js';

const BLOCKED = 'the v2 layout has not been verified end to end on a cluster yet (CLUSTER_SAFE_LAYOUT is false)';

t.test("a v2 partition's keys share a slot; its index script runs on a real cluster", async (t) => {
  t.equal(CLUSTER_SAFE_LAYOUT, false, 'not claimed until verified end to end');
  const keys = storeKeys('dockflow');
  const indexer = new FlowIndexer({ keyPrefix: 'dockflow' });
  const records = makeRecords(200);
  const part = partitionName(bucketOf(packetTimeMs(records[0]!)), 'w1');
  const ops = indexer.build(records.map((r, i) => ({ facts: indexer.facts(r), partition: part, stream: keys.stream(part), id: `${i}-${i + 1}` })))!;
  t.ok(commonSlot([keys.stream(part), ...ops.keys]) >= 0, `the stream and the batch's ${ops.keys.length} index keys are in one slot`);
  t.ok(commonSlot([keys.partitions, keys.containers, keys.asNames, keys.schema]) >= 0, 'the registries are in one slot');

  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const target = parseRedisTarget(cluster.url);
  if (target.kind !== 'cluster') throw new Error('not a cluster');
  const client = connectCluster(target, silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'ready');
  await (client as unknown as Redis).eval(INDEX_OPS_SCRIPT, ops.keys.length, ...ops.keys, ops.encode(), ...ops.payloads);
  t.ok((await client.zcard(keys.values(part))) > 0, 'the index script ran on the owner of the partition');
});

t.test('the service end to end on a 3-master cluster with two ingesters at once', { todo: BLOCKED }, async () => undefined);
t.test('a master killed and its replica promoted while TCP ingest runs: no accepted record lost', { todo: BLOCKED }, async () => undefined);
t.test('the API tests against the cluster', { todo: BLOCKED }, async () => undefined);
