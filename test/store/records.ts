import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { isRecord, type FlowRecord } from '../../src/record.js';
import { decodeFlat, ENTRY_FIELDS, entryValues, type Registries } from '../../src/store/encode.js';
import { BUCKET_MS, parsePartition, type StoreKeys } from '../../src/store/keys.js';
import { fixture } from '../helpers/paths.js';

export const silent = pino({ level: process.env.DOCKFLOW_TEST_LOG ?? 'silent' });

let parsed: { records: readonly FlowRecord[]; messages: readonly string[] } | undefined;

function corpusRecords(): { records: readonly FlowRecord[]; messages: readonly string[] } {
  if (!parsed) {
    const opts = createLineOptions({ referenceMs: Date.UTC(2026, 0, 15) });
    const records: FlowRecord[] = [];
    const messages: string[] = [];
    for (const line of readFileSync(fixture('store', 'flows.kmsg.txt'), 'utf8').split('\n').filter(Boolean)) {
      const r = parseLine(line, opts);
      if (!isRecord(r)) continue;
      records.push(r);
      messages.push(line);
    }
    parsed = { records, messages };
  }
  return parsed;
}

/** The real flows of the corpus scenarios (kmsg records), parsed by the real parser. */
export function realRecords(): readonly FlowRecord[] {
  return corpusRecords().records;
}

/** The start of a partition bucket an hour ago: records made from it are within any default retention. */
export const T0 = Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS - 6 * BUCKET_MS;

/**
 * `n` records cycling through the real ones, record `i` marked by its packet time T0 + i ms (see `seqOf`): up to
 * 600,000 of them fall in one partition.
 */
export function makeRecords(n: number, from = 0): FlowRecord[] {
  const real = realRecords();
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const r = structuredClone(real[i % real.length] as FlowRecord);
    r['@timestamp'] = new Date(T0 + i).toISOString();
    r.event = { ...r.event, ingested: new Date(T0 + i).toISOString() };
    return r;
  });
}

const NO_REGISTRIES: Registries = { containers: new Map(), asNames: new Map() };

/** What the store keeps of a record (the flat fields), as a reader rebuilds it. */
export function projected(r: FlowRecord): FlowRecord {
  const values = entryValues(r, Date.parse(r['@timestamp']));
  return plain(decodeFlat(ENTRY_FIELDS.flatMap((f, i) => [f, values[i]!]), NO_REGISTRIES)!);
}

/** A record as it reads back from JSON (absent `undefined` fields dropped). */
export function plain(r: FlowRecord): FlowRecord {
  return JSON.parse(JSON.stringify(r)) as FlowRecord;
}

export function seqOf(r: FlowRecord): number {
  return Date.parse(r['@timestamp']) - T0;
}

/** The kmsg line a record of `makeRecords` was parsed from: what the service hands the writer with it. */
export function messageOf(r: FlowRecord): string {
  const { messages } = corpusRecords();
  return messages[seqOf(r) % messages.length] as string;
}

export interface Entry {
  /** The partition's stream key, and the partition. */
  stream: string;
  partition: string;
  id: string;
  record: FlowRecord;
}

/** The partition streams listed in the registry, in partition order (bucket, writer). */
export async function partitionStreams(redis: Redis, keys: StoreKeys): Promise<string[]> {
  const names = (await redis.zrange(keys.partitions, '0', '-1')).filter((n) => parsePartition(n) !== undefined);
  return names.map((n) => keys.stream(n));
}

/** Every entry of every partition, decoded (no registries: containers as short ids), partition by partition. */
export async function readStreams(redis: Redis, keys: StoreKeys): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const stream of await partitionStreams(redis, keys)) {
    const partition = /\{([^}]+)\}/.exec(stream)![1]!;
    const entries = (await redis.xrange(stream, '-', '+')) as Array<[string, string[]]>;
    for (const [id, fields] of entries) {
      const record = decodeFlat(fields, NO_REGISTRIES);
      if (!record) throw new Error(`undecodable entry ${stream} ${id}`);
      out.push({ stream, partition, id, record });
    }
  }
  return out;
}

export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
