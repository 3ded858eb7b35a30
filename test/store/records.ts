import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { isRecord, type FlowRecord } from '../../src/record.js';
import { decodeEntry } from '../../src/store/encode.js';
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

const T0 = Date.UTC(2026, 0, 15);

/** `n` records cycling through the real ones, record `i` marked by `event.ingested` = T0 + i ms (see `seqOf`). */
export function makeRecords(n: number, from = 0): FlowRecord[] {
  const real = realRecords();
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const r = structuredClone(real[i % real.length] as FlowRecord);
    r.event = { ...r.event, ingested: new Date(T0 + i).toISOString() };
    return r;
  });
}

/** A record as it reads back from JSON (absent `undefined` fields dropped). */
export function plain(r: FlowRecord): FlowRecord {
  return JSON.parse(JSON.stringify(r)) as FlowRecord;
}

export function seqOf(r: FlowRecord): number {
  return Date.parse(r.event?.ingested ?? '') - T0;
}

/** The kmsg line a record of `makeRecords` was parsed from: what the service hands the writer with it. */
export function messageOf(r: FlowRecord): string {
  const { messages } = corpusRecords();
  return messages[seqOf(r) % messages.length] as string;
}

export interface Entry {
  stream: string;
  id: string;
  record: FlowRecord;
}

/** Every entry of the streams, decoded, stream by stream. */
export async function readStreams(redis: Redis, streams: readonly string[]): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const stream of streams) {
    const entries = (await redis.xrange(stream, '-', '+')) as Array<[string, string[]]>;
    for (const [id, fields] of entries) {
      const record = decodeEntry(fields);
      if (!record) throw new Error(`undecodable entry ${stream} ${id}`);
      out.push({ stream, id, record });
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
