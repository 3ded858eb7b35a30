import t from 'tap';
import { bucketOf, bucketStartMs, parsePartition, partitionName, storeKeys } from '../../src/store/keys.js';

t.test('partition keys share the partition as a hash tag; registries share {g}', async (t) => {
  for (const prefix of [undefined, 'test-123']) {
    const keys = storeKeys(prefix);
    const p = prefix ?? 'dockflow';
    const part = partitionName(2994467, 'w1');
    t.equal(part, '2994467.w1');
    t.equal(keys.stream(part), `${p}:{2994467.w1}:s`);
    t.equal(keys.values(part), `${p}:{2994467.w1}:v`);
    t.equal(keys.refs(part, 'a|4c6336402'), `${p}:{2994467.w1}:r:a|4c6336402`);
    t.equal(keys.top(part, 'dst', 'e'), `${p}:{2994467.w1}:n:dst:e`);
    t.equal(keys.inventoryFirst(part, 'a1a1a1a1a1a1'), `${p}:{2994467.w1}:f:a1a1a1a1a1a1`);
    t.equal(keys.partitions, `${p}:{g}:parts`);
    t.equal(keys.containers, `${p}:{g}:ctr`);
    t.equal(keys.schema, `${p}:{g}:schema`);
    t.equal(keys.v1Stream('egress'), `${p}:flows:egress`);
  }
});

t.test('partition names and buckets', async (t) => {
  t.same(parsePartition('2994467.w1'), { bucket: 2994467, writer: 'w1', name: '2994467.w1' });
  for (const bad of ['', '1', 'x.w1', '1.', '1.a:b', '1.a}b', `1.${'w'.repeat(33)}`]) t.equal(parsePartition(bad), undefined, bad);
  const ms = Date.UTC(2026, 10, 27, 8, 7, 30);
  t.equal(bucketStartMs(bucketOf(ms)), Date.UTC(2026, 10, 27, 8, 0, 0));
});
