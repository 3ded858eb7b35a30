import t, { type Test } from 'tap';
import { Redis, type Cluster } from 'ioredis';
import { connectCluster, parseRedisTarget } from '../../../src/store/connect.js';
import { slotOf } from '../../../src/store/slot-connections.js';
import { startRedisCluster } from '../../helpers/redis-cluster.js';
import pino from 'pino';
import { canonicalIp, Ledger, type ContainerMeta } from '../../../src/enrich/docker/ledger.js';
import { startRedis } from '../../helpers/redis.js';

const logger = pino({ level: 'silent' });
const meta = (id: string, name = id): ContainerMeta => ({ id, name, image: 'img:1', labels: { 'com.docker.compose.service': name } });
const T0 = Date.UTC(2026, 10, 27, 14, 0, 0);
const MIN = 60_000;

t.test('addresses have one spelling', async (t) => {
  const cases: [string, string][] = [
    ['172.17.0.2', '172.17.0.2'],
    ['fd00:0017:0000:0000:0000:0000:0000:0002', 'fd00:17::2'],
    ['FD00:17::2', 'fd00:17::2'],
    ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['::1', '::1'],
    ['::', '::'],
    ['fe80::', 'fe80::'],
    ['not:an:address', 'not:an:address'],
    ['1::2::3', '1::2::3'],
  ];
  for (const [input, want] of cases) t.equal(canonicalIp(input), want, input);
});

t.test('lookups are as of the time asked, and prefer the MAC', async (t) => {
  const r = await startRedis();
  const redis = new Redis(r.url);
  t.teardown(async () => {
    redis.disconnect();
    await r.stop();
  });
  const ledger = new Ledger({ redis, logger, clockSlackMs: 1000 });
  await ledger.load();
  ledger.open('h', meta('old'), { ip: '172.17.0.4', mac: '02:42:ac:11:00:04', network: 'bridge' }, T0);
  ledger.release('h', 'old', T0 + 5 * MIN);
  ledger.open('h', meta('new'), { ip: '172.17.0.4', mac: '02:42:ac:11:00:99', network: 'bridge' }, T0 + 10 * MIN);
  ledger.open('h', meta('v6'), { ip: 'fd00:17::4' }, T0);
  const who = (ip: string, at: number, hints?: { mac?: string; physdev?: string }): string | undefined => {
    const r = ledger.lookup('h', ip, at, hints);
    return r && `${r.holding.container.id}/${r.match}`;
  };
  const cases: [string, string, number, { mac?: string; physdev?: string } | undefined, string | undefined][] = [
    ['before anyone', '172.17.0.4', T0 - 5 * MIN, undefined, undefined],
    ['old holder', '172.17.0.4', T0 + MIN, undefined, 'old/ip'],
    ['old holder by MAC', '172.17.0.4', T0 + MIN, { mac: '02:42:ac:11:00:04' }, 'old/ip+mac'],
    ['a foreign MAC does not prevent the time match', '172.17.0.4', T0 + MIN, { mac: '52:54:00:00:00:01' }, 'old/ip'],
    ['just after the end, within the clock slack', '172.17.0.4', T0 + 5 * MIN + 500, undefined, 'old/ip-nearby'],
    ['between holders', '172.17.0.4', T0 + 7 * MIN, undefined, undefined],
    ['new holder', '172.17.0.4', T0 + 11 * MIN, undefined, 'new/ip'],
    ['new holder, still open', '172.17.0.4', T0 + 1000 * MIN, undefined, 'new/ip'],
    ['expanded IPv6 as the kernel prints it', 'fd00:0017:0000:0000:0000:0000:0000:0004', T0 + MIN, undefined, 'v6/ip'],
    ['another host knows nothing', '172.17.0.4', T0 + MIN, undefined, undefined],
  ];
  for (const [name, ip, at, hints, want] of cases) {
    t.equal(name === 'another host knows nothing' ? ledger.lookup('other', ip, at)?.holding.container.id : who(ip, at, hints), want, name);
  }

  // Overlap (an interval left open by a lost event): the latest claim wins, a MAC or a learned veth overrides.
  ledger.open('h', meta('stale'), { ip: '172.17.0.9', mac: 'aa:aa:aa:aa:aa:aa' }, T0);
  ledger.open('h', meta('fresh'), { ip: '172.17.0.9', mac: 'bb:bb:bb:bb:bb:bb' }, T0 + MIN);
  t.equal(who('172.17.0.9', T0 + 2 * MIN), 'fresh/ip');
  t.equal(who('172.17.0.9', T0 + 2 * MIN, { mac: 'aa:aa:aa:aa:aa:aa' }), 'stale/ip+mac');
  ledger.notePhysdev(ledger.lookup('h', '172.17.0.9', T0 + 30_000)!.holding, 'veth1');
  t.equal(who('172.17.0.9', T0 + 2 * MIN, { physdev: 'veth1' }), 'stale/ip+physdev');

  // A rename starts a new interval; history and the per-container view show both.
  ledger.rename('h', 'new', 'new-renamed', T0 + 20 * MIN);
  t.equal(ledger.lookup('h', '172.17.0.4', T0 + 15 * MIN)?.holding.container.name, 'new');
  t.equal(ledger.lookup('h', '172.17.0.4', T0 + 25 * MIN)?.holding.container.name, 'new-renamed');
  t.same(ledger.history('h', '172.17.0.4').map((h) => [h.container.name, h.toMs !== undefined]), [
    ['old', true],
    ['new', true],
    ['new-renamed', false],
  ]);
  t.match(ledger.containers('h').find((c) => c.id === 'new'), { name: 'new-renamed', addresses: [{ ip: '172.17.0.4' }, { ip: '172.17.0.4' }] });

  // Replays are harmless: opening what is open, and ending with an old event an interval that began later.
  ledger.open('h', meta('new'), { ip: '172.17.0.4' }, T0 + 30 * MIN);
  ledger.release('h', 'new', T0 + 5 * MIN);
  t.equal(ledger.openHoldings('h', 'new').length, 1);
  t.same(ledger.openContainerIds('h').sort(), ['fresh', 'new', 'stale', 'v6']);

  // An end only observed later is corrected by the exact event; an exact end is not moved.
  ledger.release('h', 'v6', T0 + 50 * MIN, { closedBy: 'observed' });
  ledger.release('h', 'v6', T0 + 40 * MIN);
  t.equal(ledger.history('h', 'fd00:17::4')[0]!.toMs, T0 + 40 * MIN);
  ledger.release('h', 'v6', T0 + 30 * MIN);
  t.equal(ledger.history('h', 'fd00:17::4')[0]!.toMs, T0 + 40 * MIN);

  ledger.setCursor('h', '1795764437443691800');
  ledger.setCursor('h', '1795764437443691799');
  t.equal(ledger.cursor('h'), '1795764437443691800', 'the cursor only moves forward');
  await ledger.flush();

  // A restart: a new instance reads it all back.
  const again = new Ledger({ redis, logger, clockSlackMs: 1000 });
  await again.load();
  for (const at of [T0 + MIN, T0 + 7 * MIN, T0 + 11 * MIN, T0 + 25 * MIN]) {
    t.same(again.lookup('h', '172.17.0.4', at), ledger.lookup('h', '172.17.0.4', at), `same answer after reload at +${(at - T0) / MIN} min`);
  }
  t.equal(again.cursor('h'), '1795764437443691800');
  t.equal(again.history('h', '172.17.0.9').find((h) => h.container.id === 'stale')?.physdev, 'veth1');

  // Retention drops intervals that ended long ago, in memory and in Redis.
  const dropped = again.prune(T0 + 40 * MIN + 31 * 86_400_000);
  t.ok(dropped >= 3);
  await again.flush();
  const third = new Ledger({ redis, logger });
  await third.load();
  t.equal(third.lookup('h', '172.17.0.4', T0 + MIN), undefined, 'pruned');
  t.equal(third.lookup('h', '172.17.0.4', T0 + 25 * MIN)?.holding.container.name, 'new-renamed', 'open intervals kept');
  await third.close();
});

t.test('Redis down: lookups go on, writes are retried when it is back', async (t) => {
  const r = await startRedis();
  const redis = new Redis(r.url, { maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  redis.on('error', () => undefined);
  t.teardown(async () => {
    redis.disconnect();
    await r.stop();
  });
  const ledger = new Ledger({ redis, logger, flushRetryMs: 100 });
  await ledger.load();
  await r.kill();
  ledger.open('h', meta('a'), { ip: '172.17.0.2' }, T0);
  await ledger.flush();
  t.equal(ledger.lookup('h', '172.17.0.2', T0 + 1)?.holding.container.id, 'a', 'memory answers while Redis is down');
  await r.restart();
  for (let i = 0; i < 100; i++) {
    if ((await redis.hlen('dockflow:ledger:h:holdings').catch(() => 0)) === 1) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  const again = new Ledger({ redis, logger });
  await again.load();
  t.equal(again.lookup('h', '172.17.0.2', T0 + 1)?.holding.container.id, 'a', 'written after Redis came back');
  await ledger.close();
  t.match(await redis.hget('dockflow:ledger:h:holdings', `a|172.17.0.2|${T0}`), /"name":"a"/);
  await redis.hset('dockflow:ledger:h:holdings', 'junk', '{not json');
  const tolerant = new Ledger({ redis, logger });
  await tolerant.load();
  t.equal(tolerant.history('h').length, 1, 'an unreadable stored interval is skipped');
});

/** Two ingesters watching the same Docker host, the second lagging: what one stored is not undone by the other. */
async function twoWriters(t: Test, redis: Redis | Cluster): Promise<void> {
  const ahead = new Ledger({ redis, logger });
  const behind = new Ledger({ redis, logger });
  await Promise.all([ahead.load(), behind.load()]);
  for (const l of [ahead, behind]) l.open('h', meta('a'), { ip: '172.17.0.2' }, T0);
  await Promise.all([ahead.flush(), behind.flush()]);

  // `ahead` sees the container stop (exact end) and a later cursor; `behind` has not yet, and learns the veth and MAC.
  ahead.release('h', 'a', T0 + 5 * MIN);
  ahead.setCursor('h', '1795764437443691800');
  await ahead.flush();
  const held = behind.lookup('h', '172.17.0.2', T0 + MIN)!.holding;
  behind.notePhysdev(held, 'veth9');
  behind.open('h', meta('a'), { ip: '172.17.0.2', mac: '02:42:ac:11:00:02' }, T0);
  behind.setCursor('h', '999999999999999999');
  await behind.flush();
  // `behind` sees only an observed end, later than the exact one.
  behind.release('h', 'a', T0 + 9 * MIN, { closedBy: 'observed' });
  await behind.flush();

  const merged = new Ledger({ redis, logger });
  await merged.load();
  const [h] = merged.history('h', '172.17.0.2');
  t.equal(merged.history('h', '172.17.0.2').length, 1, 'one interval');
  t.equal(h?.toMs, T0 + 5 * MIN, "the exact end is kept over the lagging writer's open and observed writes");
  t.equal(h?.closedBy, 'event');
  t.equal(h?.physdev, 'veth9', 'the veth one writer learned is kept');
  t.equal(h?.mac, '02:42:ac:11:00:02', 'and the MAC');
  t.equal(merged.cursor('h'), '1795764437443691800', 'the event cursor never moves back');
  await Promise.all([ahead.close(), behind.close(), merged.close()]);
}

t.test('two ingesters write one ledger: ends, veths, MACs and cursors merge instead of the last writer winning', async (t) => {
  const r = await startRedis();
  const redis = new Redis(r.url);
  t.teardown(async () => {
    redis.disconnect();
    await r.stop();
  });
  await twoWriters(t, redis);
});

t.test('the same on a Redis Cluster (no transaction spans the ledger keys, which lie in different slots)', async (t) => {
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const target = parseRedisTarget(cluster.url);
  if (target.kind !== 'cluster') throw new Error('not a cluster');
  const client = connectCluster(target, logger);
  t.teardown(() => client.disconnect());
  await new Promise((resolve) => client.once('ready', resolve));
  t.not(slotOf('dockflow:ledger:hosts'), slotOf('dockflow:ledger:h:holdings'), 'the keys are in different slots');
  await twoWriters(t, client);
});
