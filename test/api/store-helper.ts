/**
 * Test support: records from real corpus lines, enriched the way the attribution and GeoIP stages would, and written
 * the way the stream writer does (explicit increasing IDs, XADD and the indexer in one pipeline).
 */
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { isRecord, type FlowRecord } from '../../src/record.js';
import { applyIndexOps } from '../../src/store/index-ops.js';
import { FlowIndexer, IndexKeys, remoteSide } from '../../src/store/indexer.js';
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

/** Writes like the stream writer: client-side `<ms>-<seq>` IDs, XADD, then the indexer's writes. */
export class TestWriter {
  readonly indexer: FlowIndexer;
  readonly keys: IndexKeys;
  private lastMs = 0;
  private seq = 0;

  constructor(
    readonly redis: Redis,
    prefix = PREFIX,
  ) {
    this.indexer = new FlowIndexer({ keyPrefix: prefix });
    this.keys = this.indexer.keys;
  }

  nextId(): string {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.seq = 0;
    } else this.seq += 1;
    return `${this.lastMs}-${this.seq}`;
  }

  /** Returns `<direction>/<id>` of each record, as the API reports it in `event.id`. */
  async write(records: FlowRecord[]): Promise<string[]> {
    const pl = this.redis.pipeline();
    const entries = records.map((record) => {
      const id = this.nextId();
      const stream = this.keys.stream(record.network.direction);
      pl.xadd(stream, id, 'r', JSON.stringify(record));
      return { record, stream, id };
    });
    const refs = entries.map((e) => `${e.record.network.direction}/${e.id}`);
    const res = await pl.exec();
    for (const [err] of res ?? []) if (err) throw err;
    const ops = this.indexer.build(entries.map(({ record, stream, id }) => ({ facts: this.indexer.facts(record), stream, id })));
    if (ops !== undefined) await applyIndexOps(this.redis, ops);
    return refs;
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
  return {
    server,
    redis,
    writer: new TestWriter(redis),
    logger: pino({ level: 'silent' }),
    async close() {
      redis.disconnect();
      await server.stop();
    },
  };
}
