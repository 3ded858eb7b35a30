/**
 * Scale-out benchmark: 1, 2 and 4 `dockflow serve` ingester processes (distinct DOCKFLOW_INGESTER_ID, own ports and
 * spools, GeoIP on, no Docker) feeding one store at once, each sent its share of the burst corpus over TCP-LF at full
 * speed. Prints records stored per second (first byte sent to the last record in Redis), and CPU per record of the
 * ingesters together and of Redis (from /proc and INFO cpu).
 *
 *   npm run bench:scale -- [--runs 3] [--messages 200000] [--ingesters 1,2,4] [--target single|cluster]
 *
 * `--target cluster` (a 3-master Redis Cluster) needs the cluster-safe store layout: with today's layout the service
 * refuses a cluster URL, and this prints why.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { CLUSTER_SAFE_LAYOUT } from '../src/store/keys.js';
import { freePort, startRedis, waitForPort } from '../test/helpers/redis.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    messages: { type: 'string', default: '200000' },
    ingesters: { type: 'string', default: '1,2,4' },
    target: { type: 'string', default: 'single' },
  },
});
const runs = Number(args.runs);
const total = Number(args.messages);
const counts = args.ingesters!.split(',').map(Number);

if (args.target === 'cluster' && !CLUSTER_SAFE_LAYOUT) {
  process.stdout.write(
    'cluster: blocked: the store layout is not cluster-safe (CLUSTER_SAFE_LAYOUT false): its batches, trim and queries touch keys of many hash slots (see docs/scaling.md), so dockflow serve refuses a cluster URL.\n',
  );
  process.exit(0);
}

const data = gunzipSync(readFileSync(join(root, 'test', 'fixtures', 'bench', 'burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz')));
const frames: Buffer[] = [];
for (let start = 0, i = data.indexOf(10); i !== -1; start = i + 1, i = data.indexOf(10, start)) frames.push(data.subarray(start, i + 1));
const payload = (n: number, offset: number): Buffer => Buffer.concat(Array.from({ length: n }, (_, k) => frames[(offset + k) % frames.length]!));

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / clockTicks;
}

async function redisCpu(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const get = (k: string): number => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return get('used_cpu_sys') + get('used_cpu_user');
}

async function stored(redis: Redis): Promise<number> {
  let n = 0;
  for (const k of await redis.keys('dockflow:flows:*')) if ((await redis.type(k)) === 'stream') n += await redis.xlen(k);
  return n;
}

async function send(port: number, buf: Buffer): Promise<void> {
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  for (let off = 0; off < buf.length; off += 256 * 1024) if (!s.write(buf.subarray(off, off + 256 * 1024))) await once(s, 'drain');
  s.end();
  await once(s, 'close');
}

async function run(n: number): Promise<{ rate: number; ingestUs: number; redisUs: number }> {
  const redisServer = await startRedis();
  const redis = new Redis(redisServer.url);
  const dir = mkdtempSync(join(tmpdir(), 'dockflow-scale-'));
  const procs: Array<{ child: ChildProcess; port: number }> = [];
  try {
    for (let i = 0; i < n; i++) {
      const port = await freePort();
      const http = await freePort();
      const child = spawn(process.execPath, [join(root, 'dist', 'src', 'cli.js'), 'serve'], {
        env: {
          ...process.env, REDIS_URL: redisServer.url, SYSLOG_HOST: '127.0.0.1', SYSLOG_TCP_PORT: String(port), SYSLOG_UDP: 'false',
          HTTP_PORT: String(http), DOCKFLOW_SPOOL_DIR: join(dir, `spool-${i}`), DOCKFLOW_INGESTER_ID: `bench-${i}`,
          DOCKFLOW_DOCKER: 'false', GEOIP: 'true', LOG_LEVEL: 'warn',
        },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      procs.push({ child, port });
      await waitForPort(port, 30_000);
      await waitForPort(http, 30_000);
    }
    const share = Math.floor(total / n);
    const bufs = procs.map((_, i) => payload(share, i * share));
    const cpu0 = procs.map((p) => cpuSeconds(p.child.pid!));
    const r0 = await redisCpu(redis);
    const t0 = process.hrtime.bigint();
    await Promise.all(procs.map((p, i) => send(p.port, bufs[i]!)));
    while ((await stored(redis)) < share * n) await new Promise((r) => setTimeout(r, 20));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const ingestCpu = procs.reduce((s, p, i) => s + cpuSeconds(p.child.pid!) - cpu0[i]!, 0);
    const redisCpuS = (await redisCpu(redis)) - r0;
    return { rate: (share * n) / seconds, ingestUs: (ingestCpu / (share * n)) * 1e6, redisUs: (redisCpuS / (share * n)) * 1e6 };
  } finally {
    for (const p of procs) p.child.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.child.exitCode === null ? once(p.child, 'exit') : undefined)));
    redis.disconnect();
    await redisServer.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
process.stdout.write(`target: one Redis; ${total} records (TCP-LF, GeoIP on, no Docker) split over the ingesters; median of ${runs}\n`);
process.stdout.write('| ingesters | records/s | ingesters CPU µs/record | Redis CPU µs/record | runs (records/s) |\n|---|---|---|---|---|\n');
for (const n of counts) {
  const results = [];
  for (let r = 0; r < runs; r++) results.push(await run(n));
  const rates = results.map((x) => x.rate);
  process.stdout.write(
    `| ${n} | ${Math.round(median(rates))} | ${median(results.map((x) => x.ingestUs)).toFixed(1)} | ${median(results.map((x) => x.redisUs)).toFixed(1)} | ${rates.map((x) => Math.round(x)).join(', ')} |\n`,
  );
}
