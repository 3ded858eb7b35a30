import { createLineOptions, parseLine } from '../parse/line.js';
import type { Endpoint, FlowRecord } from '../record.js';

/*
 * Stream entry schema. An entry holds a record in one of two forms:
 *
 *   m, x   the syslog message as received (`m`, the evidence itself) and, as JSON in the record's own shape, what the
 *          message does not determine (`x`): @timestamp (the year and zone of RFC 3164 stamps are inferred), the
 *          direction (from the configured bridges), host, event.ingested, the GeoIP and container enrichment. The
 *          record is the message parsed, with `x` merged over it (`decodeEntry`). The writer's form for every
 *          received record: half the whole record's bytes in Redis, and a fraction of its JSON to encode
 *          per record (JSON.stringify of the whole ~1.3 KB record was a quarter of the ingest thread's
 *          time; Redis' cost per entry grows with its bytes).
 *   r      the whole record as JSON: records that come with no message (replayed from the spool, written by tests or
 *          other tools), and messages the batch blob cannot carry (see `storableMessage`).
 *
 * Readers decode either with `decodeEntry`.
 */
export const RECORD_FIELD = 'r';
export const MESSAGE_FIELD = 'm';
export const CONTEXT_FIELD = 'x';

export function encodeRecord(record: FlowRecord): string {
  return JSON.stringify(record);
}

/**
 * Whether a message can be stored as `m`: not empty (the batch blob marks an entry stored whole, `r`, by an empty
 * message) and free of 0x1f (the blob's field separator).
 */
export function storableMessage(message: string): boolean {
  return message.length > 0 && message.indexOf('\x1f') === -1;
}

/** The `x` of a record stored with its message: every field that parsing the message alone would not give. */
export function encodeContext(record: FlowRecord): string {
  return JSON.stringify({
    '@timestamp': record['@timestamp'],
    event: record.event,
    host: record.host,
    network: { direction: record.network.direction },
    source: enrichmentOf(record.source),
    destination: enrichmentOf(record.destination),
    container: record.container,
    peer_container: record.peer_container,
    dockflow: record.dockflow,
  });
}

function enrichmentOf(endpoint: Endpoint): Partial<Endpoint> | undefined {
  if (endpoint.geo === undefined && endpoint.as === undefined && endpoint.address_class === undefined) return undefined;
  return { geo: endpoint.geo, as: endpoint.as, address_class: endpoint.address_class };
}

/**
 * Parsing at read time: no length limit (the writer's applied when the message arrived); the zone, bridges and
 * reference time do not matter, as `x` carries what they decide.
 */
const readOptions = createLineOptions({ maxLineBytes: Number.MAX_SAFE_INTEGER });

/**
 * The record stored in one stream entry, from its field list as XRANGE/XREAD return it (`[field, value, …]`).
 * `undefined` when the entry holds no record: readers count those, they do not throw.
 */
export function decodeEntry(fields: readonly string[]): FlowRecord | undefined {
  let message: string | undefined;
  let context: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i];
    if (name === RECORD_FIELD) return decodeRecord(fields[i + 1] as string);
    if (name === MESSAGE_FIELD) message = fields[i + 1];
    else if (name === CONTEXT_FIELD) context = fields[i + 1];
  }
  return message === undefined || context === undefined ? undefined : decodeMessage(message, context);
}

/** A record from its message and context (`m`, `x`), or `undefined` if they do not make one. */
function decodeMessage(message: string, contextJson: string): FlowRecord | undefined {
  let context: unknown;
  try {
    context = JSON.parse(contextJson);
  } catch {
    return undefined;
  }
  if (typeof context !== 'object' || context === null) return undefined;
  const record = parseLine(message, readOptions);
  if (typeof record === 'string') return undefined;
  const c = context as Partial<FlowRecord>;
  if (typeof c['@timestamp'] === 'string') record['@timestamp'] = c['@timestamp'];
  if (c.event !== undefined) record.event = c.event;
  if (c.host !== undefined) record.host = c.host;
  if (c.network !== undefined) Object.assign(record.network, c.network);
  if (c.source !== undefined) Object.assign(record.source, c.source);
  if (c.destination !== undefined) Object.assign(record.destination, c.destination);
  if (c.container !== undefined) record.container = c.container;
  if (c.peer_container !== undefined) record.peer_container = c.peer_container;
  if (c.dockflow !== undefined) record.dockflow = c.dockflow;
  return looksLikeRecord(record) ? record : undefined;
}

/** A record from its JSON text (a stream field or a spool line), or `undefined` if it is not one. */
export function decodeRecord(json: string): FlowRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  return looksLikeRecord(value) ? value : undefined;
}

/** Shape check of what the writer relies on (the direction picks the stream); the rest is trusted as written. */
export function looksLikeRecord(value: unknown): value is FlowRecord {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<FlowRecord>;
  return typeof v['@timestamp'] === 'string' && typeof v.network === 'object' && v.network !== null && typeof v.network.direction === 'string';
}
