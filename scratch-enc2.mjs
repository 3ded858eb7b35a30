import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { Registry } from 'prom-client';
import pino from 'pino';
import { openGeoEnricher } from './dist/src/enrich/geo.js';
import { createLineOptions, parseLine } from './dist/src/parse/line.js';
import { encodeContext } from './dist/src/store/encode.js';
const data = gunzipSync(readFileSync('test/fixtures/bench/burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz')).toString().split('\n').filter(Boolean);
const geo = await openGeoEnricher({ embeddedDefault: true, cacheEntries: 10000, watch: false }, { logger: pino({ level: 'silent' }), registry: new Registry() });
const opts = createLineOptions({});
const recs = data.map((l) => parseLine(l, opts, Date.now())).filter((r) => typeof r !== 'string');
let i = 0; for (const r of recs) { r.host ??= { name: '127.0.0.1' }; r.event = { ingested: new Date(Date.now() + i++).toISOString() }; if (i % 2) r.destination.ip = `${(i % 200) + 20}.${i % 250}.1.1`; geo.enrich(r); }
const ESC = /["\\\u0000-\u001f\ud800-\udfff]/;
const q = (s) => (ESC.test(s) ? JSON.stringify(s) : `"${s}"`);
function flat(o) { let j = ''; for (const k in o) { const v = o[k]; if (v === undefined) continue; if (typeof v !== 'string') return JSON.stringify(o); j += `,${q(k)}:${q(v)}`; } return `{${j.slice(1)}}`; }
const frozen = new WeakMap();
function shared(v) { let j = frozen.get(v); if (j === undefined) { j = JSON.stringify(v); frozen.set(v, j); } return j; }
function ench(name, e) { const { geo, as, address_class: c } = e; if (geo === undefined && as === undefined && c === undefined) return ''; let j = ''; if (geo !== undefined) j += `,"geo":${shared(geo)}`; if (as !== undefined) j += `,"as":${shared(as)}`; if (c !== undefined) j += `,"address_class":${q(c)}`; return `${name}{${j.slice(1)}}`; }
function v2(r) {
  let j = `{"@timestamp":${q(r['@timestamp'])}`;
  if (r.event !== undefined) j += `,"event":${flat(r.event)}`;
  if (r.host !== undefined) j += `,"host":${flat(r.host)}`;
  j += `,"network":{"direction":${q(r.network.direction)}}`;
  j += ench(',"source":', r.source); j += ench(',"destination":', r.destination);
  if (r.container !== undefined) j += `,"container":${JSON.stringify(r.container)}`;
  if (r.peer_container !== undefined) j += `,"peer_container":${JSON.stringify(r.peer_container)}`;
  if (r.dockflow !== undefined) j += `,"dockflow":${JSON.stringify(r.dockflow)}`;
  return `${j}}`;
}
let bad = 0; for (const r of recs) if (v2(r) !== encodeContext(r)) bad++; console.log('differ', bad, encodeContext(recs[1]));
for (let round = 0; round < 3; round++) for (const [name, f] of [['cur', encodeContext], ['v2', v2]]) {
  let x = 0; const t0 = process.hrtime.bigint();
  for (let k = 0; k < 40; k++) for (const r of recs) x += f(r).length;
  console.log(name, (Number(process.hrtime.bigint() - t0) / (40 * recs.length)).toFixed(0), 'ns/record');
}
geo.close();
function enrichmentOf(endpoint) {
  if (endpoint.geo === undefined && endpoint.as === undefined && endpoint.address_class === undefined) return undefined;
  return { geo: endpoint.geo, as: endpoint.as, address_class: endpoint.address_class };
}
function oldEncode(record) {
  return JSON.stringify({ '@timestamp': record['@timestamp'], event: record.event, host: record.host, network: { direction: record.network.direction },
    source: enrichmentOf(record.source), destination: enrichmentOf(record.destination), container: record.container, peer_container: record.peer_container, dockflow: record.dockflow });
}
console.log(encodeContext(recs[2]));
for (let round = 0; round < 3; round++) for (const [name, f] of [['old', oldEncode], ['cur', encodeContext], ['v2', v2]]) {
  let x = 0; const t0 = process.hrtime.bigint();
  for (let k = 0; k < 40; k++) for (const r of recs) x += f(r).length;
  console.log(name, (Number(process.hrtime.bigint() - t0) / (40 * recs.length)).toFixed(0), 'ns/record');
}
