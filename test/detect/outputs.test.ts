import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { runHunt } from '../../src/cli/hunt.js';
import { runParse } from '../../src/cli/parse-command.js';
import { alertFields, alertFromFields, type Alert } from '../../src/detect/engine.js';
import { startDetection } from '../../src/detect/live.js';
import { AlertStream, newOutputCounters, Webhook } from '../../src/detect/outputs.js';
import { startRedis } from '../helpers/redis.js';
import { tempDir } from '../helpers/temp.js';
import { record, syslogLine, WEB } from './lines.js';

const silent = pino({ level: 'silent' });
const T0 = Date.parse('2026-12-01T10:00:00Z');

const ALERT: Alert = {
  rule: 'r',
  severity: 'high',
  description: 'd',
  kind: 'new',
  count: 1,
  group: 'r|shop-web-1|198.51.100.2',
  time: '2026-12-01T10:00:00.000Z',
  last: '2026-12-01T10:00:00.000Z',
  direction: 'egress',
  transport: 'tcp',
  dst_port: 25,
  remote_asn: 64500,
  container_name: 'shop-web-1',
};

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('alerts are flat stream fields and come back the same', async (t) => {
  const fields = alertFields(ALERT);
  t.equal(fields.length % 2, 0);
  t.ok(fields.every((f) => typeof f === 'string'));
  t.same(alertFromFields('1-0', fields), { id: '1-0', ...ALERT });
});

t.test('the stream output writes in batches and counts what it cannot queue', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.quit());
  const counters = newOutputCounters();
  const stored: Alert[] = [];
  const s = new AlertStream(client, { key: 'dockflow:alerts', maxLen: 1000, maxQueue: 3, flushIntervalMs: 10 }, counters, silent, (a) => stored.push(a));
  for (let i = 0; i < 5; i++) s.push({ ...ALERT, count: i + 1 });
  await s.close();
  t.equal(counters.stored, 3);
  t.equal(counters.streamDropped, 2);
  t.equal(await client.xlen('dockflow:alerts'), 3);
  t.match(stored[0]!.id, /^\d+-\d+$/);
});

t.test('the webhook retries with backoff, keeps order, bounds its queue and counts failures', async (t) => {
  const received: Alert[] = [];
  let failuresLeft = 2;
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      t.equal(req.headers['content-type'], 'application/json');
      if (failuresLeft-- > 0) return void res.writeHead(503).end();
      received.push(JSON.parse(body) as Alert);
      res.writeHead(200).end();
    });
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/`;

  const counters = newOutputCounters();
  const hook = new Webhook({ url, maxQueue: 10, maxAttempts: 5, backoffMs: 10, timeoutMs: 2000 }, counters, silent);
  for (let i = 1; i <= 3; i++) hook.push({ ...ALERT, count: i });
  await until(() => counters.webhookSent === 3, 'three deliveries');
  t.same(received.map((a) => a.count), [1, 2, 3], 'in order, after two failed attempts');
  t.match(counters, { webhookSent: 3, webhookFailures: 2, webhookDropped: 0 });

  // Nothing listening: every attempt fails, the alert is given up and counted; a full queue drops the oldest waiting.
  const dead = new Webhook({ url: 'http://127.0.0.1:1/', maxQueue: 2, maxAttempts: 2, backoffMs: 10, timeoutMs: 500 }, counters, silent);
  for (let i = 1; i <= 4; i++) dead.push({ ...ALERT, count: i });
  await until(() => dead.queued === 0, 'the dead webhook to give up');
  t.equal(counters.webhookDropped, 4, 'two dropped for room, two after their attempts');
  t.equal(counters.webhookFailures, 2 + 4);
  dead.close();
  hook.close();
});

t.test('first-contact baselines survive a restart (Redis), written off the hot path', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.quit());
  const dir = tempDir(t, 'rules');
  writeFileSync(join(dir, 'fc.yaml'), '- rule: new-remote\n  condition: network.direction = egress\n  first_contact: {of: remote.ip, per: service, learning: 1h}\n');
  const opts = {
    paths: [dir],
    groupWindowMs: 600_000,
    maxGroups: 100,
    maxStateKeys: 100,
    alertsKey: 'dockflow:alerts',
    baselinesKey: 'dockflow:detect:baselines',
    alertsMaxLen: 1000,
    alertsMaxQueue: 100,
    baselineFlushMs: 20,
    reloadDebounceMs: 20,
  };
  const first = await startDetection(opts, { redis: client, logger: silent, registry: new Registry() });
  first.observe(record({ kind: 'egressTcp', timeMs: T0, dst: '192.0.2.1', dpt: 443 }, WEB), T0);
  first.observe(record({ kind: 'egressTcp', timeMs: T0 + 60_000, dst: '192.0.2.2', dpt: 443 }, WEB), T0);
  await until(() => first.detector.baselines.dirty.size === 0, 'the baseline write');
  await first.close();
  const stored = await client.hgetall('dockflow:detect:baselines');
  t.same(Object.keys(stored), ['new-remote|remote.ip|web']);
  t.same(JSON.parse(stored['new-remote|remote.ip|web']!), { s: T0, v: ['192.0.2.1', '192.0.2.2'] });

  // Restarted: the learning period still began at T0, so two hours later a known remote is quiet and a new one fires.
  const second = await startDetection(opts, { redis: client, logger: silent, registry: new Registry() });
  t.teardown(() => second.close());
  second.observe(record({ kind: 'egressTcp', timeMs: T0 + 7_200_000, dst: '192.0.2.2', dpt: 443 }, WEB), T0);
  second.observe(record({ kind: 'egressTcp', timeMs: T0 + 7_200_000, dst: '192.0.2.3', dpt: 443 }, WEB), T0);
  t.same(second.detector.fired.get('new-remote'), 1);
  await second.close();
  const alerts = await client.xrange('dockflow:alerts', '-', '+');
  t.equal(alerts.length, 1);
  t.match(alertFromFields(alerts[0]![0], alerts[0]![1]), { rule: 'new-remote', remote_ip: '192.0.2.3', reason: /first remote.ip 192\.0\.2\.3 for service web \(learning since 2026-12-01T10:00:00\.000Z, 2 known\)/ });
});

t.test('dockflow parse FILE | dockflow hunt --rules FILE -', async (t) => {
  const dir = tempDir(t, 'hunt');
  const log = join(dir, 'kern.log');
  const lines = [0, 1, 2].map((i) => syslogLine({ kind: 'egressTcp', timeMs: T0 + i * 60_000, dst: '198.51.100.2', dpt: 25, spt: 40000 + i }));
  lines.push(syslogLine({ kind: 'egressUdp', timeMs: T0 + 5000, dst: '198.51.100.53', dpt: 53 }));
  writeFileSync(log, `${lines.join('\n')}\n`);
  const rules = join(dir, 'smtp.yaml');
  writeFileSync(rules, '- rule: smtp-out\n  severity: high\n  condition: network.direction = egress and destination.port = 25\n');

  const parsed = new PassThrough();
  let ndjson = '';
  parsed.on('data', (c: Buffer) => (ndjson += c.toString()));
  t.equal(await runParse(['--year', '2026', log], { stdin: new PassThrough(), stdout: parsed, stderr: new PassThrough() }), 0);

  const input = new PassThrough();
  input.end(`${ndjson}not json\n`);
  const out = new PassThrough();
  let printed = '';
  out.on('data', (c: Buffer) => (printed += c.toString()));
  const err = new PassThrough();
  let complaints = '';
  err.on('data', (c: Buffer) => (complaints += c.toString()));
  t.equal(await runHunt(['--rules', rules, '-'], { stdin: input, stdout: out, stderr: err, env: {} }), 1);
  const alerts = printed.trim().split('\n').map((l) => JSON.parse(l) as Alert);
  t.match(alerts, [{ rule: 'smtp-out', count: 3, time: new Date(T0).toISOString(), last: new Date(T0 + 120_000).toISOString(), dst_port: 25 }]);
  t.match(complaints, /1 input lines were not flow records/);

  const text = new PassThrough();
  let readable = '';
  text.on('data', (c: Buffer) => (readable += c.toString()));
  const again = new PassThrough();
  again.end(ndjson);
  await runHunt(['--rules', rules, '--text', '-'], { stdin: again, stdout: text, stderr: new PassThrough(), env: {} });
  t.match(readable, /^2026-12-01T10:00:00\.000Z high {5}smtp-out 172\.17\.0\.2 → 198\.51\.100\.2:25 ×3\n$/);

  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, '- rule: x\n  condition: nope = 1\n');
  const e2 = new PassThrough();
  let e2text = '';
  e2.on('data', (c: Buffer) => (e2text += c.toString()));
  t.equal(await runHunt(['--rules', bad, '-'], { stdin: new PassThrough(), stdout: new PassThrough(), stderr: e2, env: {} }), 2);
  t.match(e2text, /bad\.yaml item 1: rule x: unknown field or macro 'nope'/);
  t.equal(await runHunt(['--rules', rules], { stdin: new PassThrough(), stdout: new PassThrough(), stderr: new PassThrough(), env: {} }), 2, 'no Redis named');
});
