/**
 * Query latency and index memory with millions of stored records.
 *
 *   npx tsc && node dist/scripts/bench-query.js [--records 5000000] [--hours 3] [--iterations 200]
 *
 * Starts its own redis-server on a free loopback port (removed at the end), loads synthetic records shaped like
 * parsed LOG lines (varied containers, addresses, ports, countries, ASNs over a few hours) the way the stream writer
 * does (the message and its context, client-side IDs, the real indexer's writes; sent as raw RESP so the load is
 * quick), then times a container query, an IP query
 * and a top query over a one-hour window through the HTTP routes (`inject`), and prints p50/p99 and Redis memory per
 * million records. Heavy: run it once, not in a loop.
 *
 * `--remotes N` gives every record the next of N distinct remote addresses (instead of a skewed pick among 20,000), and
 * `--hostile` then times, once each, the queries that once took the service down (years-long top-N, CIDR over every
 * address, a day of connections, absurd times), with the heap growth and the longest event-loop stall during each:
 *
 *   node dist/scripts/bench-query.js --records 1000000 --remotes 1000000 --hours 24 --hostile
 */
import '../src/runtime/string-prototype.js';
import { once } from 'node:events';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { buildApp } from '../src/api/app.js';
import { defaultApiLimits } from '../src/api/limits.js';
import { createLineOptions, parseLine } from '../src/parse/line.js';
import type { Direction, FlowRecord } from '../src/record.js';
import { CONTEXT_FIELD, encodeContext, MESSAGE_FIELD } from '../src/store/encode.js';
import { INDEX_OPS_SCRIPT } from '../src/store/index-ops.js';
import { FlowIndexer, type RecordFacts } from '../src/store/indexer.js';
import type { IndexEntry } from '../src/store/types.js';
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

/**
 * Raw RESP on a socket of its own, for loading only: with millions of records, ioredis' per-command objects and
 * promises would make the client, not Redis, the thing measured. Replies are counted (and errors kept), not decoded.
 */
class RespLoader {
  private out: string[] = [];
  private outstanding = 0;
  private buf = '';
  private error: string | undefined;
  private waiter: (() => void) | undefined;
  private limit = 0;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
  }

  static async connect(port: number): Promise<RespLoader> {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    return new RespLoader(socket);
  }

  command(...args: (string | number)[]): void {
    let s = `*${args.length}\r\n`;
    for (const a of args) {
      const v = String(a);
      s += `$${Buffer.byteLength(v)}\r\n${v}\r\n`;
    }
    this.out.push(s);
    this.outstanding += 1;
  }

  /** Sends what is queued and waits until at most `maxOutstanding` replies are still due. */
  async flush(maxOutstanding = 20_000): Promise<void> {
    if (this.out.length > 0) {
      this.socket.write(this.out.join(''));
      this.out = [];
    }
    if (this.outstanding > maxOutstanding) {
      this.limit = maxOutstanding;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    if (this.error !== undefined) throw new Error(`redis: ${this.error}`);
  }

  close(): void {
    this.socket.end();
  }

  private onData(d: string): void {
    this.buf += d;
    let at = 0;
    for (;;) {
      const eol = this.buf.indexOf('\r\n', at);
      if (eol < 0) break;
      const type = this.buf[at];
      if (type === '$') {
        const len = Number(this.buf.slice(at + 1, eol));
        const end = len < 0 ? eol + 2 : eol + 2 + len + 2;
        if (end > this.buf.length) break;
        at = end;
      } else {
        if (type === '-') this.error ??= this.buf.slice(at + 1, eol);
        at = eol + 2;
      }
      this.outstanding -= 1;
    }
    this.buf = this.buf.slice(at);
    if (this.waiter !== undefined && this.outstanding <= this.limit) {
      const w = this.waiter;
      this.waiter = undefined;
      w();
    }
  }
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
  const redis = new Redis({ port: server.port, host: '127.0.0.1' });
  try {
    const indexer = new FlowIndexer({ keyPrefix: PREFIX });
    const before = await usedMemory(redis);
    const end = Date.now() - 60_000;
    const start = end - HOURS * 3_600_000;
    const step = (end - start) / RECORDS;
    let lastMs = 0;
    let seq = 0;
    const t0 = performance.now();
    const sha = (await redis.script('LOAD', INDEX_OPS_SCRIPT)) as string;
    const loader = await RespLoader.connect(server.port);
    // The real indexer builds every write.
    const index = (entries: Array<IndexEntry<RecordFacts>>): void => {
      const ops = indexer.build(entries);
      if (ops !== undefined) loader.command('EVALSHA', sha, ops.keys.length, ...ops.keys, ops.encode().toString());
    };
    let batch: Array<IndexEntry<RecordFacts>> = [];
    for (let j = 0; j < RECORDS; j++) {
      const timeMs = Math.floor(start + j * step);
      if (timeMs > lastMs) {
        lastMs = timeMs;
        seq = 0;
      } else seq++;
      const id = `${lastMs}-${seq}`;
      const { record: r, message } = makeRecord(timeMs);
      const stream = `${PREFIX}:flows:${r.network.direction}`;
      loader.command('XADD', stream, id, MESSAGE_FIELD, message, CONTEXT_FIELD, encodeContext(r));
      batch.push({ facts: indexer.facts(r), stream, id });
      if (batch.length === BATCH) {
        index(batch);
        batch = [];
        await loader.flush();
      }
      if (j % 100_000 === 0) process.stderr.write(`\rloaded ${j.toLocaleString()}`);
    }
    index(batch);
    await loader.flush(0);
    loader.close();
    const loadS = (performance.now() - t0) / 1000;
    process.stderr.write('\n');
    const after = await usedMemory(redis);
    let streamBytes = 0;
    for (const d of ['egress', 'ingress', 'internal'] as const) streamBytes += Number(await redis.call('MEMORY', 'USAGE', `${PREFIX}:flows:${d}`, 'SAMPLES', '0'));
    const perMillion = (b: number): string => `${((b / RECORDS) * 1e6 / 2 ** 20).toFixed(0)} MiB`;
    console.log(`records: ${RECORDS.toLocaleString()} over ${HOURS} h; load ${loadS.toFixed(1)} s (${Math.round(RECORDS / loadS).toLocaleString()} records/s incl. indexing)`);
    console.log(`redis memory per million records: total ${perMillion(after - before)}; streams ${perMillion(streamBytes)}; indexes and counters ${perMillion(after - before - streamBytes)}`);

    const app = await buildApp({
      limits: defaultApiLimits(),
      redis,
      logger: pino({ level: 'silent' }),
      keyPrefix: PREFIX,
      auth: { required: false },
      lossReport: () => ({ dropped: {}, spooled: 0, pending: 0 }),
    });
    const window = (): string => {
      const from = start + rand() * (end - start - 3_600_000);
      return `since=${new Date(from).toISOString()}&until=${new Date(from + 3_600_000).toISOString()}`;
    };
    const queries: [string, () => string][] = [
      ['container query (1 h, limit 100)', () => `/api/flows?container=${CONTAINERS[skewed(CONTAINERS.length)]!.name}&${window()}&limit=100`],
      ['IP query (1 h, limit 100)', () => `/api/flows?ip=${REMOTES[skewed(REMOTES.length)]!.ip}&${window()}&limit=100`],
      ['top query (by=dst, 1 h)', () => `/api/stats/top?by=dst&${window()}&limit=10`],
      ['top query (by=container, 1 h)', () => `/api/stats/top?by=container&${window()}&limit=10`],
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
        const res = await app.inject({ method: 'GET', url: u });
        const ms = performance.now() - q0;
        if (res.statusCode !== 200) throw new Error(`${u}: ${res.statusCode} ${res.body}`);
        if (i >= 10) times.push(ms); // the first few warm up the JIT
        const body = res.json() as { count?: number; top?: unknown[] };
        items += body.count ?? body.top?.length ?? 0;
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
