import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { runExport, runVerify } from '../../src/cli/export.js';
import { ExportChain, verifyFile } from '../../src/export/chain.js';
import type { FlowRecord } from '../../src/record.js';
import { appFor, LOSS } from '../api/app-helper.js';
import { BASE_MS, buildDataset, startEnv, type Env } from '../api/store-helper.js';
import { tempDir } from '../helpers/temp.js';

const data = buildDataset();
const SINCE = new Date(BASE_MS).toISOString();
const UNTIL = new Date(BASE_MS + 3_600_000).toISOString();
let env: Env;
let app: FastifyInstance;
let base: string;

t.before(async () => {
  env = await startEnv();
  await env.writer.write(data);
  app = await appFor(env);
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});
// The app listens on a port of its own, and without a token it answers only Host names on that port.
const get = (url: string) => app.inject({ method: 'GET', url, headers: { host: new URL(base).host } });

t.teardown(async () => {
  await app.close();
  await env.close();
});

/** Runs a CLI command, capturing what it writes. */
async function capture(run: () => Promise<number>): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const o = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((c: string) => (out.push(String(c)), true)) as typeof process.stdout.write;
  process.stderr.write = ((c: string) => (err.push(String(c)), true)) as typeof process.stderr.write;
  try {
    return { code: await run(), out: out.join(''), err: err.join('') };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

t.test('GET /api/export: header, every matching record with its chain hash, trailer', async (t) => {
  const res = await get(`/api/export?since=${SINCE}&until=${UNTIL}&direction=egress`);
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /application\/x-ndjson/);
  const lines = res.body.trimEnd().split('\n');
  const header = JSON.parse(lines[0]!).dockflow_export;
  t.match(header, { version: 1, query: { direction: 'egress', order: 'asc' }, range: { since: SINCE, until: UNTIL }, producer: 'dockflow' });
  const trailer = JSON.parse(lines[lines.length - 1]!).dockflow_export_end;
  const egress = data.filter((r) => r.network.direction === 'egress');
  t.equal(trailer.count, egress.length);
  t.equal(lines.length, egress.length + 2);
  const records = lines.slice(1, -1).map((l) => JSON.parse(l) as FlowRecord & { dockflow_chain: string });
  t.ok(records.every((r) => /^[0-9a-f]{64}$/.test(r.dockflow_chain) && r.network.direction === 'egress'));
  t.equal(trailer.first_id, records[0]!.event?.id);
  t.equal(trailer.last_id, records[records.length - 1]!.event?.id);
  t.same(trailer.loss, LOSS);
  t.equal(trailer.truncated, false);
  t.same(trailer.databases, [...new Set(egress.map((r) => JSON.stringify(r.dockflow?.geo_build_epoch)).filter((s) => s !== undefined))].map((s) => JSON.parse(s)), 'the GeoIP/ASN stamps of the records');
  t.equal(trailer.chain_head, records[records.length - 1]!.dockflow_chain);
  const file = join(tempDir(t, 'export'), 'e.ndjson');
  writeFileSync(file, res.body);
  t.match(await verifyFile(file), { ok: true, records: egress.length });
});

t.test('max_records caps an export, and the trailer says so', async (t) => {
  const res = await get(`/api/export?since=${SINCE}&until=${UNTIL}&max_records=3`);
  const lines = res.body.trimEnd().split('\n');
  t.equal(lines.length, 5);
  t.match(JSON.parse(lines[4]!).dockflow_export_end, { count: 3, truncated: true, reason: /max_records \(3\)/ });
  t.equal((await get('/api/export?max_records=0')).statusCode, 400);
  t.equal((await get('/api/export?bogus=1')).statusCode, 400);
});

t.test('dockflow export then dockflow verify, end to end; tampering is found at its line', async (t) => {
  const dir = tempDir(t, 'export');
  const file = join(dir, 'all.ndjson');
  const exported = await capture(() => runExport(['-o', file, '--url', base, '--since', SINCE, '--until', UNTIL], {}));
  t.equal(exported.code, 0, exported.err);
  t.match(exported.err, new RegExp(`^${data.length} records; chain head [0-9a-f]{64}\\n$`));
  const ok = await capture(() => runVerify([file]));
  t.equal(ok.code, 0);
  t.match(ok.out, new RegExp(`ok: ${data.length} records`));

  const original = readFileSync(file, 'utf8').split('\n');
  t.equal(original.length, data.length + 3, 'header, records, trailer, final newline');
  const tamper = async (name: string, edit: (lines: string[]) => string[], line: number, problem: RegExp): Promise<void> => {
    const path = join(dir, `${name}.ndjson`);
    writeFileSync(path, edit([...original]).join('\n'));
    const r = await capture(() => runVerify([path]));
    t.equal(r.code, 1, name);
    t.match(r.out, `${path}:${line}: `, `${name}: line ${line}`);
    t.match(r.out, problem, name);
  };
  const change = (l: string): string => l.replace(/"destination":\{"ip":"[^"]*"/, '"destination":{"ip":"192.0.2.66"');
  await tamper('changed', (l) => ((l[5] = change(l[5]!)), l), 6, /this line was changed/);
  await tamper('changed-last', (l) => ((l[data.length] = change(l[data.length]!)), l), data.length + 1, /changed/);
  await tamper('removed', (l) => (l.splice(4, 1), l), 5, /removed, added or moved/);
  await tamper('swapped', (l) => ([l[3], l[4]] = [l[4]!, l[3]!], l), 4, /moved/);
  await tamper('duplicated', (l) => (l.splice(7, 0, l[6]!), l), 8, /added/);
  await tamper(
    'changed with its hash recomputed',
    (l) => {
      const text = change(l[2]!).replace(/,"dockflow_chain":"[0-9a-f]{64}"\}$/, '}');
      const h = require_sha256(l[1]!, text);
      l[2] = `${text.slice(0, -1)},"dockflow_chain":"${h}"}`;
      return l;
    },
    4,
    /hash does not match/,
  );
  await tamper('header changed', (l) => ((l[0] = l[0]!.replace('"order":"asc"', '"order":"desc"')), l), 1, /header changed/);
  await tamper('trailer count changed', (l) => ((l[data.length + 1] = l[data.length + 1]!.replace(/"count":\d+/, '"count":1')), l), data.length + 2, /trailer counts 1/);
  await tamper('trailer removed', (l) => l.slice(0, data.length + 1), data.length + 2, /no trailer/);
  await tamper('last record and trailer removed', (l) => l.slice(0, data.length), data.length + 1, /no trailer/);
  await tamper('line after the trailer', (l) => (l.splice(data.length + 2, 0, l[3]!), l), data.length + 3, /after the trailer/);
  await tamper('record without hash', (l) => ((l[2] = l[2]!.replace(/,"dockflow_chain":"[0-9a-f]{64}"\}$/, '}')), l), 3, /without its chain hash/);
  await tamper('not an export', () => ['{"a":1}'], 1, /not a dockflow export/);
  await tamper('empty', () => [], 1, /not a dockflow export|empty/);
});

/** h(i) for a record text after the line holding h(i-1). */
function require_sha256(previousLine: string, text: string): string {
  const prev = /"(?:dockflow_chain)":"([0-9a-f]{64})"\}$/.exec(previousLine)?.[1];
  if (prev === undefined) throw new Error('no previous hash');
  return createHash('sha256').update(Buffer.from(prev, 'hex')).update(text).digest('hex');
}

t.test('the export CLI reports what stops it', async (t) => {
  const dir = tempDir(t, 'export');
  t.equal((await capture(() => runExport([], {}))).code, 2, 'no -o');
  const unreachable = await capture(() => runExport(['-o', join(dir, 'x'), '--url', 'http://127.0.0.1:1'], {}));
  t.equal(unreachable.code, 1);
  t.match(unreachable.err, /cannot reach/);
  const bad = await capture(() => runExport(['-o', join(dir, 'y'), '--url', base, '--direction', 'sideways'], {}));
  t.equal(bad.code, 1);
  t.match(bad.err, /400/);
  const capped = await capture(() => runExport(['-o', join(dir, 'z'), '--url', base, '--since', SINCE, '--until', UNTIL, '--max-records', '2'], {}));
  t.equal(capped.code, 1);
  t.match(capped.err, /incomplete: more than max_records/);
  t.equal((await capture(() => runVerify([]))).code, 2);
  t.equal((await capture(() => runVerify([join(dir, 'missing')]))).code, 2);
});

t.test('the chain alone: the same records give the same head; a one-record change gives another', async (t) => {
  const mk = (rs: FlowRecord[]): string => {
    const c = new ExportChain({ query: {}, range: {}, created: '2026-01-01T00:00:00.000Z', producer: 'test', max_records: 10 });
    for (const r of rs) c.line(r);
    return c.chainHead;
  };
  const rs = data.slice(0, 5);
  t.equal(mk(rs), mk(structuredClone(rs)));
  const other = structuredClone(rs);
  other[2]!.source.port = 1;
  t.not(mk(rs), mk(other));
});
