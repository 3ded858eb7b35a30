import t, { type Test } from 'tap';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { containersRoutes } from '../../src/api/containers.js';
import { AttributionEnricher, startAttribution } from '../../src/enrich/attribution.js';
import { Ledger } from '../../src/enrich/docker/ledger.js';
import type { Direction, FlowRecord } from '../../src/record.js';
import { FakeDocker } from '../helpers/fake-docker.js';
import { startRedis } from '../helpers/redis.js';

const logger = pino({ level: 'silent' });
const MIN = 60_000;
const T0 = Date.UTC(2026, 10, 27, 14, 0, 0);

/** Shaped like the parser's records of the corpus lines (docker0, PHYSIN=fxveth…, MAC of the container). */
function rec(direction: Direction, at: number, src: string, dst: string, extra: { host?: string; srcMac?: string; physin?: string; physout?: string } = {}): FlowRecord {
  const r: FlowRecord = {
    '@timestamp': new Date(at).toISOString(),
    host: { name: extra.host ?? 'dockhost1' },
    source: { ip: src, ...(extra.srcMac ? { mac: extra.srcMac } : {}) },
    destination: { ip: dst },
    network: { direction, transport: 'tcp' },
    iptables: {},
  };
  if (extra.physin) r.iptables.physin = extra.physin;
  if (extra.physout) r.iptables.physout = extra.physout;
  return r;
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

/** An empty ledger on a redis-server of its own, stopped when the test ends. */
async function freshLedger(t: Test): Promise<Ledger> {
  const r = await startRedis();
  const redis = new Redis(r.url);
  t.teardown(async () => {
    redis.disconnect();
    await r.stop();
  });
  return new Ledger({ redis, logger });
}

t.test('the container side per direction, as of the record time', async (t) => {
  const ledger = await freshLedger(t);
  const meta = (id: string) => ({ id, name: id, image: `${id}:1`, labels: { 'com.docker.compose.service': id } });
  // The address reused with the same veth name and a new MAC: time (and the MAC) must tell them apart.
  ledger.open('docker1', meta('old'), { ip: '172.17.0.2', mac: '02:42:ac:11:00:02' }, T0);
  ledger.release('docker1', 'old', T0 + 5 * MIN);
  ledger.open('docker1', meta('new'), { ip: '172.17.0.2', mac: '02:42:ac:11:00:22' }, T0 + 10 * MIN);
  ledger.open('docker1', meta('peer'), { ip: '172.17.0.3' }, T0);
  ledger.open('docker1', meta('v6'), { ip: 'fd00:17::2' }, T0);
  const registry = new Registry();
  const enricher = new AttributionEnricher({ ledger, registry, hostMap: { dockhost1: 'docker1' } });

  const cases: { name: string; r: FlowRecord; container?: unknown; peer?: unknown }[] = [
    { name: 'egress, old holder', r: rec('egress', T0 + MIN, '172.17.0.2', '198.51.100.2', { physin: 'fxveth6c17be9' }), container: { id: 'old', name: 'old', image: { name: 'old:1' }, labels: { 'com.docker.compose.service': 'old' }, match: 'ip' } },
    { name: 'egress between holders', r: rec('egress', T0 + 7 * MIN, '172.17.0.2', '198.51.100.2', { physin: 'fxveth6c17be9' }), container: { unattributed: true } },
    { name: 'egress, new holder with its MAC (same veth name)', r: rec('egress', T0 + 11 * MIN, '172.17.0.2', '198.51.100.2', { physin: 'fxveth6c17be9', srcMac: '02:42:ac:11:00:22' }), container: { id: 'new', match: 'ip+mac' } },
    { name: 'a late line (timestamp in the past) gets the holder of then', r: rec('container-to-host', T0 + 2 * MIN, '172.17.0.2', '172.17.0.1'), container: { id: 'old' } },
    { name: 'ingress: destination side', r: rec('ingress', T0 + 12 * MIN, '198.51.100.2', '172.17.0.2'), container: { id: 'new', match: 'ip' } },
    { name: 'host-to-container', r: rec('host-to-container', T0 + 3 * MIN, '172.17.0.1', '172.17.0.2'), container: { id: 'old' } },
    { name: 'internal: both sides', r: rec('internal', T0 + 12 * MIN, '172.17.0.3', '172.17.0.2', { physin: 'fxveth1', physout: 'fxveth2' }), container: { id: 'peer' }, peer: { id: 'new' } },
    { name: 'IPv6 as the kernel prints it', r: rec('egress', T0 + MIN, 'fd00:0017:0000:0000:0000:0000:0000:0002', '2001:db8::2'), container: { id: 'v6' } },
    { name: 'unmapped syslog host, no default', r: rec('egress', T0 + MIN, '172.17.0.2', '198.51.100.2', { host: 'elsewhere' }), container: { unattributed: true } },
    { name: 'internal on an unmapped host: both flagged', r: rec('internal', T0 + MIN, '172.17.0.3', '172.17.0.2', { host: 'elsewhere' }), container: { unattributed: true }, peer: { unattributed: true } },
    { name: 'a timestamp with an offset and microseconds', r: { ...rec('egress', T0, '172.17.0.2', '1.1.1.1'), '@timestamp': '2026-11-27T15:01:00.123456+01:00' }, container: { id: 'old' } },
    { name: 'bad timestamp', r: { ...rec('egress', T0, '172.17.0.2', '1.1.1.1'), '@timestamp': 'garbage' }, container: { unattributed: true } },
    { name: 'no container side', r: rec('other', T0 + MIN, '10.0.0.1', '10.0.0.2'), container: undefined },
  ];
  for (const c of cases) {
    enricher.enrich(c.r);
    if (c.container === undefined) t.equal(c.r.container, undefined, c.name);
    else t.match(c.r.container, c.container, c.name);
    if (c.peer) t.match(c.r.peer_container, c.peer, `${c.name} (peer)`);
    if (c.container && (c.container as { unattributed?: boolean }).unattributed) t.same(Object.keys(c.r.container!), ['unattributed'], `${c.name}: nothing else`);
  }
  t.equal(ledger.history('docker1', '172.17.0.2')[0]!.physdev, 'fxveth6c17be9', 'the veth is learned from an unambiguous line');
  const text = await registry.metrics();
  t.match(text, /dockflow_attributed_total\{match="ip\+mac"\} 1/);
  t.match(text, /dockflow_unattributed_total\{reason="unmapped-host"\} 3/);
  t.match(text, /dockflow_unattributed_total\{reason="no-holder"\} 1/);

  const fallback = new AttributionEnricher({ ledger, registry: new Registry(), defaultHost: 'docker1' });
  const r2 = rec('egress', T0 + MIN, '172.17.0.2', '1.1.1.1', { host: 'whatever' });
  fallback.enrich(r2);
  t.match(r2.container, { id: 'old' }, 'an unmapped host uses the default endpoint');
});

t.test('records of one container share one frozen answer per kind of match; a rename gives a new one', async (t) => {
  const ledger = await freshLedger(t);
  ledger.open('docker1', { id: 'web', name: 'web-1', image: 'nginx:1', labels: { 'com.docker.compose.service': 'web' } }, { ip: '172.17.0.2', mac: '02:42:ac:11:00:02' }, T0);
  const enricher = new AttributionEnricher({ ledger, registry: new Registry(), hostMap: { dockhost1: 'docker1' } });
  const named = (at: number, srcMac?: string): FlowRecord => {
    const record = rec('egress', at, '172.17.0.2', '198.51.100.2', srcMac ? { srcMac } : {});
    enricher.enrich(record);
    return record;
  };
  const first = named(T0 + MIN).container!;
  t.same(first, { id: 'web', name: 'web-1', image: { name: 'nginx:1' }, labels: { 'com.docker.compose.service': 'web' }, match: 'ip' });
  t.equal(named(T0 + 2 * MIN).container, first, 'the same object for the next record');
  t.ok(Object.isFrozen(first) && Object.isFrozen(first.image) && Object.isFrozen(first.labels), 'frozen all the way down');
  const byMac = named(T0 + 2 * MIN, '02:42:ac:11:00:02').container!;
  t.not(byMac, first);
  t.equal(byMac.match, 'ip+mac');
  ledger.rename('docker1', 'web', 'web-renamed', T0 + 3 * MIN);
  t.equal(named(T0 + 4 * MIN).container!.name, 'web-renamed', 'a rename is seen at once');
  t.equal(named(T0 + 2 * MIN).container, first, 'records from before it keep the old name');
  const unattributed = rec('egress', T0 + MIN, '172.17.0.9', '198.51.100.2');
  enricher.enrich(unattributed);
  t.ok(Object.isFrozen(unattributed.container), 'the unattributed flag is shared too');
});

t.test('two Docker hosts with the same 172.17.0.2, started from config, and the HTTP API', async (t) => {
  const r = await startRedis();
  const redis = new Redis(r.url);
  let now = T0;
  const one = await FakeDocker.start({ style: 'docker', clock: () => now });
  const two = await FakeDocker.start({ style: 'podman', clock: () => now });
  t.teardown(async () => {
    redis.disconnect();
    await one.dispose();
    await two.dispose();
    await r.stop();
  });
  one.run({ name: 'api-1', image: 'api:7', networks: { bridge: { ip: '172.17.0.2', mac: '02:42:ac:11:00:02' } } }, T0);
  const batch = two.run({ name: 'batch-2', image: 'batch:3', labels: { 'com.docker.compose.project': 'jobs' }, networks: { podman: { ip: '172.17.0.2', mac: '8e:11:22:33:44:55' } } }, T0 + MIN);
  now = T0 + 2 * MIN;
  const registry = new Registry();
  const att = await startAttribution({
    redis,
    logger,
    registry,
    endpoints: { dockhost1: one.unixHost, dockhost2: two.tcpHost },
    env: {},
  });
  t.teardown(() => att.enricher.close());
  await Promise.all(att.watchers.map((w) => w.ready()));
  const records = [rec('egress', T0 + 90_000, '172.17.0.2', '198.51.100.2'), rec('egress', T0 + 90_000, '172.17.0.2', '198.51.100.2', { host: 'dockhost2' })];
  for (const x of records) att.enricher.enrich(x);
  t.match(records[0]!.container, { name: 'api-1', image: { name: 'api:7' } });
  t.match(records[1]!.container, { name: 'batch-2', image: { name: 'batch:3' }, labels: { 'com.docker.compose.project': 'jobs' } });
  t.match(await registry.metrics(), new RegExp(`dockflow_docker_api_up\\{host="${two.tcpHost}"\\} 1`));

  two.stop(batch, T0 + 3 * MIN);
  await waitFor(() => att.ledger.openContainerIds(two.tcpHost).length === 0, 'batch-2 stopped');

  const app = Fastify();
  await app.register(containersRoutes, { ledger: att.ledger, hostMap: { dockhost1: one.unixHost, dockhost2: two.tcpHost } });
  t.teardown(() => app.close());
  const list = await app.inject({ method: 'GET', url: '/api/containers?host=dockhost2' });
  t.equal(list.statusCode, 200);
  t.match(list.json(), {
    hosts: [{ host: two.tcpHost, containers: [{ name: 'batch-2', labels: { 'com.docker.compose.project': 'jobs' }, addresses: [{ ip: '172.17.0.2', mac: '8e:11:22:33:44:55', from: new Date(T0 + MIN).toISOString(), to: new Date(T0 + 3 * MIN).toISOString(), end: 'event' }] }] }],
  });
  const who = await app.inject({ method: 'GET', url: `/api/containers/who?ip=172.17.0.2&at=${encodeURIComponent(new Date(T0 + 90_000).toISOString())}` });
  t.same(
    who.json().matches.map((m: { container: { name: string } }) => m.container.name).sort(),
    ['api-1', 'batch-2'],
    'without host=, every host answers',
  );
  const whoLater = await app.inject({ method: 'GET', url: `/api/containers/who?ip=172.17.0.2&at=${T0 + 10 * MIN}&host=dockhost2` });
  t.same(whoLater.json().matches, [], 'nobody on host 2 after batch-2 stopped');
  t.equal((await app.inject({ method: 'GET', url: '/api/containers/who?ip=172.17.0.2&at=yesterday' })).statusCode, 400);
  t.equal((await app.inject({ method: 'GET', url: '/api/containers/who' })).statusCode, 400, 'ip is required');
});
