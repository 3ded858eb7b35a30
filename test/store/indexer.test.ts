import t from 'tap';
import { Redis } from 'ioredis';
import type { FlowRecord } from '../../src/record.js';
import {
  canonicalIp,
  decodeMember,
  encodeMember,
  FlowIndexer,
  IndexKeys,
  inventoryMember,
  keyPart,
  validateKeyPrefix,
} from '../../src/store/indexer.js';
import { planQuery, scanFlows } from '../../src/store/query.js';
import { topN } from '../../src/store/aggregate.js';
import { BASE_MS, buildDataset, CONTAINERS, enrich, PREFIX, startEnv, TestWriter, type Env } from '../api/store-helper.js';

let env: Env;
t.before(async () => {
  env = await startEnv();
});
t.teardown(() => env.close());

t.test('members are compact and round-trip', async (t) => {
  for (const [dir, id] of [
    ['egress', '1795767514307-0'],
    ['ingress', '1795767514307-12'],
    ['host-to-container', '0-1'],
    ['other', '999999999999999-999'],
  ] as const) {
    const m = encodeMember(dir, id)!;
    if (id.startsWith('17')) t.ok(m.length <= 12, `${m}: present-day IDs take at most 12 bytes`);
    t.same(decodeMember(m), { direction: dir, id });
  }
  for (const bad of ['', '1795767514307', 'a-b', '1-2-3', '-1-0']) t.equal(encodeMember('egress', bad), undefined, bad);
  for (const bad of ['', 'x123', 'e', 'e!!']) t.equal(decodeMember(bad), undefined, bad);
});

t.test('key parts are escaped; prefixes validated', async (t) => {
  t.equal(keyPart('fd00:17::2'), 'fd00%3A17%3A%3A2');
  t.equal(keyPart('a*b?c[d] e\n'), 'a%2Ab%3Fc%5Bd%5D%20e%0A');
  t.equal(decodeURIComponent(keyPart("it's (x)!~")), "it's (x)!~");
  t.equal(canonicalIp('fd00:0017:0000:0000:0000:0000:0000:0002'), 'fd00:17::2');
  t.equal(canonicalIp('FD00::0002'), 'fd00::2');
  t.equal(canonicalIp('not-an-ip'), undefined);
  for (const ok of ['dockflow', 'a:b', 'x.y-z_1']) t.equal(validateKeyPrefix(ok), ok);
  for (const bad of ['', 'a b', 'a:', ':a', 'a*', 'x'.repeat(65)]) t.throws(() => validateKeyPrefix(bad), { code: 'DOCKFLOW_CONFIG_INVALID' }, JSON.stringify(bad));
});

t.test('no record value reaches a key name unescaped', async (t) => {
  const base = buildDataset()[0]!;
  const hostile: FlowRecord = enrich(base, BASE_MS, { id: 'f'.repeat(64), name: 'x:y* {z}', service: 'a b:c' });
  hostile.source.ip = 'fd00:0017:0000:0000:0000:0000:0000:0002';
  hostile.destination.geo = { country_iso_code: 'X:Y*' };
  const notHex = enrich(base, BASE_MS, { id: 'zz:*'.repeat(16), name: 'evil' });
  await env.writer.write([hostile, notHex]);
  const keys = await env.redis.keys('*');
  const safe = /^dft:(flows|ix|reg|top|inv)(:[A-Za-z0-9._%-]+)+$/;
  for (const k of keys) t.match(k, safe, k);
  t.notOk(keys.some((k) => k.includes('zz')), 'a container ID that is not hex is not indexed');
  t.ok(keys.includes(`dft:ix:ip:${keyPart('fd00:17::2')}`), 'IPv6 stored under its canonical, escaped form');
  await env.redis.flushall();
});

t.test('inventory members fold answers onto the connection they answer', async (t) => {
  const [syn, , , reply] = buildDataset();
  t.equal(inventoryMember(syn!), 'e|198.51.100.2|tcp|25');
  t.equal(reply!.network.direction, 'ingress');
  t.equal(inventoryMember(reply!), 'e|198.51.100.2|tcp|25');
});

t.test('trim removes index entries, registries and counters older than the horizon', async (t) => {
  const data = buildDataset();
  const old = data.slice(0, 20).map((r, i) => enrich(r, BASE_MS - 86_400_000 + i * 1000, CONTAINERS.mailer));
  const recent = data.slice(0, 20).map((r, i) => enrich(r, BASE_MS + i * 1000, CONTAINERS.mailer));
  const gone = data.slice(20, 24).map((r, i) => enrich(r, BASE_MS - 86_400_000 + i * 1000, CONTAINERS.resolver));
  // A fresh indexer: the shared one remembers registry writes that flushall has since undone.
  const writer = new TestWriter(env.redis);
  await writer.write([...old, ...recent, ...gone]);
  const k = new IndexKeys(PREFIX);
  const all = async () => {
    const plan = await planQuery(env.redis, k, {});
    return (await scanFlows(env.redis, k, {}, plan, 1000, { order: 'desc', scanBudget: 10_000 })).hits.length;
  };
  t.equal(await all(), 44);
  const pl = env.redis.pipeline();
  writer.indexer.trim(pl, BASE_MS - 3_600_000);
  const res = await pl.exec();
  t.equal(res?.[0]?.[0], null, 'the trim script ran');
  t.equal(await all(), 20, 'only the recent records are still indexed');
  t.equal(await env.redis.exists(k.container(CONTAINERS.resolver.id)), 0, "a container not seen since the horizon loses its index");
  t.equal(await env.redis.hexists(k.containerMeta, CONTAINERS.resolver.id), 0);
  t.equal(await env.redis.zcard(k.inventoryFirst(CONTAINERS.resolver.id)), 0);
  t.equal(await env.redis.zcount(k.container(CONTAINERS.mailer.id), '-inf', BASE_MS - 1), 0);
  const oldTop = await topN(env.redis, k, { by: 'dst', sinceMs: BASE_MS - 86_400_000, untilMs: BASE_MS - 80_000_000, limit: 10, maxReadEntries: 200_000 });
  t.same(oldTop.entries, [], 'old counters deleted');
  const newTop = await topN(env.redis, k, { by: 'dst', sinceMs: BASE_MS, untilMs: BASE_MS + 60_000, limit: 10, maxReadEntries: 200_000 });
  t.ok(newTop.entries.length > 0, 'recent counters kept');
  const regs = await env.redis.zrange(k.bucketRegistry, 0, '-1', 'WITHSCORES');
  for (let i = 1; i < regs.length; i += 2) t.ok(Number(regs[i]) >= BASE_MS - 3_600_000 - 600_000, 'bucket registry trimmed');
});
