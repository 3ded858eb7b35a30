import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import type { FlowRecord } from '../../src/record.js';
import { appFor, LOSS } from './app-helper.js';
import { BASE_MS, buildDataset, CONTAINERS, enrich, startEnv, type Env } from './store-helper.js';

const data = buildDataset();
const RANGE = `since=${new Date(BASE_MS).toISOString()}&until=${new Date(BASE_MS + 3_600_000).toISOString()}`;
let env: Env;
let app: FastifyInstance;
let refs: string[];

t.before(async () => {
  env = await startEnv();
  refs = await env.writer.write(data);
  app = await appFor(env);
});
t.teardown(async () => {
  await app.close();
  await env.close();
});

interface Page {
  items: FlowRecord[];
  next_cursor: string | null;
  index: string;
  loss: unknown;
  range: unknown;
}

async function get(url: string, headers: Record<string, string> = {}) {
  return app.inject({ method: 'GET', url, headers });
}

const idsWhere = (pred: (r: FlowRecord) => boolean): string[] =>
  data
    .map((r, i) => ({ r, ref: refs[i]! }))
    .filter((x) => pred(x.r))
    .map((x) => x.ref)
    .reverse();

t.test('filters over HTTP', async (t) => {
  const cases: [string, (r: FlowRecord) => boolean][] = [
    ['container=mailer', (r) => r.container?.name === 'mailer'],
    ['container=d4d4', (r) => r.container?.name === 'web-1'],
    ['service=web', (r) => r.container?.labels?.['com.docker.compose.service'] === 'web'],
    ['ip=198.51.100.0/24&direction=ingress', (r) => r.network.direction === 'ingress' && (r.source.ip === '198.51.100.2' || r.destination.ip === '198.51.100.2')],
    ['dst_ip=2001:db8::/32', (r) => r.destination.ip?.startsWith('2001:') === true],
    ['ip=fd00:17::2', (r) => r.network.type === 'ipv6'],
    ['transport=udp&dst_port=53', (r) => r.network.transport === 'udp' && r.destination.port === 53],
    ['country=US&asn=64501', (r) => r.network.type === 'ipv6'],
    ['prefix=nftflow:&host=docker-host-1', (r) => r.log?.prefix === 'nftflow:'],
  ];
  for (const [q, pred] of cases) {
    const res = await get(`/api/flows?${q}&${RANGE}&limit=1000`);
    t.equal(res.statusCode, 200, q);
    const body = res.json() as Page;
    t.same(body.items.map((r) => r.event?.id), idsWhere(pred), q);
    t.same(body.loss, LOSS, `${q}: loss report attached`);
  }
});

t.test('bad requests are 400 with a clear message', async (t) => {
  const cases: [string, RegExp][] = [
    ['/api/flows?bogus=1', /unknown query parameter 'bogus'/],
    ['/api/flows?container=mailer&Container=x', /unknown query parameter 'Container'/],
    ['/api/flows?cursor=not-a-cursor', /cursor is not valid/],
    ['/api/flows?ip=300.1.1.1', /ip: "300.1.1.1" is not an IP address or CIDR/],
    ['/api/flows?src_ip=10.0.0.0/40', /src_ip/],
    ['/api/flows?since=yesterday', /since: "yesterday" is neither ISO 8601/],
    ['/api/flows?since=1h&until=2h', /since is after until/],
    ['/api/flows?limit=100000', /limit must be <= 5000/],
    ['/api/flows?port=70000', /port must be <= 65535/],
    ['/api/flows?direction=egress,sideways', /direction must match pattern/],
    ['/api/flows?container=a%3Ab*', /container must match pattern/],
    ['/api/flows?format=xml', /format must be equal to one of/],
    ['/api/flows/live?since=1h', /unknown query parameter 'since'/],
    ['/api/stats/top?by=dst&x=1', /unknown query parameter 'x'/],
    ['/api/stats/top', /must have required property 'by'/],
    ['/api/connections?idle_gap=0', /idle_gap must be >= 1/],
    ['/api/containers/mailer/inventory?new_since=soon', /new_since/],
  ];
  for (const [url, message] of cases) {
    const res = await get(url);
    t.equal(res.statusCode, 400, url);
    t.match(res.json(), { error: 'bad_request', message }, url);
  }
});

t.test('a cursor only continues the query it came from', async (t) => {
  const first = (await get(`/api/flows?container=mailer&${RANGE}&limit=2`)).json() as Page;
  t.type(first.next_cursor, 'string');
  const other = await get(`/api/flows?container=resolver&${RANGE}&limit=2&cursor=${first.next_cursor}`);
  t.equal(other.statusCode, 400);
  t.match(other.json(), { message: /different query/ });
  const flipped = await get(`/api/flows?container=mailer&${RANGE}&limit=2&order=asc&cursor=${first.next_cursor}`);
  t.equal(flipped.statusCode, 400);
});

t.test('walking every page equals the full answer, also while records arrive', async (t) => {
  const full = ((await get(`/api/flows?since=${new Date(BASE_MS).toISOString()}&limit=1000`)).json() as Page).items.map((r) => r.event?.id);
  const walked: string[] = [];
  let cursor: string | null = null;
  let added = 0;
  do {
    const res = await get(`/api/flows?since=${new Date(BASE_MS).toISOString()}&limit=4${cursor ? `&cursor=${cursor}` : ''}`);
    t.equal(res.statusCode, 200);
    const page = res.json() as Page;
    walked.push(...page.items.map((r) => r.event?.id ?? ''));
    cursor = page.next_cursor;
    // A newer record arrives between pages.
    await env.writer.write([enrich(data[0]!, BASE_MS + 7_200_000 + added++ * 1000, CONTAINERS.mailer)]);
  } while (cursor !== null);
  t.same(walked, full, 'same records, same order, no repeats, none skipped');
  t.ok(added > 10, 'records were added while paging');
});

t.test('CSV and NDJSON by format= or Accept', async (t) => {
  const q = `/api/flows?container=resolver&${RANGE}&limit=2&order=asc`;
  for (const [url, headers] of [
    [`${q}&format=csv`, {}],
    [q, { accept: 'text/csv' }],
  ] as const) {
    const res = await get(url, headers);
    t.equal(res.statusCode, 200);
    t.match(res.headers['content-type'], /^text\/csv/);
    const lines = res.body.trimEnd().split('\r\n');
    t.equal(lines[0]!.split(',')[0], '"id"');
    t.equal(lines.length, 3, 'header and two rows');
    t.match(lines[1], /,"egress","udp","172\.17\.0\.2","\d+","198\.51\.100\.2","53","resolver","b2b2/);
    t.type(res.headers['x-next-cursor'], 'string');
    t.same(JSON.parse(String(res.headers['x-dockflow-loss'])), LOSS);
  }
  for (const [url, headers] of [
    [`${q}&format=ndjson`, {}],
    [q, { accept: 'application/x-ndjson' }],
  ] as const) {
    const res = await get(url, headers);
    t.match(res.headers['content-type'], /^application\/x-ndjson/);
    const rows = res.body.trimEnd().split('\n').map((l) => JSON.parse(l) as FlowRecord);
    t.equal(rows.length, 2);
    t.equal(rows[0]!.container?.name, 'resolver');
  }
});

/** RFC 4180 reader: cells of each row, with quoted fields unquoted; also tells whether a `;` or `,` stood outside quotes. */
function readCsv(text: string): { rows: string[][]; bareDelimiter: boolean } {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  let bareDelimiter = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
      i++;
    } else {
      if (c === ';') bareDelimiter = true;
      cell += c;
    }
  }
  return { rows, bareDelimiter };
}

t.test('CSV: every field quoted per RFC 4180, formulas neutralised, whatever the delimiter a spreadsheet picks', async (t) => {
  const prefixes: Array<[string, string]> = [
    ['a;=cmd|" /C calc"!A0', 'a;=cmd|" /C calc"!A0'],
    ['=HYPERLINK("http://x";"y")', `'=HYPERLINK("http://x";"y")`],
    ['+1;2,3', `'+1;2,3`],
    ['-2+3', `'-2+3`],
    ['@SUM(1,2)', `'@SUM(1,2)`],
    ['\tTAB', `'\tTAB`],
    ['say "hi", then; go', 'say "hi", then; go'],
  ];
  const at = BASE_MS + 9_000_000;
  const records = prefixes.map(([p], i) => {
    const r = enrich(data[0]!, at + i * 1000, CONTAINERS.mailer);
    r.log = { ...r.log, prefix: p };
    return r;
  });
  await env.writer.write(records);
  const res = await get(`/api/flows?format=csv&order=asc&since=${new Date(at).toISOString()}&until=${new Date(at + 60_000).toISOString()}`);
  t.equal(res.statusCode, 200);
  const { rows, bareDelimiter } = readCsv(res.body);
  t.notOk(bareDelimiter, 'no ; outside quotes');
  t.ok(res.body.split('\r\n').slice(0, -1).every((l) => /^"(?:[^"]|"")*"(?:,"(?:[^"]|"")*")*$/.test(l)), 'every field of every line is quoted');
  const header = rows[0]!;
  const col = header.indexOf('log.prefix');
  t.equal(rows.length, prefixes.length + 1);
  for (let i = 0; i < prefixes.length; i++) {
    t.equal(rows[i + 1]!.length, header.length, `row ${i}: one cell per column`);
    t.equal(rows[i + 1]![col], prefixes[i]![1], JSON.stringify(prefixes[i]![0]));
  }
});

t.test('OpenAPI document and page', async (t) => {
  const doc = (await get('/docs/json')).json() as { openapi: string; paths: Record<string, unknown> };
  t.match(doc.openapi, /^3\./);
  for (const p of ['/api/flows', '/api/flows/live', '/api/connections', '/api/stats/top', '/api/containers/{key}/inventory']) t.ok(doc.paths[p], p);
  const page = await get('/docs/');
  t.equal(page.statusCode, 200);
  t.match(page.body, /swagger/i);
});

t.test('live: a record added after subscribing arrives as an SSE event; disconnect is clean', async (t) => {
  const live = await appFor(env, { liveHeartbeatMs: 50 });
  await live.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => live.close());
  const { port } = live.server.address() as AddressInfo;
  const req = http.get({ host: '127.0.0.1', port, path: '/api/flows/live?container=pinger&transport=icmp' });
  const [res] = (await new Promise((resolve) => req.once('response', (r) => resolve([r])))) as [http.IncomingMessage];
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^text\/event-stream/);
  res.setEncoding('utf8');
  let text = '';
  const waitFor = (re: RegExp): Promise<RegExpExecArray> =>
    new Promise((resolve) => {
      const check = (): void => {
        const m = re.exec(text);
        if (m) {
          res.off('data', onData);
          resolve(m);
        }
      };
      const onData = (d: string): void => {
        text += d;
        check();
      };
      res.on('data', onData);
      check();
    });
  await waitFor(/: subscribed\n\n/);
  const pinger = data.find((r) => r.container?.name === 'pinger')!;
  const mailer = data.find((r) => r.container?.name === 'mailer')!;
  const [skipped, wanted] = await env.writer.write([enrich(mailer, Date.now(), CONTAINERS.mailer), enrich(pinger, Date.now(), CONTAINERS.pinger)]);
  const m = await waitFor(/id: (\S+)\nevent: flow\ndata: (.*)\n\n/);
  t.equal(m[1], wanted, 'the matching record, first');
  t.not(m[1], skipped);
  const rec = JSON.parse(m[2]!) as FlowRecord;
  t.equal(rec.container?.name, 'pinger');
  t.equal(rec.event?.id, wanted);
  await waitFor(/: keep-alive\n\n/);
  req.destroy();
  // The shared reader stops when its last client has gone; the server can then close without waiting.
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await live.close(), undefined);
});
