/**
 * Client-side cost of the query indexes per record: `FlowIndexer.facts`, `build` and the encoding of its writes over the burst corpus in
 * batches of 500, with container fields set (as attribution sets them). The Redis side
 * is measured by `bench:ingest` and `bench:query`. One core, in-process; median of several runs.
 *
 *   npm run bench:index -- [--runs 7] [--containers 40]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { createLineOptions, parseLine } from '../src/parse/line.js';
import { isRecord, type FlowRecord } from '../src/record.js';
import { FlowIndexer } from '../src/store/indexer.js';
import type { IndexEntry } from '../src/store/types.js';
import { fixture } from '../test/helpers/paths.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '7' }, containers: { type: 'string', default: '40' } } });
const runs = Number(values.runs);
const containers = Number(values.containers);

const opts = createLineOptions({});
const records: FlowRecord[] = [];
const lines = gunzipSync(readFileSync(fixture('bench', 'burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz'))).toString('utf8').split('\n');
for (const line of lines) {
  const r = parseLine(line, opts);
  if (!isRecord(r)) continue;
  const c = records.length % containers;
  r.container = {
    id: c.toString(16).padStart(64, 'a'),
    name: `bench-${c}`,
    image: { name: 'busybox:latest' },
    labels: { 'com.docker.compose.service': `svc${c % 7}` },
    match: 'ip',
  };
  records.push(r);
}

let blobBytes = 0;
const indexer = new FlowIndexer({ keyPrefix: 'dockflow' });
const baseMs = Date.parse(records[0]!['@timestamp']);
const batches: Array<Array<{ record: FlowRecord; partition: string; stream: string; id: string }>> = [];
for (let i = 0; i < records.length; i += 500) {
  batches.push(records.slice(i, i + 500).map((record, j) => ({ record, partition: `${Math.floor(baseMs / 600_000)}.w1`, stream: 's', id: `${baseMs}-${i + j}` })));
}

const pass = (): void => {
  blobBytes = 0;
  // The writer takes each record's facts when it takes the record, and builds the writes per batch.
  for (const batch of batches) {
    const ops = indexer.build(batch.map(({ record, partition, stream, id }) => ({ facts: indexer.facts(record), partition, stream, id })));
    blobBytes += (ops?.encode().length ?? 0) + (ops?.payloads.reduce((n, b) => n + b.length, 0) ?? 0);
  }
};
pass();
pass();
const perRecordUs: number[] = [];
for (let r = 0; r < runs; r++) {
  const start = process.hrtime.bigint();
  for (let p = 0; p < 3; p++) pass();
  perRecordUs.push(Number(process.hrtime.bigint() - start) / 1000 / (records.length * 3));
}
perRecordUs.sort((a, b) => a - b);
const median = perRecordUs[Math.floor(perRecordUs.length / 2)]!;
console.log(`node ${process.version}; ${records.length} records, ${containers} containers, batches of 500, ${Math.round(blobBytes / records.length)} bytes of index writes per record`);
console.log(`FlowIndexer.facts + build + encode: ${median.toFixed(2)} µs per record (median of ${runs}), ${Math.round(1e6 / median).toLocaleString('en-US')} records/s`);
