import { readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import t, { type Test } from 'tap';
import { openGeoEnricher } from '../../src/enrich/geo.js';
import type { Endpoint, FlowRecord } from '../../src/record.js';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { CONTEXT_FIELD, decodeEntry, decodeRecord, encodeContext, encodeRecord, MESSAGE_FIELD, RECORD_FIELD } from '../../src/store/encode.js';
import { FORMAT_FILES, messages, SCENARIOS } from '../fixtures/syslog/corpus.js';
import { fixture } from '../helpers/paths.js';
import { plain, realRecords, silent } from './records.js';

t.test('every real record survives encode/decode unchanged', async (t) => {
  t.ok(realRecords().length >= 50, 'the fixture parses');
  // Absent fields are `undefined` in a record and simply missing once stored.
  for (const r of realRecords()) t.strictSame(decodeEntry([RECORD_FIELD, encodeRecord(r)]), plain(r));
});

t.test('entries that are not records decode to undefined', async (t) => {
  const good = encodeRecord(realRecords()[0]!);
  const cases: Array<[string, string[]]> = [
    ['no fields', []],
    ['other field only', ['x', good]],
    ['field without value', [RECORD_FIELD]],
    ['not JSON', [RECORD_FIELD, '{"@timestamp":']],
    ['JSON but not a record', [RECORD_FIELD, '{"a":1}']],
    ['no direction', [RECORD_FIELD, '{"@timestamp":"2026-01-01T00:00:00Z","network":{}}']],
    ['null', [RECORD_FIELD, 'null']],
  ];
  for (const [name, fields] of cases) t.equal(decodeEntry(fields), undefined, name);
  t.strictSame(decodeEntry(['x', '1', RECORD_FIELD, good]), plain(realRecords()[0]!), 'finds r after other fields');
  t.equal(decodeRecord('[]'), undefined);
});

t.test('a record stored as its message and context reads back as the record', async (t) => {
  const geo = await openGeoEnricher({ embeddedDefault: true, cacheEntries: 1000, watch: false }, { logger: silent, registry: new Registry() });
  t.teardown(() => geo.close());
  // Write-time settings unlike the read side's defaults: the context must carry what they decide.
  const opts = createLineOptions({ bridges: ['docker0', 'br-*', 'podman*'], timeZone: 'America/New_York' });
  const receivedAtMs = Date.UTC(2026, 0, 1, 3, 30);
  const podmanLine = '<4>Jan  1 03:29:59 h1 kernel: [12.5] IN=podman1 OUT=eth0 SRC=10.88.0.2 DST=8.8.8.8 LEN=60 TTL=63 ID=1 PROTO=UDP SPT=5353 DPT=53 LEN=40 ';
  const messagesOf: Array<[string, string[]]> = [
    ...SCENARIOS.flatMap((s) => FORMAT_FILES.map((f): [string, string[]] => [`${s}.${f}`, messages(`${s}.${f}`)])),
    ['netfilter variants (bare kernel text)', readFileSync(fixture('netfilter', 'variants.txt'), 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.slice(l.indexOf('\t') + 1))],
    ['a bridge only the writer knows', [podmanLine]],
  ];
  let checked = 0;
  for (const [name, lines] of messagesOf) {
    for (const message of lines) {
      const record = parseLine(message, opts, receivedAtMs);
      if (typeof record === 'string') continue;
      record.host ??= { name: '192.0.2.7' };
      (record.event ??= {}).ingested = new Date(receivedAtMs).toISOString();
      geo.enrich(record);
      record.container = { id: 'c'.repeat(64), name: 'web-1', image: { name: 'nginx:1' }, labels: { 'com.docker.compose.service': 'web' }, match: 'ip' };
      if (record.network.direction === 'internal') record.peer_container = { unattributed: true };
      const stored = decodeEntry([MESSAGE_FIELD, message, CONTEXT_FIELD, encodeContext(record)]);
      // As readers see it: serialized, so fields the parser leaves undefined are absent on both sides.
      if (!t.strictSame(stored && plain(stored), plain(record), `${name}: ${message.slice(0, 60)}`)) return;
      checked++;
    }
  }
  t.ok(checked > 300, `${checked} messages checked`);
  t.equal(decodeEntry([MESSAGE_FIELD, podmanLine, CONTEXT_FIELD, '{}'])?.network.direction, 'other', 'without its context the read side would not know podman1 is a bridge');
});

t.test('message entries that do not make a record decode to undefined', async (t) => {
  const message = messages('icmp-echo.kmsg.txt')[0]!;
  const cases: Array<[string, string[]]> = [
    ['message without context', [MESSAGE_FIELD, message]],
    ['context without message', [CONTEXT_FIELD, '{}']],
    ['context not JSON', [MESSAGE_FIELD, message, CONTEXT_FIELD, '{']],
    ['context not an object', [MESSAGE_FIELD, message, CONTEXT_FIELD, '7']],
    ['message not a LOG line', [MESSAGE_FIELD, '<13>Jan  1 00:00:00 h app: hello', CONTEXT_FIELD, '{}']],
  ];
  for (const [name, fields] of cases) t.equal(decodeEntry(fields), undefined, name);
});

t.test('the context is exactly the JSON of its fields, and a GeoIP answer changed in place is not served stale', async (t) => {
  const contextObject = (r: FlowRecord): unknown => {
    const enrichment = (e: Endpoint): unknown =>
      e.geo === undefined && e.as === undefined && e.address_class === undefined ? undefined : { geo: e.geo, as: e.as, address_class: e.address_class };
    return {
      '@timestamp': r['@timestamp'],
      // The parser gives kind, category, type and action again from the message.
      event: r.event?.ingested === undefined && r.event?.id === undefined && r.event?.hash === undefined ? undefined : { ingested: r.event.ingested, id: r.event.id, hash: r.event.hash },
      host: r.host,
      network: { direction: r.network.direction },
      source: enrichment(r.source),
      destination: enrichment(r.destination),
      container: r.container,
      peer_container: r.peer_container,
      dockflow: r.dockflow,
    };
  };
  const geo = await openGeoEnricher({ embeddedDefault: true, cacheEntries: 1000, watch: false }, { logger: silent, registry: new Registry() });
  t.teardown(() => geo.close());
  let checked = 0;
  for (const base of realRecords()) {
    const r = structuredClone(base);
    geo.enrich(r);
    r.host = { name: 'h"1\\\u0001\ud800' };
    if (checked % 2 === 1) r.event = { ...r.event, ingested: '2026-11-27T07:00:00.000Z' };
    r.container = { id: 'c'.repeat(64), labels: { 'a"b': 'line\nbreak' }, match: 'ip' };
    t.equal(encodeContext(r), JSON.stringify(contextObject(r)));
    checked++;
  }
  t.ok(checked >= 50, `${checked} records`);
  // Shapes the enricher does not make, around what is serialized once and reused: one frozen answer with different
  // ASNs and address classes beside it, an ASN alone, and dockflow objects that are not just the database epochs.
  const geoAnswer = Object.freeze({ country_iso_code: 'FR' });
  const asA = Object.freeze({ number: 3215, organization: { name: 'Orange' } });
  const asB = Object.freeze({ number: 12322, organization: Object.freeze({ name: 'Free' }) });
  const epochs = Object.freeze({ country: 1_781_725_900 });
  const variants: Array<[string, (r: FlowRecord) => void]> = [
    ['answer with one ASN', (r) => Object.assign(r.destination, { geo: geoAnswer, as: asA })],
    ['same answer, another ASN', (r) => Object.assign(r.destination, { geo: geoAnswer, as: asB })],
    ['same answer, no ASN', (r) => Object.assign(r.destination, { geo: geoAnswer, as: undefined })],
    ['same answer, an address class too', (r) => Object.assign(r.destination, { geo: geoAnswer, as: asB, address_class: 'public' })],
    ['an ASN alone', (r) => Object.assign(r.source, { geo: undefined, as: asB, address_class: undefined })],
    ['an address class alone', (r) => Object.assign(r.source, { geo: undefined, as: undefined, address_class: 'private' })],
    ['database epochs', (r) => (r.dockflow = { geo_build_epoch: epochs })],
    ['no epochs', (r) => (r.dockflow = { geo_build_epoch: undefined })],
    ['empty dockflow', (r) => (r.dockflow = {})],
    ['dockflow with more', (r) => (r.dockflow = { geo_build_epoch: epochs, note: 'x' } as FlowRecord['dockflow'])],
    ['a shared, frozen container and peer', (r) => {
      r.container = Object.freeze({ id: 'c'.repeat(64), name: 'web-1', image: Object.freeze({ name: 'nginx:1' }), labels: Object.freeze({ 'a"b': 'line\nbreak' }), match: 'ip' });
      r.peer_container = Object.freeze({ unattributed: true });
    }],
  ];
  for (const [name, change] of variants) {
    const r = structuredClone(realRecords()[1]!);
    change(r);
    t.equal(encodeContext(r), JSON.stringify(contextObject(r)), name);
    t.equal(encodeContext(r), JSON.stringify(contextObject(r)), `${name}, again`);
  }
  const r = structuredClone(realRecords()[0]!);
  const shared = Object.freeze({ country_iso_code: 'DE', location: Object.freeze({ lat: 1, lon: 2 }) });
  r.destination.geo = shared;
  t.match(encodeContext(r), /"country_iso_code":"DE"/);
  const thawed = { country_iso_code: 'DE', location: { lat: 1, lon: 2 } };
  r.destination.geo = thawed;
  encodeContext(r);
  thawed.location.lat = 3;
  t.match(encodeContext(r), /"lat":3/, 'an object that can change is serialized each time');
});
