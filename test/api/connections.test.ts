import { readFileSync } from 'node:fs';
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import { fixture } from '../helpers/paths.js';
import { appFor, LOSS } from './app-helper.js';
import { BASE_MS, buildDataset, CONTAINERS, enrich, startEnv, type Env } from './store-helper.js';

let env: Env;
let app: FastifyInstance;
const RANGE = `since=${new Date(BASE_MS).toISOString()}&until=${new Date(BASE_MS + 3_600_000).toISOString()}`;

/** Ground truth read straight from the capture: the per-packet rule's lines of the SMTP connection. */
const fwdLines = readFileSync(fixture('api', 'tcp-egress-smtp.kmsg.txt'), 'utf8')
  .split('\n')
  .filter((l) => l.includes(';DOCKER-FWD: '));
const fwdBytes = fwdLines.reduce((sum, l) => sum + Number(/ LEN=(\d+)/.exec(l)![1]), 0);

t.before(async () => {
  env = await startEnv();
  await env.writer.write(buildDataset());
  app = await appFor(env);
});
t.teardown(async () => {
  await app.close();
  await env.close();
});

interface Conn {
  direction: string;
  source: { ip: string; port: number };
  destination: { ip: string; port: number };
  packets: number;
  bytes: number;
  tcp_flags: string[];
  log_prefix: string;
  container: { name: string };
  first_seen: string;
  last_seen: string;
}

async function conns(q: string): Promise<{ connections: Conn[]; packets: number; truncated: boolean; loss: unknown }> {
  const res = await app.inject({ method: 'GET', url: `/api/connections?${q}&${RANGE}` });
  t.equal(res.statusCode, 200, q);
  return res.json();
}

t.test('per-packet lines of one TCP connection, both directions, fold into one connection', async (t) => {
  t.ok(fwdLines.length > 10, 'the capture has many per-packet lines');
  const body = await conns('container=mailer&prefix=DOCKER-FWD:');
  t.equal(body.connections.length, 1);
  const c = body.connections[0]!;
  t.match(c, {
    direction: 'egress',
    source: { ip: '172.17.0.2', port: 44038 },
    destination: { ip: '198.51.100.2', port: 25 },
    packets: fwdLines.length,
    bytes: fwdBytes,
    log_prefix: 'DOCKER-FWD:',
    container: { name: 'mailer' },
  });
  for (const flag of ['SYN', 'ACK', 'FIN']) t.ok(c.tcp_flags.includes(flag), `saw ${flag}`);
  t.ok(Date.parse(c.first_seen) < Date.parse(c.last_seen));
  t.equal(body.truncated, false);
  t.same(body.loss, LOSS);
});

t.test('each LOG rule sees the connection: one connection per rule prefix', async (t) => {
  const body = await conns('container=mailer');
  t.same(body.connections.map((c) => c.log_prefix).sort(), ['DOCKER-FWD:', 'dockflow:', 'nftflow:']);
  for (const c of body.connections) t.equal(c.destination.port, 25);
});

t.test('direction and src/dst filters apply to the connection, not its packets', async (t) => {
  t.equal((await conns('container=mailer&prefix=DOCKER-FWD:&direction=egress')).connections.length, 1);
  t.equal((await conns('container=mailer&prefix=DOCKER-FWD:&direction=ingress')).connections.length, 0);
  t.equal((await conns('prefix=DOCKER-FWD:&dst_port=25')).connections.length, 1);
  t.equal((await conns('prefix=DOCKER-FWD:&src_port=25')).connections.length, 0);
  const ingress = await conns('container=web-1&prefix=DOCKER-FWD:');
  t.ok(ingress.connections.length >= 1);
  for (const c of ingress.connections) t.equal(c.direction, 'ingress', 'published-port connections are initiated from outside');
});

t.test('a silence longer than idle_gap, or a new SYN after RST, starts a new connection', async (t) => {
  // The IPv6 capture is SYN, SYN-ACK, ACK+RST one second apart.
  const v6 = buildDataset().filter((r) => r.container?.name === 'v6app');
  const lastMs = Date.parse(v6[2]!['@timestamp']);
  const late = structuredClone(v6[0]!);
  late.iptables.tcp = { ...late.iptables.tcp, flags: ['ACK'] };
  await env.writer.write([enrich(late, lastMs + 300_000, CONTAINERS.v6)]);
  t.equal((await conns('container=v6app&idle_gap=600')).connections.length, 1, 'within the gap: one connection');
  t.equal((await conns('container=v6app&idle_gap=120')).connections.length, 2, 'five silent minutes: two');
  await env.writer.write([enrich(v6[0]!, lastMs + 301_000, CONTAINERS.v6)]);
  const after = await conns('container=v6app&idle_gap=600');
  t.equal(after.connections.length, 2, 'a bare SYN after the RST opens a new one');
  t.same(after.connections.map((c) => c.packets), [1, 4], 'newest first');
});
