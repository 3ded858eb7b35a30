import { createLineOptions, parseLine } from '../parse/line.js';
import { sortableIp } from '../net/ip.js';
import { DIRECTIONS, type ContainerRef, type Direction, type Endpoint, type FlowRecord } from '../record.js';

/*
 * Version 2 stream entries (docs/storage.md): flat named fields, the same fields in the same order in every entry, so
 * Redis stores the names once per stream node and small integers as integers. Absent values are empty strings.
 * Shared facts (a container's name, image and labels; an AS's name) are in registries, referenced by a short value.
 */
export const ENTRY_FIELDS = [
  't', // packet time, ms since the epoch
  'd', // direction (egress, ingress, internal, container-to-host, host-to-container, other)
  'pr', // transport: tcp, udp, icmp, ipv6-icmp, …
  'sa', // source address
  'sp', // source port
  'da', // destination address
  'dp', // destination port
  'ci', // container short id (12 hex digits) on the container side; see the container registry
  'pc', // peer container short id (internal traffic: the destination container)
  'cc', // remote side's country (ISO 3166 alpha-2)
  'as', // remote side's AS number; see the AS registry
  'h', // host (syslog hostname)
  'lp', // LOG rule prefix
  'ln', // IP packet length
  'fl', // TCP flags, one letter each: S SYN, A ACK, F FIN, R RST, P PSH, U URG, E ECE, C CWR
  'eh', // event.hash: RELP messages' hash of sender and message bytes (duplicate detection after a crash)
] as const;
export type EntryField = (typeof ENTRY_FIELDS)[number];
/** The syslog message as received, only when `store.keepOriginal` is on. */
export const ORIGINAL_FIELD = 'o';

const FLAG_LETTER: Record<string, string> = { SYN: 'S', ACK: 'A', FIN: 'F', RST: 'R', PSH: 'P', URG: 'U', ECE: 'E', CWR: 'C' };
const LETTER_FLAG = new Map(Object.entries(FLAG_LETTER).map(([k, v]) => [v, k]));
const IANA: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, 'ipv6-icmp': 58, sctp: 132, gre: 47, esp: 50, ah: 51 };
const DIRECTION_SET = new Set<string>(DIRECTIONS);
export const SHORT_ID_RE = /^[0-9a-f]{12}$/;
const CONTAINER_ID_RE = /^[0-9a-f]{12,64}$/;

/** The 12-digit short id of an attributed container, or '' . */
export function shortContainerId(c: ContainerRef | undefined): string {
  const id = c?.id;
  return id !== undefined && c?.unattributed !== true && CONTAINER_ID_RE.test(id) ? id.slice(0, 12) : '';
}

/** The container's side of the packet, from the direction (see `FlowRecord.container`). */
export function containerSide(dir: Direction): 'source' | 'destination' {
  return dir === 'ingress' || dir === 'host-to-container' ? 'destination' : 'source';
}
export function remoteSide(dir: Direction): 'source' | 'destination' {
  return containerSide(dir) === 'source' ? 'destination' : 'source';
}

function flagLetters(flags: readonly string[] | undefined): string {
  if (flags === undefined) return '';
  let s = '';
  for (const f of flags) s += FLAG_LETTER[f] ?? '';
  return s;
}

const num = (n: number | undefined): string => (n === undefined ? '' : String(n));

/**
 * The entry's values, in `ENTRY_FIELDS` order (pure; the writer puts the names beside them). NaN time: the record
 * has no usable packet time and is given `fallbackTimeMs`.
 */
export function entryValues(record: FlowRecord, timeMs: number): string[] {
  const dir = record.network.direction;
  const remote = record[remoteSide(dir)];
  return [
    String(timeMs),
    dir,
    record.network.transport ?? '',
    record.source.ip ?? '',
    num(record.source.port),
    record.destination.ip ?? '',
    num(record.destination.port),
    shortContainerId(record.container),
    shortContainerId(record.peer_container),
    remote.geo?.country_iso_code ?? '',
    num(remote.as?.number),
    record.host?.name ?? '',
    record.log?.prefix ?? '',
    num(record.iptables.length ?? record.network.bytes),
    flagLetters(record.iptables.tcp?.flags),
    record.event?.hash ?? '',
  ];
}

/** Packet time of a record in ms, NaN when it has none. */
export function packetTimeMs(record: FlowRecord): number {
  return Date.parse(record['@timestamp']);
}

/** What a container registry entry holds (JSON in `<prefix>:{g}:ctr`). */
export interface ContainerMeta {
  id: string;
  name?: string;
  image?: string;
  labels?: Record<string, string>;
}

export function containerMeta(c: ContainerRef): ContainerMeta {
  return {
    id: c.id as string,
    ...(c.name !== undefined ? { name: c.name } : {}),
    ...(c.image?.name !== undefined ? { image: c.image.name } : {}),
    ...(c.labels !== undefined ? { labels: c.labels } : {}),
  };
}

/** The registries a reader resolves short values with. */
export interface Registries {
  containers: ReadonlyMap<string, ContainerMeta>;
  asNames: ReadonlyMap<string, string>;
}

function containerRef(short: string, reg: Registries): ContainerRef | undefined {
  if (short === '') return undefined;
  const m = reg.containers.get(short);
  if (m === undefined) return { id: short };
  return {
    id: m.id,
    ...(m.name !== undefined ? { name: m.name } : {}),
    ...(m.image !== undefined ? { image: { name: m.image } } : {}),
    ...(m.labels !== undefined ? { labels: m.labels } : {}),
  };
}

function addressType(ip: string): 'ipv4' | 'ipv6' | undefined {
  if (ip === '') return undefined;
  return ip.includes(':') ? 'ipv6' : 'ipv4';
}

/** The flat fields of an entry (`[name, value, …]` as XRANGE returns them) by name. */
export function flatFields(fields: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) m.set(fields[i] as string, fields[i + 1] as string);
  return m;
}

/**
 * The record a version 2 entry holds, rebuilt from its flat fields and the registries; with the original message
 * kept, the message parsed with the flat fields over it (and `event.original`). `undefined` when it holds none.
 */
export function decodeFlat(fields: readonly string[], reg: Registries): FlowRecord | undefined {
  const f = flatFields(fields);
  const t = Number(f.get('t'));
  const d = f.get('d') ?? '';
  if (!Number.isFinite(t) || !DIRECTION_SET.has(d)) return undefined;
  const dir = d as Direction;
  const original = f.get(ORIGINAL_FIELD);
  let record: FlowRecord | undefined;
  if (original !== undefined) {
    const parsed = parseLine(original, readOptions);
    if (typeof parsed !== 'string') record = parsed;
  }
  record ??= { '@timestamp': '', source: {}, destination: {}, network: { direction: dir }, iptables: {} };
  record['@timestamp'] = new Date(t).toISOString();
  record.network.direction = dir;
  const str = (name: EntryField): string | undefined => {
    const v = f.get(name);
    return v === undefined || v === '' ? undefined : v;
  };
  const int = (name: EntryField): number | undefined => {
    const v = str(name);
    return v === undefined ? undefined : Number(v);
  };
  const pr = str('pr');
  if (pr !== undefined) {
    record.network.transport = pr;
    if (IANA[pr] !== undefined) record.network.iana_number = String(IANA[pr]);
  }
  const sa = str('sa');
  const da = str('da');
  if (sa !== undefined) record.source.ip = sa;
  if (da !== undefined) record.destination.ip = da;
  const type = addressType(sa ?? da ?? '');
  if (type !== undefined) record.network.type = type;
  const sp = int('sp');
  const dp = int('dp');
  if (sp !== undefined) record.source.port = sp;
  if (dp !== undefined) record.destination.port = dp;
  const remote = record[remoteSide(dir)];
  const cc = str('cc');
  if (cc !== undefined) remote.geo = { ...remote.geo, country_iso_code: cc };
  const as = str('as');
  if (as !== undefined) {
    const name = reg.asNames.get(as);
    remote.as = { number: Number(as), ...(name !== undefined ? { organization: { name } } : {}) };
  }
  const h = str('h');
  if (h !== undefined) record.host = { name: h };
  const lp = str('lp');
  if (lp !== undefined) record.log = { ...record.log, prefix: lp };
  const ln = int('ln');
  if (ln !== undefined) record.iptables.length = ln;
  const fl = str('fl');
  if (fl !== undefined) {
    const flags: string[] = [];
    for (const c of fl) {
      const flag = LETTER_FLAG.get(c);
      if (flag !== undefined) flags.push(flag);
    }
    record.iptables.tcp = { ...record.iptables.tcp, flags };
  }
  const container = containerRef(f.get('ci') ?? '', reg);
  if (container !== undefined) record.container = container;
  const peer = containerRef(f.get('pc') ?? '', reg);
  if (peer !== undefined) record.peer_container = peer;
  if (original !== undefined) record.event = { ...record.event, original } as FlowRecord['event'];
  const eh = str('eh');
  if (eh !== undefined) record.event = { ...record.event, hash: eh } as FlowRecord['event'];
  return record;
}

/** An address in the index's fixed-width form (net/ip.ts `sortableIp`), or '' when it is none. */
export function addressHex(ip: string): string {
  return sortableIp(ip) ?? '';
}

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
