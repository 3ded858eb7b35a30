import t, { type Test } from 'tap';
import { once } from 'node:events';
import { copyFile, mkdtemp, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Reader } from 'maxmind';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { chainEnrichers, noopEnricher, type Enricher } from '../../src/enrich/enricher.js';
import { embeddedCountryDbPath, openGeoEnricher, type GeoEnricher, type GeoEnricherOptions, type GeoReloadEvent } from '../../src/enrich/geo.js';
import { DockflowError, ErrorCode } from '../../src/errors.js';
import type { Direction, FlowRecord } from '../../src/record.js';
import { fixture } from '../helpers/paths.js';

// Synthetic databases written by scripts/make-test-mmdb.pl (build epochs fixed there).
const CITY_V1 = fixture('geo', 'test-city-v1.mmdb');
const CITY_V2 = fixture('geo', 'test-city-v2.mmdb');
const ASN = fixture('geo', 'test-asn.mmdb');
const CITY_V1_EPOCH = 1700000000;
const CITY_V2_EPOCH = 1710000000;
const ASN_EPOCH = 1705000000;

function record(direction: Direction, src: string, dst: string): FlowRecord {
  return {
    '@timestamp': '2026-11-27T06:45:13.168Z',
    source: { ip: src, port: 41542 },
    destination: { ip: dst, port: 443 },
    network: { direction, transport: 'tcp' },
    iptables: {},
  };
}

interface Harness {
  geo: GeoEnricher;
  registry: Registry;
  logs: Array<Record<string, unknown>>;
  metric(name: string, labels?: Record<string, string>): Promise<number | undefined>;
}

async function open(t: Test, opts: Partial<GeoEnricherOptions>): Promise<Harness> {
  const registry = new Registry();
  const logs: Array<Record<string, unknown>> = [];
  const logger: Logger = pino({ level: 'debug' }, { write: (line: string) => logs.push(JSON.parse(line)) });
  const geo = await openGeoEnricher({ embeddedDefault: false, cacheEntries: 1000, watch: false, ...opts }, { logger, registry });
  t.teardown(() => geo.close());
  const metric = async (name: string, labels: Record<string, string> = {}): Promise<number | undefined> => {
    const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
    const values = (m as { values?: Array<{ value: number; labels: Record<string, string> }> } | undefined)?.values ?? [];
    return values.find((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))?.value;
  };
  return { geo, registry, logs, metric };
}

t.test('enriches the remote side only, by direction', async (t) => {
  const { geo } = await open(t, { cityDbPath: CITY_V1, asnDbPath: ASN });
  const gb = { country_iso_code: 'GB', country_name: 'United Kingdom', city_name: 'London', continent_code: 'EU', location: { lat: 51.5142, lon: -0.0931 } };
  const se = { country_iso_code: 'SE', country_name: 'Sweden', city_name: 'Linköping', continent_code: 'EU', location: { lat: 58.4167, lon: 15.6167 } };
  const rows: Array<{ direction: Direction; src: string; dst: string; source: object; destination: object; epoch: boolean }> = [
    { direction: 'egress', src: '172.17.0.2', dst: '81.2.69.160', source: {}, destination: { geo: gb, as: { number: 64496 } }, epoch: true },
    { direction: 'ingress', src: '89.160.20.112', dst: '172.17.0.2', source: { geo: se, as: { number: 64497 } }, destination: {}, epoch: true },
    // A remote side is never the container itself, even when the container has a public address.
    { direction: 'egress', src: '81.2.69.1', dst: '89.160.20.1', source: { geo: undefined }, destination: { geo: se }, epoch: true },
    { direction: 'internal', src: '81.2.69.1', dst: '89.160.20.1', source: { geo: undefined }, destination: { geo: undefined }, epoch: false },
    { direction: 'container-to-host', src: '81.2.69.1', dst: '89.160.20.1', source: { geo: undefined }, destination: { geo: undefined }, epoch: false },
    { direction: 'host-to-container', src: '81.2.69.1', dst: '89.160.20.1', source: { geo: undefined }, destination: { geo: undefined }, epoch: false },
    { direction: 'other', src: '81.2.69.1', dst: '89.160.20.1', source: { geo: gb }, destination: { geo: se }, epoch: true },
    { direction: 'other', src: '10.0.0.5', dst: '89.160.20.1', source: { address_class: 'private', geo: undefined }, destination: { geo: se }, epoch: true },
    // A container's own private address is not the remote side, so it is not even classified.
    { direction: 'egress', src: '172.17.0.2', dst: '198.51.100.2', source: { address_class: undefined }, destination: { address_class: 'documentation', geo: undefined }, epoch: false },
  ];
  for (const row of rows) {
    const r = record(row.direction, row.src, row.dst);
    geo.enrich(r);
    const name = `${row.direction} ${row.src} → ${row.dst}`;
    t.match(r.source, row.source, `${name}: source`);
    t.match(r.destination, row.destination, `${name}: destination`);
    t.equal(r.dockflow?.geo_build_epoch !== undefined, row.epoch, `${name}: build epoch noted`);
  }
});

t.test('City and ASN fixtures give their known answers', async (t) => {
  const { geo, metric } = await open(t, { cityDbPath: CITY_V1, asnDbPath: ASN });
  const rows: Array<{ ip: string; geo?: object; as?: object }> = [
    {
      ip: '81.2.69.160',
      geo: { country_iso_code: 'GB', country_name: 'United Kingdom', city_name: 'London', continent_code: 'EU', location: { lat: 51.5142, lon: -0.0931 } },
      as: { number: 64496, organization: { name: 'Synthetic Carrier GB' } },
    },
    {
      ip: '216.160.83.56',
      geo: { country_iso_code: 'US', country_name: 'United States', city_name: 'Milton', continent_code: 'NA', location: { lat: 47.2513, lon: -122.3149 } },
    },
    { ip: '12.81.92.1', as: { number: 64498, organization: { name: 'Synthetic Carrier Without Geo' } } },
    {
      ip: '2001:218::1',
      geo: { country_iso_code: 'JP', country_name: 'Japan', continent_code: 'AS' },
      as: { number: 65536, organization: { name: 'Synthetic Carrier JP' } },
    },
    // The kernel prints IPv6 fully expanded.
    {
      ip: '2001:0218:0000:0000:0000:0000:0000:0001',
      geo: { country_iso_code: 'JP', country_name: 'Japan', continent_code: 'AS' },
      as: { number: 65536, organization: { name: 'Synthetic Carrier JP' } },
    },
    {
      ip: '2a02:ec80:0000:0000:0000:0000:0000:0001',
      geo: { country_iso_code: 'SE', country_name: 'Sweden', city_name: 'Stockholm', continent_code: 'EU', location: { lat: 59.3294, lon: 18.0686 } },
    },
    { ip: '8.8.8.8' },
  ];
  for (const row of rows) {
    const r = record('egress', '172.17.0.2', row.ip);
    geo.enrich(r);
    t.same(r.destination, { ip: row.ip, port: 443, ...(row.geo && { geo: row.geo }), ...(row.as && { as: row.as }) }, row.ip);
    // Even a miss says which builds were asked.
    t.same(r.dockflow?.geo_build_epoch, { city: CITY_V1_EPOCH, asn: ASN_EPOCH }, `${row.ip}: build epochs`);
  }
  t.equal(await metric('dockflow_geoip_lookups_total', { result: 'hit' }), 6);
  t.equal(await metric('dockflow_geoip_lookups_total', { result: 'miss' }), 1);
  t.equal(await metric('dockflow_geoip_build_epoch_seconds', { db: 'city' }), CITY_V1_EPOCH);
  t.equal(await metric('dockflow_geoip_build_epoch_seconds', { db: 'asn' }), ASN_EPOCH);
  t.same(
    geo.databases.map((d) => [d.db, d.databaseType, d.buildEpoch]),
    [
      ['city', 'Dockflow-Test-City', CITY_V1_EPOCH],
      ['asn', 'Dockflow-Test-ASN', ASN_EPOCH],
    ],
  );
});

t.test('special-purpose addresses are classified and never looked up', async (t) => {
  const { geo, metric } = await open(t, { cityDbPath: CITY_V1, asnDbPath: ASN });
  const rows: Array<[string, string]> = [
    ['198.51.100.2', 'documentation'],
    ['2001:0db8:0000:0000:0000:0000:0000:0002', 'documentation'],
    ['10.1.2.3', 'private'],
    ['100.64.1.1', 'cgnat'],
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['224.0.0.251', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['fd00:0017:0000:0000:0000:0000:0000:0002', 'unique-local'],
    ['fe80::1', 'link-local'],
    ['ff02::fb', 'multicast'],
    ['::ffff:81.2.69.160', 'ipv4-mapped'], // the fixture would answer London for this one if it were looked up
    ['not-an-ip', 'invalid'],
  ];
  for (const [ip, cls] of rows) {
    const r = record('egress', '172.17.0.2', ip);
    geo.enrich(r);
    t.same(r.destination, { ip, port: 443, address_class: cls }, ip);
    t.equal(r.dockflow, undefined, `${ip}: no build epoch, nothing was asked`);
  }
  t.equal(await metric('dockflow_geoip_lookups_total', { result: 'special' }), rows.length);
  for (const result of ['hit', 'miss', 'cache-hit']) t.equal(await metric('dockflow_geoip_lookups_total', { result }), 0, result);
});

t.test('embedded CC0 default answers with countries out of the box', async (t) => {
  const { geo } = await open(t, { embeddedDefault: true });
  const epoch = Math.floor(new Reader(await readFile(embeddedCountryDbPath())).metadata.buildEpoch.getTime() / 1000);
  // Registry-allocated blocks of long-lived operators, whose country does not move between builds.
  const rows: Array<[string, string, string]> = [
    ['8.8.8.8', 'US', 'United States'],
    ['2001:4860:4860::8888', 'US', 'United States'],
    ['193.0.14.129', 'NL', 'Netherlands'], // K-root, RIPE NCC
  ];
  for (const [ip, iso, name] of rows) {
    const r = record('egress', '172.17.0.2', ip);
    geo.enrich(r);
    t.same(r.destination.geo, { country_iso_code: iso, country_name: name }, ip);
    t.equal(r.destination.as, undefined, `${ip}: no ASN database`);
    t.same(r.dockflow?.geo_build_epoch, { country: epoch }, `${ip}: build epoch`);
  }
  t.same(
    geo.databases.map((d) => [d.db, d.path, d.watched]),
    [['country', embeddedCountryDbPath(), false]],
  );
});

t.test('an IPv4-only country database answers IPv4 and misses IPv6 without walking its tree', async (t) => {
  // The same npm package ships an IPv4-only file beside the combined one.
  const path = embeddedCountryDbPath().replace(/\.mmdb$/, '-ipv4.mmdb');
  const { geo, metric } = await open(t, { countryDbPath: path });
  const v4 = record('egress', '172.17.0.2', '8.8.8.8');
  const v6 = record('egress', 'fd00:17::2', '2001:4860:4860::8888');
  geo.enrich(v4);
  geo.enrich(v6);
  t.same(v4.destination.geo, { country_iso_code: 'US', country_name: 'United States' });
  t.equal(v6.destination.geo, undefined);
  t.equal(await metric('dockflow_geoip_lookups_total', { result: 'miss' }), 1);
  t.equal(await metric('dockflow_geoip_lookups_total', { result: 'error' }), 0);
});

t.test('nothing configured: only the special-purpose class', async (t) => {
  const { geo } = await open(t, {});
  const pub = record('egress', '172.17.0.2', '8.8.8.8');
  geo.enrich(pub);
  t.same(pub.destination, { ip: '8.8.8.8', port: 443 });
  t.equal(pub.dockflow, undefined);
  const priv = record('egress', '172.17.0.2', '192.168.1.1');
  geo.enrich(priv);
  t.equal(priv.destination.address_class, 'private');
});

t.test('the answer cache is bounded and serves repeats', async (t) => {
  const rows: Array<{ cacheEntries: number; ips: string[]; hit: number; cacheHit: number; size: number }> = [
    { cacheEntries: 1000, ips: ['81.2.69.1', '81.2.69.1', '81.2.69.1', '8.8.8.8', '8.8.8.8'], hit: 1, cacheHit: 3, size: 2 },
    // Four entries in two generations of two: .1 is used again and survives the turnover, .2 is not and goes.
    { cacheEntries: 4, ips: ['81.2.69.1', '81.2.69.2', '81.2.69.1', '81.2.69.3', '81.2.69.2', '81.2.69.1'], hit: 4, cacheHit: 2, size: 2 },
    // Bounded: many distinct addresses never hold more than the limit.
    { cacheEntries: 4, ips: Array.from({ length: 100 }, (_, i) => `81.2.69.${i + 1}`), hit: 100, cacheHit: 0, size: 2 },
    { cacheEntries: 0, ips: ['81.2.69.1', '81.2.69.1', '81.2.69.1'], hit: 3, cacheHit: 0, size: 0 },
  ];
  for (const row of rows) {
    const { geo, metric } = await open(t, { cityDbPath: CITY_V1, cacheEntries: row.cacheEntries });
    for (const ip of row.ips) {
      const r = record('egress', '172.17.0.2', ip);
      geo.enrich(r);
      if (ip.startsWith('81.2.69.')) t.equal(r.destination.geo?.city_name, 'London', `entries=${row.cacheEntries} ${ip}`);
    }
    const name = `cacheEntries=${row.cacheEntries}`;
    t.equal(await metric('dockflow_geoip_lookups_total', { result: 'hit' }), row.hit, `${name}: hits`);
    t.equal(await metric('dockflow_geoip_lookups_total', { result: 'cache-hit' }), row.cacheHit, `${name}: cache hits`);
    t.equal(await metric('dockflow_geoip_cache_entries'), row.size, `${name}: cache size`);
    await geo.close();
  }
});

t.test('cached answers are shared read-only', async (t) => {
  const { geo } = await open(t, { cityDbPath: CITY_V1 });
  const a = record('egress', '172.17.0.2', '81.2.69.160');
  const b = record('egress', '172.17.0.2', '81.2.69.160');
  geo.enrich(a);
  geo.enrich(b);
  t.equal(a.destination.geo, b.destination.geo);
  t.throws(() => {
    (a.destination.geo as { city_name: string }).city_name = 'Elsewhere';
  }, TypeError);
  t.equal(b.destination.geo?.city_name, 'London');
});

async function watchedCity(t: Test): Promise<Harness & { dir: string; path: string; replace(content: Buffer | null): Promise<GeoReloadEvent> }> {
  const dir = await mkdtemp(join(tmpdir(), 'dockflow-geo-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'GeoLite2-City.mmdb');
  await copyFile(CITY_V1, path);
  const h = await open(t, { cityDbPath: path, asnDbPath: ASN, watch: true, reloadDebounceMs: 20 });
  // As geoipupdate does: write a temporary file beside the old one, then rename it over (null: delete the file).
  const replace = async (content: Buffer | null): Promise<GeoReloadEvent> => {
    const reloaded = once(h.geo, 'reload') as Promise<[GeoReloadEvent]>;
    if (content === null) {
      await unlink(path);
    } else {
      const tmp = join(dir, 'GeoLite2-City.mmdb.tmp');
      await writeFile(tmp, content);
      await rename(tmp, path);
    }
    return (await reloaded)[0];
  };
  return { ...h, dir, path, replace };
}

const cityOf = (geo: Enricher, ip = '81.2.69.160'): string | undefined => {
  const r = record('egress', '172.17.0.2', ip);
  geo.enrich(r);
  return r.destination.geo?.city_name;
};

t.test('a database replaced by rename is reloaded without restart', async (t) => {
  const { geo, replace, metric, logs } = await watchedCity(t);
  t.equal(cityOf(geo), 'London'); // now cached
  const ev = await replace(await readFile(CITY_V2));
  t.match(ev, { db: 'city', ok: true, buildEpoch: CITY_V2_EPOCH });
  t.equal(cityOf(geo), 'Manchester', 'new answers, not the cached old one');
  const r = record('egress', '172.17.0.2', '81.2.69.160');
  geo.enrich(r);
  t.same(r.dockflow?.geo_build_epoch, { city: CITY_V2_EPOCH, asn: ASN_EPOCH });
  t.equal(await metric('dockflow_geoip_reloads_total', { db: 'city', result: 'ok' }), 1);
  t.equal(await metric('dockflow_geoip_build_epoch_seconds', { db: 'city' }), CITY_V2_EPOCH);
  t.ok(logs.some((l) => l.msg === 'GeoIP database reloaded' && l.buildEpoch === CITY_V2_EPOCH));
});

t.test('a broken replacement keeps the old database in service, says why and counts it', async (t) => {
  const { geo, replace, metric, logs } = await watchedCity(t);
  const good = await readFile(CITY_V1);
  const rows: Array<{ name: string; content: Buffer | null; why: RegExp }> = [
    { name: 'truncated', content: good.subarray(0, Math.floor(good.length / 2)), why: /truncated/ },
    { name: 'garbage', content: Buffer.from('this is not a MaxMind database\n'.repeat(100)), why: /not a MaxMind DB/ },
    { name: 'empty', content: Buffer.alloc(0), why: /not a MaxMind DB/ },
    { name: 'gzip', content: gzipSync(good), why: /gzip/ },
    { name: 'ASN file in the City place', content: await readFile(ASN), why: /is an ASN database/ },
    { name: 'file removed', content: null, why: /cannot read/ },
  ];
  let failures = 0;
  for (const row of rows) {
    const ev = await replace(row.content);
    failures++;
    t.match(ev, { db: 'city', ok: false, buildEpoch: CITY_V1_EPOCH, error: row.why }, `${row.name}: event`);
    t.equal(cityOf(geo), 'London', `${row.name}: old answers stay`);
    t.equal(await metric('dockflow_geoip_reloads_total', { db: 'city', result: 'failed' }), failures, `${row.name}: counted`);
    const warned = logs.filter((l) => l.msg === 'GeoIP database reload failed; the previous database stays in service');
    t.match(warned.at(-1), { db: 'city', err: row.why }, `${row.name}: logged with the reason`);
  }
  // A good file afterwards is picked up again.
  const ev = await replace(await readFile(CITY_V2));
  t.equal(ev.ok, true);
  t.equal(cityOf(geo), 'Manchester');
});

t.test('a missing or wrong configured file fails at open with GEOIP_DB_INVALID', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dockflow-geo-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const garbage = join(dir, 'garbage.mmdb');
  await writeFile(garbage, 'nope');
  const missing = join(dir, 'GeoLite2-City.mmdb');
  const rows: Array<{ opts: Partial<GeoEnricherOptions>; why: RegExp }> = [
    { opts: { cityDbPath: missing }, why: /GeoIP city database .*GeoLite2-City\.mmdb: cannot read it \(ENOENT/ },
    { opts: { countryDbPath: missing, embeddedDefault: true }, why: /GeoIP country database .*: cannot read/ },
    { opts: { cityDbPath: CITY_V1, asnDbPath: missing }, why: /GeoIP asn database .*: cannot read/ },
    { opts: { cityDbPath: garbage }, why: /not a MaxMind DB file, or truncated/ },
    { opts: { asnDbPath: CITY_V1 }, why: /"Dockflow-Test-City" is not an ASN database/ },
    { opts: { cityDbPath: ASN }, why: /"Dockflow-Test-ASN" is an ASN database/ },
  ];
  for (const row of rows) {
    const logger = pino({ level: 'silent' });
    const err = await openGeoEnricher({ embeddedDefault: false, cacheEntries: 10, watch: true, ...row.opts }, { logger, registry: new Registry() }).then(
      (g) => g.close(),
      (e: unknown) => e,
    );
    t.ok(err instanceof DockflowError, JSON.stringify(row.opts));
    t.match(err, { code: ErrorCode.GEOIP_DB_INVALID, message: row.why }, JSON.stringify(row.opts));
  }
});

t.test('chainEnrichers runs in order and closes every step', async (t) => {
  const { geo } = await open(t, { cityDbPath: CITY_V1 });
  const seen: string[] = [];
  const closed: string[] = [];
  const fake = (name: string, closeFails = false): Enricher => ({
    enrich(r) {
      seen.push(`${name}:${r.destination.geo?.city_name ?? '-'}`);
    },
    close() {
      closed.push(name);
      if (closeFails) throw new Error(`${name} close failed`);
    },
  });
  const chain = chainEnrichers([fake('before'), geo, fake('after', true), noopEnricher]);
  chain.enrich(record('egress', '172.17.0.2', '81.2.69.160'));
  t.same(seen, ['before:-', 'after:London']);
  await t.rejects(async () => chain.close?.(), /after close failed/);
  t.same(closed, ['before', 'after']);
  t.equal(chainEnrichers([]), noopEnricher);
  t.equal(chainEnrichers([geo]), geo);
});
