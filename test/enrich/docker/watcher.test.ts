import t from 'tap';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { DockerClient } from '../../../src/enrich/docker/client.js';
import { Ledger } from '../../../src/enrich/docker/ledger.js';
import { dockerMetrics } from '../../../src/enrich/docker/metrics.js';
import { addressesOf, DockerWatcher } from '../../../src/enrich/docker/watcher.js';
import { FakeDocker, type EventStyle } from '../../helpers/fake-docker.js';
import { startRedis } from '../../helpers/redis.js';

const logger = pino({ level: 'silent' });
const MIN = 60_000;
const T0 = Date.UTC(2026, 10, 27, 14, 0, 0);

async function waitFor(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

t.test('addresses of every network, IPv4 and IPv6, MAC lower-cased', async (t) => {
  t.same(
    addressesOf({
      bridge: { IPAddress: '172.17.0.2', GlobalIPv6Address: 'fd00:17::2', MacAddress: '02:42:AC:11:00:02' },
      fxlab_default: { IPAddress: '172.30.0.2', MacAddress: '7e:f0:55:2f:71:b3', GlobalIPv6Address: '' },
      host: { IPAddress: '', MacAddress: '' },
    }),
    [
      { ip: '172.17.0.2', network: 'bridge', mac: '02:42:ac:11:00:02' },
      { ip: 'fd00:17::2', network: 'bridge', mac: '02:42:ac:11:00:02' },
      { ip: '172.30.0.2', network: 'fxlab_default', mac: '7e:f0:55:2f:71:b3' },
    ],
  );
  t.same(addressesOf(null), []);
});

for (const style of ['docker', 'podman'] as EventStyle[]) {
  t.test(`${style}: reuse of an address, a dockflow restart, the API going away, reconciliation`, async (t) => {
    const r = await startRedis();
    const redis = new Redis(r.url);
    let now = T0;
    const fake = await FakeDocker.start({ style, splitWrites: true, clock: () => now });
    t.teardown(async () => {
      redis.disconnect();
      await fake.dispose();
      await r.stop();
    });
    const registry = new Registry();
    const metrics = dockerMetrics(registry);
    const watch = (ledger: Ledger, host: string): DockerWatcher =>
      new DockerWatcher({ host, client: new DockerClient({ host }), ledger, logger, metrics, backoffMinMs: 20, backoffMaxMs: 100, now: () => now });
    const host = style === 'docker' ? fake.unixHost : fake.tcpHost;
    const holder = (l: Ledger, ip: string, at: number): string | undefined => l.lookup(host, ip, at)?.holding.container.name;

    const a = fake.run({ name: 'web-a', labels: { 'com.docker.compose.project': 'fx', 'com.docker.compose.service': 'web' }, networks: { bridge: { ip: '172.17.0.4', ipv6: 'fd00:17::4', mac: '02:42:ac:11:00:04' } } }, T0);
    now = T0 + MIN;
    const ledger1 = new Ledger({ redis, logger, clockSlackMs: 1000 });
    await ledger1.load();
    const w1 = watch(ledger1, host);
    w1.start();
    await w1.ready();
    t.equal(holder(ledger1, '172.17.0.4', T0 + 1), 'web-a', 'inventory: held since it started');
    t.same(ledger1.history(host, 'fd00:17::4').map((h) => h.container.labels['com.docker.compose.service']), ['web']);

    fake.stop(a, T0 + 5 * MIN);
    fake.remove(a, T0 + 5 * MIN + 1000);
    const b = fake.run({ name: 'worker-b', networks: { bridge: { ip: '172.17.0.4', mac: '02:42:ac:11:00:99' } } }, T0 + 10 * MIN);
    await waitFor(() => holder(ledger1, '172.17.0.4', T0 + 11 * MIN) === 'worker-b', 'worker-b');
    t.equal(ledger1.history(host, '172.17.0.4')[0]!.toMs, T0 + 5 * MIN, 'ended at the die event, exactly');

    // dockflow restarts; meanwhile b stops and c takes the address.
    await w1.stop();
    await ledger1.close();
    fake.stop(b, T0 + 20 * MIN);
    fake.remove(b, T0 + 20 * MIN + 500);
    fake.run({ name: 'db-c', networks: { bridge: { ip: '172.17.0.4', mac: '02:42:ac:11:00:77' } } }, T0 + 25 * MIN);
    now = T0 + 26 * MIN;
    const ledger2 = new Ledger({ redis, logger, clockSlackMs: 1000 });
    await ledger2.load();
    const w2 = watch(ledger2, host);
    w2.start();
    await w2.ready();
    await waitFor(() => holder(ledger2, '172.17.0.4', T0 + 26 * MIN) === 'db-c', 'db-c');
    // The inventory saw b gone (an observed end); the replayed events then give its exact end.
    await waitFor(() => ledger2.history(host, '172.17.0.4')[1]?.toMs === T0 + 20 * MIN, 'replayed die of b');
    t.ok(fake.requests.some((u) => u.includes('/events?since=')), 'resumed with since after the restart');
    const table: [string, string, number, string | undefined][] = [
      ['before', '172.17.0.4', T0 - MIN, undefined],
      ['a', '172.17.0.4', T0 + 2 * MIN, 'web-a'],
      ['a (IPv6)', 'fd00:0017:0000:0000:0000:0000:0000:0004', T0 + 2 * MIN, 'web-a'],
      ['between a and b', '172.17.0.4', T0 + 7 * MIN, undefined],
      ['b', '172.17.0.4', T0 + 15 * MIN, 'worker-b'],
      ['between b and c, while dockflow was down', '172.17.0.4', T0 + 22 * MIN, undefined],
      ['c', '172.17.0.4', T0 + 25 * MIN + 1, 'db-c'],
    ];
    for (const [name, ip, at, want] of table) t.equal(holder(ledger2, ip, at), want, name);
    t.equal(ledger2.history(host, '172.17.0.4')[1]!.closedBy, 'event', 'b ended exactly, from the replayed events');

    // The API goes away; a container starts while it is gone; the API comes back.
    await fake.close();
    await waitFor(() => !w2.up, 'watcher notices');
    const d = fake.run({ name: 'late-d', networks: { bridge: { ip: '172.17.0.5', mac: '02:42:ac:11:00:05' } } }, T0 + 30 * MIN);
    now = T0 + 33 * MIN;
    await fake.listen();
    await waitFor(() => w2.up && holder(ledger2, '172.17.0.5', T0 + 31 * MIN) === 'late-d', 'late-d after reconnect');
    t.equal(holder(ledger2, '172.17.0.5', T0 + 30 * MIN + 1), 'late-d', 'attributed from its start, before the reconnect');
    const reconnects = (await registry.getSingleMetric('dockflow_docker_reconnects_total')!.get()).values[0]?.value ?? 0;
    t.ok(reconnects >= 1, 'reconnects counted');

    // Explicit network connect/disconnect and rename.
    fake.connect(d, 'fx_net', { ip: '172.18.0.7', mac: '02:42:ac:12:00:07' }, T0 + 40 * MIN);
    await waitFor(() => holder(ledger2, '172.18.0.7', T0 + 41 * MIN) === 'late-d', 'connect');
    fake.disconnect(d, 'fx_net', T0 + 45 * MIN);
    await waitFor(() => ledger2.history(host, '172.18.0.7')[0]?.toMs === T0 + 45 * MIN, 'disconnect');
    fake.rename(d, 'late-d2', T0 + 50 * MIN);
    await waitFor(() => holder(ledger2, '172.17.0.5', T0 + 51 * MIN) === 'late-d2', 'rename');
    t.equal(holder(ledger2, '172.17.0.5', T0 + 49 * MIN), 'late-d', 'the old name before the rename');

    // A container that vanishes without any event is closed by reconciliation, as observed.
    fake.vanish(d);
    now = T0 + 60 * MIN;
    await w2.reconcile();
    const last = ledger2.history(host, '172.17.0.5').at(-1)!;
    t.match(last, { toMs: T0 + 60 * MIN, closedBy: 'observed' });
    t.same(ledger2.openContainerIds(host).sort(), ledger2.openContainerIds(host).filter((id) => id !== d).sort());

    // Stopped but not removed while we were not looking: the engine's FinishedAt is the exact end.
    const e = fake.run({ name: 'e', networks: { bridge: { ip: '172.17.0.6' } } }, T0 + 61 * MIN);
    await waitFor(() => holder(ledger2, '172.17.0.6', T0 + 62 * MIN) === 'e', 'e');
    await w2.stop();
    fake.stop(e, T0 + 63 * MIN);
    now = T0 + 70 * MIN;
    const w3 = watch(ledger2, host);
    await w3.reconcile();
    t.match(ledger2.history(host, '172.17.0.6')[0], { toMs: T0 + 63 * MIN, closedBy: 'event' });
    await w3.stop();
    await ledger2.close();
  });
}
