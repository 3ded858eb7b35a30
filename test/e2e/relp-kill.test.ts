/**
 * RELP end to end: a real rsyslog (imfile → omrelp, rsyslog-relp) sends the 50,000-line burst of real rsyslog lines to
 * `dockflow serve` in a process of its own, which is killed with SIGKILL mid-burst and started again. Every line
 * must be stored; a line stored twice can only be one rsyslog sent again because its answer was lost with the
 * process (at most omrelp's window), and each such second copy must be detected (counted, same `event.hash`).
 */
import t from 'tap';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { relpHash } from '../../src/receive/relp.js';
import { fixture } from '../helpers/paths.js';
import { freePort, startRedis } from '../helpers/redis.js';
import { rsyslogUnsupported, startRsyslogSender } from '../helpers/rsyslog-sender.js';
import { serveProcess, type ServeProcess } from '../helpers/serve-process.js';
import { storedCount, streamKeys } from '../helpers/streams.js';
import { tempDir } from '../helpers/temp.js';
import { until } from '../receive/harness.js';

const skip = rsyslogUnsupported(['imfile', 'omrelp']);
const LINES = gunzipSync(readFileSync(fixture('bench', 'burst-5000.rsyslog-rfc5424-tcp-lf.bin.gz'))).toString('utf8').split('\n').filter((l) => l !== '');
/** omrelp's window: the most frames it has unanswered on a session, so the most it can send twice per lost session. */
const WINDOW = 128;

/** Every stored entry's `event.hash`, read from its context JSON. */
async function storedHashes(redis: Redis): Promise<string[]> {
  const hashes: string[] = [];
  for (const key of await streamKeys(redis)) {
    for (const [, fields] of (await redis.xrange(key, '-', '+')) as Array<[string, string[]]>) {
      const x = fields[fields.indexOf('x') + 1];
      hashes.push((JSON.parse(x ?? '{}') as { event?: { hash?: string } }).event?.hash ?? 'none');
    }
  }
  return hashes;
}

async function metric(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

t.test('rsyslog omrelp → dockflow killed with SIGKILL mid-burst and restarted: every line stored, duplicates detected', { skip: skip ?? false }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  const dir = tempDir(t, 'relp');
  const [relpPort, httpPort] = [await freePort(), await freePort()];
  const serve = async (): Promise<ServeProcess> => {
    const service = serveProcess(t, {
      REDIS_URL: redis.url,
      SYSLOG_HOST: '127.0.0.1',
      SYSLOG_UDP: 'false',
      SYSLOG_TCP: 'false',
      SYSLOG_RELP: 'true',
      SYSLOG_RELP_PORT: String(relpPort),
      HTTP_PORT: String(httpPort),
      DOCKFLOW_SPOOL_DIR: join(dir, 'spool'),
      DOCKFLOW_DOCKER: 'false',
      GEOIP: 'false',
    });
    await service.logged('dockflow serving');
    return service;
  };

  const first = await serve();
  const rs = await startRsyslogSender(
    t,
    join(dir, 'rsyslog'),
    `action(type="omrelp" target="127.0.0.1" port="${relpPort}" template="raw" windowSize="${WINDOW}"
      action.resumeRetryCount="-1" action.resumeInterval="1")`,
    '',
    ['omrelp'],
  );
  const started = Date.now();
  appendFileSync(rs.input, LINES.join('\n') + '\n');
  await until(async () => (await storedCount(client)) >= 10_000);
  first.child.kill('SIGKILL');
  await first.exited;
  const atKill = await storedCount(client);
  t.ok(atKill < LINES.length, `killed mid-burst (${atKill} of ${LINES.length} stored)`);

  const second = await serve();
  await until(async () => new Set(await storedHashes(client)).size >= LINES.length);
  const seconds = (Date.now() - started) / 1000;

  const hashes = await storedHashes(client);
  const distinct = new Set(hashes);
  const expected = new Set(LINES.map((line) => relpHash('127.0.0.1', Buffer.from(line))));
  t.equal(distinct.size, LINES.length, 'every line stored');
  t.same([...distinct].filter((h) => !expected.has(h)), [], 'nothing else stored');
  const duplicates = hashes.length - distinct.size;
  const detected = await metric(httpPort, 'dockflow_relp_duplicates_total');
  t.ok(duplicates <= WINDOW, `duplicates (${duplicates}) at most omrelp's window of ${WINDOW}: frames unanswered at the kill`);
  t.equal(detected, duplicates, 'each second copy was detected on arrival');
  t.equal(await metric(httpPort, 'dockflow_relp_refused_total'), 0);
  t.comment(`RELP kill -9: sent ${LINES.length}, stored at kill ${atKill}, stored ${hashes.length}, distinct ${distinct.size}, duplicates ${duplicates}, detected ${detected}; ${seconds.toFixed(1)} s including the restart`);
  await rs.stop();
  second.child.kill('SIGTERM');
  await second.exited;
});
