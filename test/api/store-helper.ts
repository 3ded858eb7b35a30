/**
 * Test support: records from real corpus lines, enriched the way the attribution and GeoIP stages would, and written
 * the way the stream writer does (explicit increasing IDs, XADD and the indexer in one pipeline).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { isRecord, type FlowRecord } from '../../src/record.js';
import { connectRedis } from '../../src/store/connect.js';
import { packetTimeMs } from '../../src/store/encode.js';
import { FlowIndexer, remoteSide } from '../../src/store/indexer.js';
import { bucketOf, partitionName, type StoreKeys } from '../../src/store/keys.js';
import { StreamWriter } from '../../src/store/stream-writer.js';
import { fixture } from '../helpers/paths.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

export const PREFIX = 'dft';
export const BASE_MS = Date.UTC(2026, 10, 27, 8, 0, 0);

export function corpusRecords(name: string): FlowRecord[] {
  const opts = createLineOptions({ hostName: 'docker-host-1' });
  const out: FlowRecord[] = [];
  for (const line of readFileSync(fixture('api', name), 'utf8').split('\n')) {
    if (line === '') continue;
    const r = parseLine(line, opts);
    if (isRecord(r)) out.push(r);
  }
  return out;
}

export interface ContainerFixture {
  id: string;
  name: string;
  service?: string;
}

export const CONTAINERS = {
  mailer: { id: 'a1'.repeat(32), name: 'mailer', service: 'mail' },
  resolver: { id: 'b2'.repeat(32), name: 'resolver', service: 'dns' },
  pinger: { id: 'c3'.repeat(32), name: 'pinger' },
  web: { id: 'd4'.repeat(32), name: 'web-1', service: 'web' },
  v6: { id: 'e5'.repeat(32), name: 'v6app', service: 'web' },
} satisfies Record<string, ContainerFixture>;

/** Sets time, container attribution and remote GeoIP/ASN as the enrichment stages would. */
export function enrich(r: FlowRecord, timeMs: number, c: ContainerFixture | undefined, geo?: { country: string; asn: number }): FlowRecord {
  const out: FlowRecord = structuredClone(r);
  out['@timestamp'] = new Date(timeMs).toISOString();
  if (c !== undefined) {
    out.container = {
      id: c.id,
      name: c.name,
      match: 'ip',
      ...(c.service !== undefined ? { labels: { 'com.docker.compose.service': c.service } } : {}),
    };
  }
  if (geo !== undefined) {
    const remote = out[remoteSide(out.network.direction)];
    remote.geo = { country_iso_code: geo.country };
    remote.as = { number: geo.asn };
  }
  return out;
}

/** Writes through the real stream writer and indexer, and tells where each record went. */
export class TestWriter {
  readonly indexer: FlowIndexer;
  readonly keys: StoreKeys;
  private writer: StreamWriter | undefined;
  private client: Redis | undefined;
  private readonly spoolDir = mkdtempSync(join(tmpdir(), 'dockflow-test-writer-'));
  private pushed = 0;

  constructor(
    readonly redis: Redis,
    readonly prefix = PREFIX,
    readonly opts: { keepOriginal?: boolean; writerId?: string; retentionMs?: number } = {},
  ) {
    this.indexer = new FlowIndexer({ keyPrefix: prefix });
    this.keys = this.indexer.keys;
  }

  private async start(): Promise<StreamWriter> {
    if (this.writer !== undefined) return this.writer;
    const { host, port } = this.redis.options;
    this.client = connectRedis(`redis://${host}:${port}`, pino({ level: 'silent' }));
    while (this.client.status !== 'ready') await new Promise((r) => setTimeout(r, 5));
    this.writer = new StreamWriter(
      this.client,
      { keyPrefix: this.prefix, spoolDir: this.spoolDir, flushIntervalMs: 2, retentionMs: this.opts.retentionMs ?? 0, writerId: this.opts.writerId ?? 'w1', keepOriginal: this.opts.keepOriginal ?? false },
      { logger: pino({ level: 'silent' }), registry: new Registry(), indexer: this.indexer },
    );
    await this.writer.start();
    return this.writer;
  }

  /** Returns `<partition>/<id>` of each record, as the API reports it in `event.id`. */
  async write(records: FlowRecord[], messages?: string[]): Promise<string[]> {
    const w = await this.start();
    const byPart = new Map<string, number[]>();
    records.forEach((r, i) => {
      const part = partitionName(bucketOf(packetTimeMs(r)), this.opts.writerId ?? 'w1');
      let list = byPart.get(part);
      if (list === undefined) byPart.set(part, (list = []));
      list.push(i);
      w.push(r, 'tcp', messages?.[i]);
    });
    this.pushed += records.length;
    while (w.stats().stored < this.pushed) await new Promise((r) => setTimeout(r, 5));
    const refs: string[] = new Array<string>(records.length);
    for (const [part, indexes] of byPart) {
      const ids = ((await this.redis.xrevrange(this.keys.stream(part), '+', '-', 'COUNT', indexes.length)) as [string, string[]][]).map(([id]) => id).reverse();
      indexes.forEach((i, k) => (refs[i] = `${part}/${ids[k]}`));
    }
    return refs;
  }

  async close(): Promise<void> {
    await this.writer?.close(1000);
    this.client?.disconnect();
    rmSync(this.spoolDir, { recursive: true, force: true });
  }
}

export interface Dataset {
  records: FlowRecord[];
  /** `event.id` of each record, same order. */
  refs: string[];
}

const GEO = { country: 'NL', asn: 64500 };

/** Every corpus scenario, one container each, one record per second from BASE_MS, plus IPv6. */
export function buildDataset(): FlowRecord[] {
  const parts: [string, ContainerFixture][] = [
    ['tcp-egress-smtp.kmsg.txt', CONTAINERS.mailer],
    ['udp-dns-egress.kmsg.txt', CONTAINERS.resolver],
    ['icmp-echo.kmsg.txt', CONTAINERS.pinger],
    ['ingress-published-port.kmsg.txt', CONTAINERS.web],
    ['ipv6-egress.kmsg.txt', CONTAINERS.v6],
  ];
  const out: FlowRecord[] = [];
  for (const [file, c] of parts) {
    for (const r of corpusRecords(file)) out.push(enrich(r, BASE_MS + out.length * 1000, c, file.startsWith('ipv6') ? { country: 'US', asn: 64501 } : GEO));
  }
  return out;
}

export interface Env {
  server: TestRedis;
  redis: Redis;
  writer: TestWriter;
  logger: Logger;
  close(): Promise<void>;
}

export async function startEnv(): Promise<Env> {
  const server = await startRedis();
  const redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
  const writer = new TestWriter(redis);
  return {
    server,
    redis,
    writer,
    logger: pino({ level: 'silent' }),
    async close() {
      await writer.close();
      redis.disconnect();
      await server.stop();
    },
  };
}
