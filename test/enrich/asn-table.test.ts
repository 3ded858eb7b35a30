import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import t from 'tap';
import { ASN_TABLE_FILE, convertAsnCsv, openAsnTable, readAsnTable, versionEpoch, type AsnSource } from '../../src/enrich/asn-table.js';
import { EMBEDDED_ASN_KEY, openGeoEnricher } from '../../src/enrich/geo.js';
import type { FlowRecord } from '../../src/record.js';
import { fixture } from '../helpers/paths.js';
import { tempDir } from '../helpers/temp.js';

const SOURCE: AsnSource = { dir: fixture('geo', 'asn-csv'), version: '2.3.2026061719' };
const EPOCH = Date.UTC(2026, 5, 17, 19) / 1000;
const silent = pino({ level: 'silent' });

t.test('the converted table answers as the CSV rows say', async (t) => {
  const table = await convertAsnCsv(SOURCE, join(tempDir(t, 'asn'), ASN_TABLE_FILE));
  t.equal(table.v4Ranges, 10, 'the two rows that are not ranges are skipped');
  t.equal(table.v6Ranges, 6);
  t.equal(table.buildEpoch, EPOCH);
  const cases: Array<[string, number | undefined, string | undefined]> = [
    ['1.1.1.1', 13335, 'Cloudflare, Inc.'],
    ['1.1.1.0', 13335, 'Cloudflare, Inc.'],
    ['1.1.1.255', 13335, 'Cloudflare, Inc.'],
    ['1.1.2.0', undefined, undefined],
    ['8.8.8.8', 15169, 'Google LLC'],
    ['81.2.69.143', 20712, 'Andrews & Arnold Ltd'],
    ['195.98.40.1', 8371, 'PJSC "Vimpelcom"'],
    ['195.98.127.255', 15557, 'Societe Francaise Du Radiotelephone - SFR SA'],
    ['0.0.0.0', undefined, undefined],
    ['255.255.255.255', undefined, undefined],
    ['2001:4860:4801::8888', 15169, 'Google LLC'],
    ['2001:4860:4860::8888', undefined, undefined],
    ['2001:4860:4805:1::1', 43515, 'Google Ireland Limited'],
    ['2606:4700:10::6814:d', 13335, 'Cloudflare, Inc.'],
    ['2606:4700:1:ffff:ffff:ffff:ffff:ffff', 13335, 'Cloudflare, Inc.'],
    ['2606:4700:2::', undefined, undefined],
    ['::ffff:1.1.1.1', undefined, undefined],
    ['not an address', undefined, undefined],
    ['1.1.1', undefined, undefined],
    ['1:2:3', undefined, undefined],
  ];
  for (const [ip, number, name] of cases) {
    const as = table.lookup(ip);
    t.same(as === undefined ? undefined : [as.number, as.organization?.name], number === undefined ? undefined : [number, name], ip);
  }
  t.equal(table.lookup('1.1.1.1'), table.lookup('1.1.1.2'), 'one frozen answer per organisation');
  t.ok(Object.isFrozen(table.lookup('8.8.8.8')));
});

t.test('the cached file is reused for its version and rebuilt otherwise', async (t) => {
  const dir = tempDir(t, 'asn');
  const path = join(dir, ASN_TABLE_FILE);
  t.equal(await readAsnTable(path, SOURCE.version), undefined, 'no file yet');
  await openAsnTable(SOURCE, dir);
  const first = await readFile(path);
  t.ok(await readAsnTable(path, SOURCE.version), 'read back');
  t.equal(await readAsnTable(path, '2.3.2027010100'), undefined, 'another package version does not match');
  const newer = await openAsnTable({ ...SOURCE, version: '2.3.2027010100' }, dir);
  t.equal(newer.buildEpoch, Date.UTC(2027, 0, 1) / 1000, 'rebuilt for the new version');
  for (const broken of [first.subarray(0, first.length - 1), Buffer.from('garbage'), Buffer.alloc(0)]) {
    await writeFile(path, broken);
    t.equal(await readAsnTable(path), undefined, `a broken file (${broken.length} bytes) is not a table`);
    t.equal((await openAsnTable(SOURCE, dir)).lookup('9.9.9.9')?.number, 19281, 'and is rebuilt');
  }
  t.equal(versionEpoch('1.0.0'), 0);
});

const egress = (dst: string): FlowRecord => ({
  '@timestamp': '2026-11-27T06:45:13.168Z',
  source: { ip: '172.17.0.2', port: 41542 },
  destination: { ip: dst, port: 443 },
  network: { direction: 'egress', transport: 'tcp' },
  iptables: {},
});

t.test('with nothing configured, records get AS number and name, and the database stamp', async (t) => {
  const geo = await openGeoEnricher(
    { embeddedDefault: true, embeddedAsn: { cacheDir: tempDir(t, 'asn'), source: SOURCE }, cacheEntries: 100, watch: false },
    { logger: silent, registry: new Registry() },
  );
  t.teardown(() => geo.close());
  const before = egress('8.8.8.8');
  geo.enrich(before);
  t.equal(await geo.asnLoading, true);
  const r = egress('8.8.8.8');
  geo.enrich(r);
  t.same(r.destination.as, { number: 15169, organization: { name: 'Google LLC' } });
  t.equal(r.dockflow?.geo_build_epoch?.[EMBEDDED_ASN_KEY], EPOCH);
  t.ok(r.destination.geo?.country_iso_code, 'the country database answers too');
  t.match(geo.databases, [{ db: 'country' }, { db: 'asn', databaseType: /ip-location-db\/asn 2\.3\.2026061719/, buildEpoch: EPOCH }]);
  const priv = egress('10.1.2.3');
  geo.enrich(priv);
  t.equal(priv.destination.as, undefined, 'special-purpose addresses are not looked up');
});

t.test('an ASN mmdb, when given, wins over the embedded data', async (t) => {
  const geo = await openGeoEnricher(
    { asnDbPath: fixture('geo', 'test-asn.mmdb'), embeddedDefault: false, embeddedAsn: { cacheDir: tempDir(t, 'asn'), source: SOURCE }, cacheEntries: 100, watch: false },
    { logger: silent, registry: new Registry() },
  );
  t.teardown(() => geo.close());
  t.equal(await geo.asnLoading, false, 'the embedded table is not even loaded');
  const r = egress('8.8.8.8');
  geo.enrich(r);
  t.equal(r.dockflow?.geo_build_epoch?.[EMBEDDED_ASN_KEY], undefined);
  t.ok(r.dockflow?.geo_build_epoch?.asn, 'the mmdb stamps the record');
});

t.test('a source that cannot be converted leaves records without AS, logged', async (t) => {
  const logs: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (s: string) => logs.push(s) });
  const geo = await openGeoEnricher(
    { embeddedDefault: false, embeddedAsn: { cacheDir: tempDir(t, 'asn'), source: { dir: '/nonexistent', version: '1' } }, cacheEntries: 100, watch: false },
    { logger, registry: new Registry() },
  );
  t.teardown(() => geo.close());
  t.equal(await geo.asnLoading, false);
  const r = egress('8.8.8.8');
  geo.enrich(r);
  t.equal(r.destination.as, undefined);
  t.match(logs.join(''), /embedded AS database could not be loaded/);
});

t.test('closing during a conversion stops it', async (t) => {
  const dir = tempDir(t, 'asn');
  const geo = await openGeoEnricher(
    { embeddedDefault: false, embeddedAsn: { cacheDir: dir, source: SOURCE }, cacheEntries: 100, watch: false },
    { logger: silent, registry: new Registry() },
  );
  await geo.close();
  t.equal(await geo.asnLoading, false);
  t.equal(await readAsnTable(join(dir, ASN_TABLE_FILE)), undefined, 'no table written');
});
