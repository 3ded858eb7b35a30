/**
 * Query latency and index memory with millions of stored records.
 *
 *   npx tsc && node dist/scripts/bench-query.js [--records 5000000] [--hours 3] [--iterations 200]
 *
 * Starts its own redis-server on a free loopback port (removed at the end), loads synthetic records shaped like
 * parsed LOG lines (varied containers, addresses, ports, countries, ASNs over a few hours) through the real stream
 * writer and indexer, then times every query kind (container, address, CIDR, port, direction, country, top-N,
 * connections, inventory) over HTTP on loopback, and prints p50/p99 and Redis memory per record. Heavy: run it once,
 * not in a loop.
 */
import type net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { buildApp } from '../src/api/app.js';
import { defaultApiLimits } from '../src/api/limits.js';
import { createLineOptions, parseLine } from '../src/parse/line.js';
import type { Direction, FlowRecord } from '../src/record.js';
import { connectRedis } from '../src/store/connect.js';
import { FlowIndexer } from '../src/store/indexer.js';
import { StreamWriter } from '../src/store/stream-writer.js';
import { startRedis } from '../test/helpers/redis.js';

const { values } = parseArgs({
  options: {
    records: { type: 'string', default: '5000000' },
    hours: { type: 'string', default: '3' },
    iterations: { type: 'string', default: '500' },
    'batch-size': { type: 'string', default: '500' },
    remotes: { type: 'string' },
    hostile: { type: 'boolean', default: false },
    'skip-years': { type: 'boolean', default: false },
  },
});
const RECORDS = Number(values.records);
const HOURS = Number(values.hours);
const ITERATIONS = Number(values.iterations);
const BATCH = Number(values['batch-size']);
const PREFIX = 'bench';


/** Deterministic PRNG so two runs load the same data. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = rng(42);
/** Skewed pick: a few values are very common, most are rare, like real destinations. */
const skewed = (n: number): number => Math.floor(n * rand() ** 3);

const CONTAINERS = Array.from({ length: 200 }, (_, i) => ({
  id: (i + 1).toString(16).padStart(4, '0').repeat(16),
  name: `svc${i % 40}-${Math.floor(i / 40) + 1}`,
  service: `svc${i % 40}`,
  image: `registry.example/svc${i % 40}:1.${i % 7}`,
  ip: `172.${17 + (i % 4)}.${Math.floor(i / 250)}.${(i % 250) + 2}`,
}));
const DISTINCT = values.remotes !== undefined;
const REMOTES = Array.from({ length: DISTINCT ? Number(values.remotes) : 20_000 }, (_, i) => ({
  ip: DISTINCT ? `${11 + (Math.floor(i / 65_536) % 200)}.${(i >> 8) & 255}.${i & 255}.1` : `${11 + (i % 200)}.${(i * 7) % 256}.${(i * 13) % 256}.${(i % 250) + 1}`,
  country: ['US', 'DE', 'NL', 'FR', 'GB', 'JP', 'IE', 'SG', 'BR', 'CA'][i % 10]!,
  asn: 64_512 + (i % 500),
}));
const PORTS = [443, 443, 443, 80, 53, 25, 587, 5432, 6379, 9200, 8080, 123, 22];

const lineOptions = createLineOptions();
let nextRemote = 0;

/**
 * A record as the service makes one: a kernel LOG line in an RFC 5424 frame, parsed, then enriched (GeoIP and ASN of
 * the remote side, the container). Stored the writer's way, as the message plus its context (`m`, `x`).
 */
function makeRecord(timeMs: number): { record: FlowRecord; message: string } {
  const c = CONTAINERS[skewed(CONTAINERS.length)]!;
  const remote = DISTINCT ? REMOTES[nextRemote++ % REMOTES.length]! : REMOTES[skewed(REMOTES.length)]!;
  const roll = rand();
  const direction: Direction = roll < 0.8 ? 'egress' : roll < 0.95 ? 'ingress' : 'internal';
  const port = PORTS[Math.floor(rand() * PORTS.length)]!;
  const transport = port === 53 || port === 123 ? 'UDP' : 'TCP';
  const eph = 32768 + Math.floor(rand() * 28000);
  const peer = direction === 'internal' ? CONTAINERS[skewed(CONTAINERS.length)]! : undefined;
  const [src, dst, spt, dpt] =
    direction === 'ingress' ? [remote.ip, c.ip, eph, 8080] : [c.ip, peer?.ip ?? remote.ip, eph, port];
  const [inIf, outIf] = direction === 'ingress' ? ['eth0', 'docker0'] : direction === 'internal' ? ['docker0', 'docker0'] : ['docker0', 'eth0'];
  const l4 = transport === 'TCP' ? `SPT=${spt} DPT=${dpt} WINDOW=64240 RES=0x00 SYN URGP=0 ` : `SPT=${spt} DPT=${dpt} LEN=40 `;
  const message =
    `<4>1 ${new Date(timeMs).toISOString()} docker-host-1 kernel - - - dockflow: IN=${inIf} OUT=${outIf} ` +
    `MAC=02:42:5d:3c:1a:7e:02:42:ac:11:00:02:08:00 SRC=${src} DST=${dst} LEN=60 TOS=0x00 PREC=0x00 TTL=63 ` +
    `ID=${Math.floor(rand() * 65535)} DF PROTO=${transport} ${l4}`;
  const record = parseLine(message, lineOptions, timeMs + 3);
  if (typeof record === 'string') throw new Error(`bench line does not parse (${record}): ${message}`);
  record.event = { ingested: new Date(timeMs + 3).toISOString() };
  const remoteEnd = direction === 'ingress' ? record.source : record.destination;
  if (peer === undefined) {
    remoteEnd.geo = { country_iso_code: remote.country };
    remoteEnd.as = { number: remote.asn, organization: { name: `AS${remote.asn} Example Networks` } };
  }
  record.container = { id: c.id, name: c.name, image: { name: c.image }, labels: { 'com.docker.compose.service': c.service }, match: 'ip' };
  if (peer !== undefined) {
    record.peer_container = { id: peer.id, name: peer.name, image: { name: peer.image }, labels: { 'com.docker.compose.service': peer.service }, match: 'ip' };
  }
  return { record, message };
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1]);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  const server = await startRedis();
  const redis = connectRedis(server.url, pino({ level: 'silent' }));
  while (redis.status !== 'ready') await new Promise((r) => setTimeout(r, 10));
  try {
    const before = await usedMemory(redis);
    const end = Date.now() - 60_000;
    const start = end - HOURS * 3_600_000;
    const step = (end - start) / RECORDS;
    const t0 = performance.now();
    // The real writer and indexer, as the service stores records.
    const writer = new StreamWriter(
      redis,
      { keyPrefix: PREFIX, spoolDir: join(server.dir, 'spool'), retentionMs: 0, batchMaxRecords: BATCH, maxQueueRecords: BATCH * 8 },
      { logger: pino({ level: 'silent' }), registry: new Registry(), indexer: new FlowIndexer({ keyPrefix: PREFIX }) },
    );
    await writer.start();
    let drained: (() => void) | undefined;
    writer.onDrain(() => drained?.());
    for (let j = 0; j < RECORDS; j++) {
      const { record, message } = makeRecord(Math.floor(start + j * step));
      if (!writer.push(record, 'file', message)) await new Promise<void>((r) => (drained = r));
      if (j % 100_000 === 0) process.stderr.write(`\rloaded ${j.toLocaleString()}`);
    }
    while (writer.stats().stored < RECORDS) await new Promise((r) => setTimeout(r, 50));
    await writer.close(1000);
    const loadS = (performance.now() - t0) / 1000;
    process.stderr.write('\n');
    const after = await usedMemory(redis);
    console.log(`records: ${RECORDS.toLocaleString()} over ${HOURS} h; load ${loadS.toFixed(1)} s (${Math.round(RECORDS / loadS).toLocaleString()} records/s through the writer)`);
    console.log(`redis memory: ${((after - before) / RECORDS).toFixed(0)} bytes per record all in`);

    const app = await buildApp({
      limits: defaultApiLimits(),
      redis,
      logger: pino({ level: 'silent' }),
      keyPrefix: PREFIX,
      auth: { required: false },
      lossReport: () => ({ dropped: {}, spooled: 0, pending: 0 }),
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}`;
    const window = (): string => {
      const from = start + rand() * (end - start - 3_600_000);
      return `since=${new Date(from).toISOString()}&until=${new Date(from + 3_600_000).toISOString()}`;
    };
    const remote = (): (typeof REMOTES)[number] => REMOTES[skewed(REMOTES.length)]!;
    const container = (): string => CONTAINERS[skewed(CONTAINERS.length)]!.name;
    const queries: [string, () => string][] = [
      ['container (1 h, limit 100)', () => `/api/flows?container=${container()}&${window()}&limit=100`],
      ['address (1 h, limit 100)', () => `/api/flows?ip=${remote().ip}&${window()}&limit=100`],
      ['CIDR /16 (1 h, limit 100)', () => `/api/flows?dst_ip=${remote().ip.split('.').slice(0, 2).join('.')}.0.0/16&${window()}&limit=100`],
      ['port (1 h, limit 100)', () => `/api/flows?port=${PORTS[Math.floor(rand() * PORTS.length)]}&${window()}&limit=100`],
      ['direction internal (1 h)', () => `/api/flows?direction=internal&${window()}&limit=100`],
      ['country (1 h, limit 100)', () => `/api/flows?country=${remote().country}&${window()}&limit=100`],
      ['everything (no filter, all)', () => `/api/flows?limit=100`],
      ['top by=dst (1 h)', () => `/api/stats/top?by=dst&${window()}&limit=10`],
      ['top by=container (1 h)', () => `/api/stats/top?by=container&${window()}&limit=10`],
      ['top by=port (all)', () => `/api/stats/top?by=port&since=520w&limit=10`],
      ['connections (container, 1 h)', () => `/api/connections?container=${container()}&${window()}`],
      ['inventory (container)', () => `/api/containers/${container()}/inventory?limit=100`],
    ];
    if (values.hostile) {
      await hostile(app);
      await app.close();
      return;
    }
    for (const [name, url] of queries) {
      const times: number[] = [];
      let items = 0;
      for (let i = 0; i < ITERATIONS + 10; i++) {
        const u = url();
        const q0 = performance.now();
        const res = await fetch(base + u);
        const text = await res.text();
        const ms = performance.now() - q0;
        if (res.status !== 200) throw new Error(`${u}: ${res.status} ${text}`);
        if (i >= 10) times.push(ms); // the first few warm up the JIT
        const body = JSON.parse(text) as { count?: number; top?: unknown[]; containers?: { destinations: unknown[] }[] };
        items += body.count ?? body.top?.length ?? body.containers?.[0]?.destinations.length ?? 0;
      }
      times.sort((a, b) => a - b);
      console.log(`${name.padEnd(32)} p50 ${percentile(times, 50).toFixed(1)} ms  p99 ${percentile(times, 99).toFixed(1)} ms  (mean ${Math.round(items / (ITERATIONS + 10))} items)`);
    }
    await app.close();
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

/** Each once, sequentially: status, time, heap growth, longest event-loop stall; then five wide CIDR queries at once. */
async function hostile(app: Awaited<ReturnType<typeof buildApp>>): Promise<void> {
  const urls = [
    ...(values['skip-years'] ? [] : ['/api/stats/top?by=port&since=520w', '/api/stats/top?by=port&since=2016-01-01']),
    '/api/stats/top?by=dst',
    '/api/stats/top?by=dst&since=1d',
    '/api/flows?ip=0.0.0.0/0&since=1d',
    '/api/flows?dst_ip=8.8.0.0/16&since=1d',
    '/api/flows?dst_ip=11.0.0.0/16&since=1d',
    '/api/connections?since=1d',
    '/api/flows?since=999999999w',
  ];
  const loop = monitorEventLoopDelay({ resolution: 10 });
  for (const url of urls) {
    global.gc?.();
    const heap0 = process.memoryUsage().heapUsed;
    loop.reset();
    loop.enable();
    const q0 = performance.now();
    const res = await app.inject({ method: 'GET', url });
    const ms = performance.now() - q0;
    loop.disable();
    const heap = (process.memoryUsage().heapUsed - heap0) / 2 ** 20;
    const body = res.body.length > 160 ? `${res.body.slice(0, 160)}…` : res.body;
    const summary = res.statusCode === 200 ? JSON.stringify({ ...(JSON.parse(res.body) as Record<string, unknown>), items: undefined, top: undefined, connections: undefined, loss: undefined }).slice(0, 220) : body;
    console.log(`${url.padEnd(44)} ${res.statusCode}  ${ms.toFixed(0).padStart(6)} ms  heap ${heap >= 0 ? '+' : ''}${heap.toFixed(0)} MiB  max loop stall ${(loop.max / 1e6).toFixed(0)} ms  ${summary}`);
  }
  const q0 = performance.now();
  const five = await Promise.all(Array.from({ length: 5 }, () => app.inject({ method: 'GET', url: '/api/flows?ip=0.0.0.0/0&since=1d' })));
  console.log(`five at once ip=0.0.0.0/0: ${(performance.now() - q0).toFixed(0)} ms for all; statuses ${five.map((r) => r.statusCode).join(' ')}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
