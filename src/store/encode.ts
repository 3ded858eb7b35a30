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
 *   r      the whole record as JSON: records that come with no message (written by tests or other tools).
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
 * The `x` of a record stored with its message: every field that parsing the message alone would not give. Written out
 * by hand, the same text `JSON.stringify` gives for those fields gathered in a new object (a test holds the two
 * equal), faster: what records share (a GeoIP answer with its ASN and class, a container, the database epochs) is
 * serialized once.
 */
export function encodeContext(record: FlowRecord): string {
  let json = `{"@timestamp":${quote(record['@timestamp'])}`;
  const event = record.event;
  // kind, category, type and action come from the message; only the receive time (an ID, if any, and RELP's hash of
  // sender and bytes, which recognises a resent message) is context.
  if (event !== undefined && (event.ingested !== undefined || event.id !== undefined || event.hash !== undefined)) {
    json += `,"event":${flatJson({ ingested: event.ingested, id: event.id, hash: event.hash })}`;
  }
  if (record.host !== undefined) json += `,"host":${flatJson(record.host)}`;
  json += `,"network":{"direction":${quote(record.network.direction)}}`;
  json += enrichmentJson(',"source":', record.source);
  json += enrichmentJson(',"destination":', record.destination);
  if (record.container !== undefined) json += `,"container":${sharedJson(record.container)}`;
  if (record.peer_container !== undefined) json += `,"peer_container":${sharedJson(record.peer_container)}`;
  if (record.dockflow !== undefined) json += `,"dockflow":${dockflowJson(record.dockflow)}`;
  return `${json}}`;
}

/** Characters `JSON.stringify` escapes: quote, backslash, controls, and surrogates (it escapes lone ones). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

function quote(value: string): string {
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
}

/** An object of strings (the record's `event` and `host`); anything else goes to `JSON.stringify`. */
function flatJson(value: object): string {
  let json = '';
  for (const key in value) {
    const v = (value as Record<string, unknown>)[key];
    if (v === undefined) continue;
    if (typeof v !== 'string') return JSON.stringify(value);
    json += `,${quote(key)}:${quote(v)}`;
  }
  return `{${json.slice(1)}}`;
}

/** What the enricher puts on a remote endpoint, serialized once per GeoIP answer (see sharedJson). */
interface EndpointJson {
  as: object | undefined;
  addressClass: string | undefined;
  json: string;
}
const endpointJson = new WeakMap<object, EndpointJson>();

function enrichmentJson(name: string, endpoint: Endpoint): string {
  const { geo, as, address_class: addressClass } = endpoint;
  const key = geo ?? as;
  if (key === undefined) return addressClass === undefined ? '' : `${name}{"address_class":${quote(addressClass)}}`;
  const cached = endpointJson.get(key);
  if (cached !== undefined && cached.as === as && cached.addressClass === addressClass) return name + cached.json;
  let json = '';
  if (geo !== undefined) json += `,"geo":${sharedJson(geo)}`;
  if (as !== undefined) json += `,"as":${sharedJson(as)}`;
  if (addressClass !== undefined) json += `,"address_class":${quote(addressClass)}`;
  json = `{${json.slice(1)}}`;
  if (frozenJson.has(key) && (as === undefined || frozenJson.has(as))) endpointJson.set(key, { as, addressClass, json });
  return name + json;
}

/** The enricher's `{ geo_build_epoch }` points at one frozen object per database generation. */
function dockflowJson(value: NonNullable<FlowRecord['dockflow']>): string {
  const epochs = value.geo_build_epoch;
  for (const key in value) if (key !== 'geo_build_epoch') return JSON.stringify(value);
  return epochs === undefined ? '{}' : `{"geo_build_epoch":${sharedJson(epochs)}}`;
}

const frozenJson = new WeakMap<object, string>();

/**
 * GeoIP answers and containers are shared between records by their enrichers and frozen all the way down, so their
 * JSON is computed once. Anything else (an object that could still change) is serialized every time.
 */
function sharedJson(value: object): string {
  let json = frozenJson.get(value);
  if (json !== undefined) return json;
  json = JSON.stringify(value);
  if (deeplyFrozen(value)) frozenJson.set(value, json);
  return json;
}

function deeplyFrozen(value: object): boolean {
  if (!Object.isFrozen(value)) return false;
  for (const child of Object.values(value)) if (typeof child === 'object' && child !== null && !deeplyFrozen(child)) return false;
  return true;
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

/**
 * A record from its message and context (`m`, `x`: JSON, or already parsed as in a spool line), or `undefined` if
 * they do not make one.
 */
export function decodeMessage(message: string, contextJson: unknown): FlowRecord | undefined {
  let context = contextJson;
  if (typeof context === 'string') {
    try {
      context = JSON.parse(context);
    } catch {
      return undefined;
    }
  }
  if (typeof context !== 'object' || context === null) return undefined;
  const record = parseLine(message, readOptions);
  if (typeof record === 'string') return undefined;
  const c = context as Partial<FlowRecord>;
  if (typeof c['@timestamp'] === 'string') record['@timestamp'] = c['@timestamp'];
  if (c.event !== undefined) record.event = record.event === undefined ? c.event : Object.assign(record.event, c.event);
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
