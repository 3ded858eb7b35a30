import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { SegmentQueue } from '../disk/segment-queue.js';
import type { FlowRecord } from '../record.js';
import { exactBytes } from '../receive/framing.js';
import { CONTEXT_FIELD, decodeMessage, looksLikeRecord, RECORD_FIELD } from './encode.js';

/**
 * A spool frame: JSON with the record in one of the stream's two forms (see encode.ts) — its context (`x`), the
 * message following the JSON after an LF as its exact bytes, or the whole record (`r`) — plus the ID it may already
 * be stored under. JSON text holds no raw LF, so the first one ends it, and the message needs no escaping.
 */
interface SpoolJson {
  r?: unknown;
  x?: unknown;
  m?: unknown;
  id?: unknown;
}

const LF = 0x0a;

export function spoolFrame(message: Buffer | undefined, encoded: string, id?: string): Buffer {
  const form = message !== undefined ? `"${CONTEXT_FIELD}":${encoded}` : `"${RECORD_FIELD}":${encoded}`;
  const json = id === undefined ? `{${form}}` : `{${form},"id":"${id}"}`;
  if (message === undefined) return Buffer.from(json);
  const jsonBytes = Buffer.byteLength(json);
  const frame = Buffer.allocUnsafe(jsonBytes + 1 + message.length);
  frame.write(json, 0);
  frame[jsonBytes] = LF;
  message.copy(frame, jsonBytes + 1);
  return frame;
}

export interface SpooledRecord {
  record: FlowRecord;
  /** The message as text, and its exact bytes when the text does not give them back. */
  message?: string;
  raw?: Buffer;
  id?: string;
}

/** The record a spool frame holds, or `undefined` if it holds none. */
export function spooledRecord(frame: Buffer): SpooledRecord | undefined {
  const lf = frame.indexOf(LF);
  let json: SpoolJson;
  try {
    json = JSON.parse(frame.toString('utf8', 0, lf === -1 ? frame.length : lf)) as SpoolJson;
  } catch {
    return undefined;
  }
  if (typeof json !== 'object' || json === null) return undefined;
  const id = typeof json.id === 'string' ? json.id : undefined;
  if (lf === -1) return looksLikeRecord(json.r) ? { record: json.r, id } : undefined;
  const message = frame.toString('utf8', lf + 1);
  const record = decodeMessage(message, json.x);
  return record === undefined ? undefined : { record, message, raw: exactBytes(message, frame, lf + 1, frame.length), id };
}

const LEGACY_RE = /^(\d{16})\.ndjson$/;

/**
 * Spools written by earlier versions (NDJSON lines `{"m":…,"x":…}` or `{"r":…}`, in `<seq>.ndjson` files) are moved
 * into `queue` ahead of anything else, oldest first, so an upgrade loses nothing. A line that is not JSON (cut by a
 * crash) is kept as a frame that reads back as none, and is counted torn at replay like any other. A crash during the
 * move replays some records twice; none is lost. Returns the number of records moved.
 */
export function importLegacySpool(dir: string, queue: SegmentQueue): number {
  const files = readdirSync(dir)
    .filter((name) => LEGACY_RE.test(name))
    .sort()
    .reverse();
  let moved = 0;
  for (const name of files) {
    const path = join(dir, name);
    const frames: Buffer[] = [];
    for (const line of readFileSync(path, 'utf8').split('\n')) {
      if (line === '') continue;
      frames.push(legacyFrame(line));
    }
    // Newest file first, each written ahead of the last: the oldest ends up first.
    queue.writeHead(frames);
    unlinkSync(path);
    moved += frames.length;
  }
  return moved;
}

function legacyFrame(line: string): Buffer {
  let json: SpoolJson;
  try {
    json = JSON.parse(line) as SpoolJson;
  } catch {
    return Buffer.from(line);
  }
  if (typeof json !== 'object' || json === null || typeof json.m !== 'string') return Buffer.from(line);
  const { m, ...rest } = json;
  const text = JSON.stringify(rest);
  return Buffer.concat([Buffer.from(text), Buffer.from([LF]), Buffer.from(m)]);
}
