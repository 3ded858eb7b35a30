import t from 'tap';
import { Redis } from 'ioredis';
import { connectCluster, parseRedisTarget } from '../../src/store/connect.js';
import type { RespConnection } from '../../src/store/resp.js';
import { RespWriter } from '../../src/store/resp.js';
import { ClusterSlotConnections, commonSlot, isRedirect, SingleConnection, slotOf } from '../../src/store/slot-connections.js';
import { startRedisCluster, type TestRedisCluster } from '../helpers/redis-cluster.js';
import { startRedis } from '../helpers/redis.js';
import { silent, until } from './records.js';

function clusterTarget(c: TestRedisCluster) {
  const target = parseRedisTarget(c.url);
  if (target.kind !== 'cluster') throw new Error('not a cluster URL');
  return target;
}

/** MULTI, an XADD per id into `stream`, EXEC, then (optionally) WAIT 1 for a replica: as a writer's batch. */
function batch(stream: string, ids: readonly string[], wait = false): { payload: Buffer; replies: number } {
  const w = new RespWriter(256);
  w.command(1).arg('MULTI');
  for (const id of ids) w.command(5).arg('XADD').arg(stream).arg(id).arg('f').arg('v');
  w.command(1).arg('EXEC');
  if (wait) w.command(3).arg('WAIT').arg('1').arg('2000');
  return { payload: Buffer.from(w.bytes()), replies: ids.length + 2 + (wait ? 1 : 0) };
}

t.test('slotOf agrees with the server, hash tags included; commonSlot finds batches that span slots', async (t) => {
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const keys = ['dockflow:flows:egress', '{dockflow:p1}:flows', 'a{b}c', 'a{b}d{e}', '{}x', 'x{}y', 'ünïcode:{ü}', '{user1000}.following'];
  for (const key of keys) {
    const server = Number((await cluster.cli(cluster.nodes[0]!, 'CLUSTER', 'KEYSLOT', key)).trim());
    t.equal(slotOf(key), server, key);
  }
  t.equal(commonSlot(['{p}:a', '{p}:b', '{p}']), slotOf('p'));
  t.equal(commonSlot(['dockflow:flows:egress', 'dockflow:flows:ingress']), -1, "today's stream keys span slots");
  t.equal(commonSlot([]), 0);
});

t.test('batches go to the master that owns their slot; a cross-slot batch is refused; MOVED is a redirection', async (t) => {
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const client = connectCluster(clusterTarget(cluster), silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'cluster client ready');
  const conns = new ClusterSlotConnections(client, { logger: silent, onReady: () => undefined });
  t.teardown(() => conns.close());
  conns.connect();

  const streams = ['{a}:s', '{b}:s', '{c}:s', '{d}:s'];
  const used = new Set<RespConnection>();
  for (const stream of streams) {
    const slot = slotOf(stream);
    const c = conns.forSlot(slot)!;
    used.add(c);
    await until(() => c.isReady, `connection for slot ${slot} ready`);
    const b = batch(stream, ['1-1', '1-2']);
    const replies = await c.send(b.payload, b.replies);
    t.same(replies[replies.length - 1], ['1-1', '1-2'], `${stream} stored on its owner`);
    const owner = await cluster.masterOf(slot);
    t.equal(conns.nodeOf(slot), owner.address, 'the client map names the owner');
    t.equal((await cluster.cli(owner, 'XLEN', stream)).trim(), '2');
  }
  t.equal(used.size, new Set(streams.map((s) => conns.nodeOf(slotOf(s)))).size, 'one connection per master');

  // Two keys in different slots in one transaction: the cluster refuses the transaction.
  const [x, y] = ['{a}:s', '{b}:s'];
  const c = conns.forSlot(slotOf(x))!;
  const w = new RespWriter(128);
  w.command(1).arg('MULTI').command(5).arg('XADD').arg(x).arg('2-1').arg('f').arg('v').command(5).arg('XADD').arg(y).arg('2-1').arg('f').arg('v').command(1).arg('EXEC');
  const replies = await c.send(Buffer.from(w.bytes()), 4);
  const errors = replies.filter((r): r is Error => r instanceof Error).map((e) => e.message.split(' ')[0]);
  t.ok(errors.includes('MOVED') || errors.includes('CROSSSLOT'), `refused: ${errors.join(', ')}`);
  t.match((replies[3] as Error).message, /EXECABORT/);

  // A key sent to a node that does not own it: MOVED, which the provider takes as a redirection and refreshes on.
  const other = [...used].find((u) => u !== conns.forSlot(slotOf(y)))!;
  const moved = await other.send(Buffer.from(new RespWriter(64).command(2).arg('XLEN').arg(y).bytes()), 1);
  t.match((moved[0] as Error).message, /^MOVED \d+ 127\.0\.0\.1:\d+/);
  t.ok(conns.redirected(moved[0]), 'MOVED is a redirection');
  t.notOk(conns.redirected(new Error('ERR something else')), 'other errors are not');
  t.ok(isRedirect(new Error('TRYAGAIN Multiple keys request during rehashing of slot')));
});

t.test('one Redis: every slot is the one connection', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const one = new SingleConnection({ host: '127.0.0.1', port: redis.port }, { logger: silent, onReady: () => undefined });
  t.teardown(() => one.close());
  one.connect();
  t.equal(one.forSlot(), one.forSlot());
  const c = one.forSlot();
  await until(() => c.isReady, 'ready');
  const b = batch('dockflow:flows:egress', ['1-1']);
  t.same((await c.send(b.payload, b.replies)).at(-1), ['1-1']);
  t.equal(one.connections().length, 1);
});

t.test('a master killed while batches flow: its replica takes over, and every batch a replica acknowledged is there', async (t) => {
  const cluster = await startRedisCluster({ replicas: true });
  t.teardown(() => cluster.stop());
  const client = connectCluster(clusterTarget(cluster), silent);
  t.teardown(() => client.disconnect());
  await until(() => client.status === 'ready', 'cluster client ready');
  let lost = 0;
  const conns = new ClusterSlotConnections(client, { logger: silent, onReady: () => undefined, onLost: () => lost++, replyTimeoutMs: 3000 });
  t.teardown(() => conns.close());
  conns.connect();

  const stream = '{dockflow:shard-test}:flows';
  const slot = slotOf(stream);
  const victim = await cluster.masterOf(slot);
  /** Batches stored and acknowledged by a replica (WAIT 1 answered 1) before the master was killed. */
  const replicated: string[] = [];
  /** Batches the promoted master stored afterwards (it has no replica left to acknowledge them). */
  const afterwards: string[] = [];
  let killed = false;
  let refused = 0;
  for (let n = 1; afterwards.length < 20; n++) {
    if (n > 600) throw new Error('gave up: the replica never took over');
    if (replicated.length === 20 && !killed) {
      killed = true;
      await victim.kill();
    }
    const c = conns.forSlot(slot);
    if (c === undefined || !c.isReady) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const id = `${n}-1`;
    // WAIT only while the shard has a replica: the promoted master has none, and WAIT would sit out its timeout.
    const b = batch(stream, [id], !killed);
    const replies = await c.send(b.payload, b.replies).catch((err: Error) => [err]);
    const exec = replies[replies.length - (killed ? 1 : 2)];
    const wait = replies[replies.length - 1];
    if (Array.isArray(exec) && !killed && wait === 1) replicated.push(id);
    else if (Array.isArray(exec) && killed) afterwards.push(id);
    else {
      refused++;
      for (const r of replies) conns.redirected(r);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  t.ok(killed, 'the master was killed');
  await cluster.waitOk();
  const promoted = await cluster.masterOf(slot);
  t.not(promoted.port, victim.port, `the replica (${promoted.address}) serves the slot now`);
  t.ok(lost >= 1, 'the connection to the dead master was noticed lost');
  t.ok(refused + lost >= 1, 'the failover was noticed (a batch unanswered or the connection lost)');
  const reader = new Redis(promoted.port, '127.0.0.1');
  t.teardown(() => reader.disconnect());
  const stored = new Set((await reader.xrange(stream, '-', '+')).map(([id]) => id));
  t.same(replicated.filter((id) => !stored.has(id)), [], 'every batch a replica acknowledged before the kill survived it');
  t.same(afterwards.filter((id) => !stored.has(id)), [], 'and the promoted master took the batches after it');
});
