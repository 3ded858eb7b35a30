/**
 * Ingest benchmark: the real `dockflow serve` as a child process with its own redis-server, fed the burst corpus
 * (real rsyslog frames) over TCP at full speed and over UDP at fixed rates. Prints records stored per second, UDP
 * loss, the service's CPU and peak RSS, the streams' Redis memory per record, and redis-benchmark's XADD rate
 * measured in the same run (the ceiling).
 *
 *   npm run bench:ingest -- [--runs 3] [--tcp-messages 200000] [--udp-rates 20000,50000,100000] [--udp-seconds 5]
 *                          [--variants full,plain,geo] [--only tcp-lf,tcp-octet,udp] [--env KEY=VALUE ...]
 *                          [--cpu-prof-dir DIR]   (V8 CPU profiles of the service, one per run)
 *                          [--redis-stats]        (Redis' time per command, from COMMANDSTATS, after each run)
 *                          [--sse N]              (N live followers on /api/flows/live reading everything meanwhile;
 *                                                  the service's http.maxLiveClients, 64 by default, caps them)
 *
 * Variants (TCP-LF runs; the other tests use the first variant):
 *   full   GeoIP (embedded database) and container attribution, against a stand-in Docker Engine API serving one
 *          container for each container address in the corpus
 *   geo    GeoIP only
 *   plain  neither: receive, parse, store
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { FakeDocker } from '../test/helpers/fake-docker.js';
import { freePort, startRedis, waitForPort, type TestRedis } from '../test/helpers/redis.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const benchFixtures = join(root, 'test', 'fixtures', 'bench');
const clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    'tcp-messages': { type: 'string', default: '200000' },
    'udp-rates': { type: 'string', default: '20000,50000,100000' },
    'udp-seconds': { type: 'string', default: '5' },
    env: { type: 'string', multiple: true, default: [] },
    only: { type: 'string', default: 'tcp-lf,tcp-octet,udp' },
    variants: { type: 'string', default: 'full,geo,plain' },
    'cpu-prof-dir': { type: 'string' },
    'redis-stats': { type: 'boolean', default: false },
    sse: { type: 'string', default: '0' },
  },
});
const serviceNodeArgs = args['cpu-prof-dir'] === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${args['cpu-prof-dir']}`];
const variants = args.variants!.split(',');
const runs = Number(args.runs);
const tcpMessages = Number(args['tcp-messages']);
const udpRates = args['udp-rates']!.split(',').map(Number);
const udpSeconds = Number(args['udp-seconds']);
const only = new Set(args.only!.split(','));
const extraEnv = Object.fromEntries(args.env!.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));

/** LF-framed rsyslog output → one Buffer per frame, without the LF. */
function lfFrames(file: string): Buffer[] {
  const data = gunzipSync(readFileSync(join(benchFixtures, file)));
  const frames: Buffer[] = [];
  let start = 0;
  for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, start)) {
    frames.push(data.subarray(start, i));
    start = i + 1;
  }
  return frames;
}

const frames = lfFrames('burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz');

function buildStream(n: number, octet: boolean): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const f = frames[i % frames.length]!;
    parts.push(octet ? Buffer.concat([Buffer.from(`${f.length} `), f]) : Buffer.concat([f, Buffer.from('\n')]));
  }
  return Buffer.concat(parts);
}

function procStat(pid: number): { cpuSeconds: number; peakRssMb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / clockTicks;
  const hwm = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuSeconds, peakRssMb: Number(hwm?.[1] ?? 0) / 1024 };
}

const containerIps = [...new Set(frames.map((f) => /SRC=(172\.1[78]\.\d+\.\d+)/.exec(f.toString('latin1'))?.[1]).filter((ip): ip is string => ip !== undefined))];

function variantEnv(variant: string, docker: FakeDocker): Record<string, string> {
  switch (variant) {
    case 'full':
      return { GEOIP: 'true', DOCKFLOW_DOCKER: 'true', DOCKER_HOST: docker.unixHost };
    case 'geo':
      return { GEOIP: 'true', DOCKFLOW_DOCKER: 'false' };
    case 'plain':
      return { GEOIP: 'false', DOCKFLOW_DOCKER: 'false' };
    default:
      throw new Error(`unknown variant ${variant}`);
  }
}

async function startService(env: TestRedis, variant: string): Promise<{ child: ChildProcess; syslogPort: number; httpPort: number }> {
  const syslogPort = await freePort();
  const httpPort = await freePort();
  const child = spawn(process.execPath, [...serviceNodeArgs, join(root, 'dist', 'src', 'cli.js'), 'serve'], {
    env: {
      ...process.env,
      REDIS_URL: env.url,
      SYSLOG_HOST: '127.0.0.1',
      SYSLOG_UDP_PORT: String(syslogPort),
      SYSLOG_TCP_PORT: String(syslogPort),
      HTTP_PORT: String(httpPort),
      DOCKFLOW_SPOOL_DIR: join(env.dir, 'spool'),
      LOG_LEVEL: 'warn',
      ...variantEnv(variant, docker),
      ...extraEnv,
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  await waitForPort(syslogPort, 20_000);
  await waitForPort(httpPort, 20_000);
  return { child, syslogPort, httpPort };
}

/** A counter of the service's /metrics (the sum over its labels). */
async function serviceCounter(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[1]);
  return sum;
}

/** Redis memory the streams take (`MEMORY USAGE … SAMPLES 0`: every node counted), without the query indexes. */
async function streamBytes(redis: Redis): Promise<number> {
  let bytes = 0;
  for (const k of await redis.keys('dockflow:flows:*')) bytes += Number(await redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0'));
  return bytes;
}

async function stored(redis: Redis): Promise<number> {
  const keys = await redis.keys('dockflow:flows:*');
  let n = 0;
  for (const k of keys) n += await redis.xlen(k);
  return n;
}

/** Polls until the stored count stops growing for `idleMs`; returns the count and when it last changed. */
async function settle(redis: Redis, expect: number, idleMs = 1500): Promise<{ count: number; lastChangeMs: number }> {
  let count = -1;
  let lastChangeMs = Date.now();
  for (;;) {
    const now = await stored(redis);
    if (now !== count) {
      count = now;
      lastChangeMs = Date.now();
    }
    if (count >= expect || Date.now() - lastChangeMs > idleMs) return { count, lastChangeMs };
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function sendTcp(port: number, payload: Buffer): Promise<void> {
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  const chunk = 256 * 1024;
  for (let off = 0; off < payload.length; off += chunk) {
    if (!s.write(payload.subarray(off, off + chunk))) await once(s, 'drain');
  }
  s.end();
  await once(s, 'close');
}

/** Returns the rate actually achieved: the sender shares the machine's cores with the service. */
async function sendUdp(port: number, rate: number, n: number): Promise<number> {
  const sock = dgram.createSocket('udp4');
  const start = Date.now();
  let sent = 0;
  while (sent < n) {
    const due = Math.min(n, Math.floor(((Date.now() - start) / 1000) * rate) + 1);
    while (sent < due) {
      sock.send(frames[sent % frames.length]!, port, '127.0.0.1');
      sent++;
    }
    await new Promise((r) => setImmediate(r));
  }
  const achieved = n / ((Date.now() - start) / 1000);
  await new Promise<void>((r) => sock.close(() => r()));
  return achieved;
}

interface Row {
  test: string;
  run: number;
  sent: number;
  stored: number;
  seconds: number;
  rate: number;
  lossPct: number;
  /** UDP: the send rate achieved. */
  sentPerSecond?: number;
  cpuSeconds: number;
  redisCpuSeconds: number;
  peakRssMb: number;
  streamBytes: number;
  /** Records that went through the writer's disk spool (work done twice: the queue to Redis was full). */
  spooled: number;
}

/** redis-server's own CPU (all its threads), from INFO: the store's share of the cost of each record. */
async function redisCpuSeconds(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return field('used_cpu_user') + field('used_cpu_sys');
}

/** Where Redis spent its time, per command (commands run by scripts are counted too): the top entries of COMMANDSTATS. */
async function redisCommandStats(redis: Redis): Promise<string> {
  const info = await redis.info('commandstats');
  const rows = [...info.matchAll(/^cmdstat_(\S+?):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/gm)].map((m) => ({ cmd: m[1]!, calls: Number(m[2]), usec: Number(m[3]), per: Number(m[4]) }));
  rows.sort((a, b) => b.usec - a.usec);
  return rows
    .slice(0, 8)
    .map((r) => `${r.cmd} ${r.calls} calls ${(r.usec / 1e6).toFixed(2)} s (${r.per.toFixed(1)} µs/call)`)
    .join('; ');
}

/** `n` live followers reading and discarding everything; resolves with those the service accepted. */
async function followers(httpPort: number, n: number): Promise<{ accepted: number; close: () => void }> {
  const reqs: http.ClientRequest[] = [];
  const statuses = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<number>((resolve) => {
          const req = http.get({ host: '127.0.0.1', port: httpPort, path: '/api/flows/live', agent: false }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', () => resolve(0));
          reqs.push(req);
        }),
    ),
  );
  return { accepted: statuses.filter((s) => s === 200).length, close: () => reqs.forEach((r) => r.destroy()) };
}

async function one(test: string, variant: string, run: number, udpRate?: number): Promise<Row> {
  const env = await startRedis();
  const redis = new Redis(env.url);
  const svc = await startService(env, variant);
  const live = await followers(svc.httpPort, Number(args.sse));
  if (Number(args.sse) > 0) console.error(`  ${live.accepted} of ${args.sse} live followers accepted`);
  try {
    const cpu0 = procStat(svc.child.pid!).cpuSeconds;
    const redisCpu0 = await redisCpuSeconds(redis);
    let sent: number;
    let sentPerSecond: number | undefined;
    const t0 = Date.now();
    if (udpRate === undefined) {
      const payload = buildStream(tcpMessages, test === 'tcp-octet');
      sent = tcpMessages;
      await sendTcp(svc.syslogPort, payload);
    } else {
      sent = udpRate * udpSeconds;
      sentPerSecond = await sendUdp(svc.syslogPort, udpRate, sent);
    }
    const { count, lastChangeMs } = await settle(redis, sent);
    const { cpuSeconds, peakRssMb } = procStat(svc.child.pid!);
    const redisCpu = (await redisCpuSeconds(redis)) - redisCpu0;
    if (args['redis-stats']) console.error(`  redis: ${await redisCommandStats(redis)}`);
    const bytes = await streamBytes(redis);
    const spooled = await serviceCounter(svc.httpPort, 'dockflow_store_records_spooled_total');
    const seconds = (lastChangeMs - t0) / 1000;
    return {
      test: `${test} ${variant}`,
      run,
      sent,
      stored: count,
      seconds,
      rate: count / seconds,
      lossPct: (100 * (sent - count)) / sent,
      ...(sentPerSecond !== undefined ? { sentPerSecond } : {}),
      cpuSeconds: cpuSeconds - cpu0,
      redisCpuSeconds: redisCpu,
      peakRssMb,
      streamBytes: bytes,
      spooled,
    };
  } finally {
    live.close();
    svc.child.kill('SIGTERM');
    await once(svc.child, 'exit');
    redis.disconnect();
    await env.stop();
  }
}

function xaddCeiling(): number {
  // The same record size the service writes: one field holding a record's JSON (~900 bytes).
  const out = execFileSync('bash', [
    '-c',
    'port=$(( (RANDOM % 20000) + 30000 )); dir=$(mktemp -d); redis-server --port $port --bind 127.0.0.1 --save "" --appendonly no --dir $dir --daemonize yes --pidfile $dir/p >/dev/null; sleep 0.3; ' +
      'redis-benchmark -p $port -n 500000 -P 100 -c 4 -q -d 900 XADD s "*" r __data__ 2>/dev/null | tail -1; kill $(cat $dir/p); rm -rf $dir',
  ]).toString();
  const m = /([\d.]+) requests per second/.exec(out);
  return m ? Number(m[1]) : NaN;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const docker = await FakeDocker.start();
containerIps.forEach((ip, i) =>
  // Started well before the corpus was captured, so that attribution as of each packet's time finds them.
  docker.run({ name: `bench-${i}`, image: 'busybox:latest', labels: { 'com.docker.compose.service': `svc${i % 7}` }, networks: { bridge: { ip } } }, Date.parse('2026-01-01T00:00:00Z')),
);
const rows: Row[] = [];
const ceilings: number[] = [];
for (let run = 1; run <= runs; run++) {
  ceilings.push(xaddCeiling());
  for (const test of ['tcp-lf', 'tcp-octet']) {
    if (!only.has(test)) continue;
    for (const variant of test === 'tcp-lf' ? variants : variants.slice(0, 1)) {
      const r = await one(test, variant, run);
      rows.push(r);
      console.error(`${r.test} run ${run}: ${r.stored}/${r.sent} in ${r.seconds.toFixed(2)} s = ${Math.round(r.rate)}/s, cpu ${r.cpuSeconds.toFixed(2)} s, rss ${r.peakRssMb.toFixed(0)} MB`);
    }
  }
  if (only.has('udp')) {
    for (const rate of udpRates) {
      const r = await one(`udp-${rate}`, variants[0]!, run, rate);
      rows.push(r);
      console.error(`udp ${rate}/s run ${run}: sent at ${Math.round(r.sentPerSecond ?? 0)}/s, ${r.stored}/${r.sent}, loss ${r.lossPct.toFixed(3)} %, cpu ${r.cpuSeconds.toFixed(2)} s, rss ${r.peakRssMb.toFixed(0)} MB, spooled ${r.spooled}`);
    }
  }
}

await docker.dispose();
console.log(`\nredis-benchmark XADD (one ~900-byte field, pipelined 100): median ${Math.round(median(ceilings))}/s over ${runs} runs`);
console.log('| test | runs | sent/s achieved (median) | stored/sent (last run) | records/s (median) | loss % (median) | CPU µs/record | Redis CPU µs/record | peak RSS MB | stream bytes/record |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const test of [...new Set(rows.map((r) => r.test))]) {
  const rs = rows.filter((r) => r.test === test);
  const last = rs[rs.length - 1]!;
  console.log(
    `| ${test} | ${rs.length} | ${last.sentPerSecond === undefined ? '-' : Math.round(median(rs.map((r) => r.sentPerSecond ?? 0)))} | ${last.stored}/${last.sent} | ${Math.round(median(rs.map((r) => r.rate)))} | ${median(rs.map((r) => r.lossPct)).toFixed(3)} | ${median(rs.map((r) => (r.cpuSeconds * 1e6) / Math.max(1, r.stored))).toFixed(1)} | ${median(rs.map((r) => (r.redisCpuSeconds * 1e6) / Math.max(1, r.stored))).toFixed(1)} | ${Math.round(Math.max(...rs.map((r) => r.peakRssMb)))} | ${Math.round(median(rs.map((r) => r.streamBytes / Math.max(1, r.stored))))} |`,
  );
}
