import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, resolve } from 'node:path';
import { Reader, type Response } from 'maxmind';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { exportCounter, exportGauge, seriesOf } from '../metrics.js';
import { DockflowError, ErrorCode } from '../errors.js';
import type { AutonomousSystem, Endpoint, FlowRecord, Geo } from '../record.js';
import { classifyAddress } from './address-class.js';
import { ASN_TABLE_FILE, embeddedAsnSource, openAsnTable, type AsnSource, type AsnTable } from './asn-table.js';
import type { Enricher } from './enricher.js';

/**
 * GeoIP/ASN enrichment of the remote side of a flow, from MaxMind DB files held in memory.
 *
 * Which side is remote: the destination of `egress`, the source of `ingress`, both sides of `other` (no container
 * is involved, so neither side is known to be local; special-purpose addresses are marked rather than looked up, so
 * the host's own private side costs nothing), and neither side of `internal`, `container-to-host` and
 * `host-to-container`, which never leave the machine.
 */

export interface GeoEnricherOptions {
  /** GeoIP2/GeoLite2 City (or any City-shaped db). Takes precedence over `countryDbPath`. */
  cityDbPath?: string;
  countryDbPath?: string;
  asnDbPath?: string;
  /** With no city/country path: use the CC0 country database shipped in npm (country code only). */
  embeddedDefault: boolean;
  /** Entries in the per-address answer cache; 0 turns it off. */
  cacheEntries: number;
  /**
   * With no `asnDbPath`: AS numbers and names from the embedded `@ip-location-db/asn` data, converted once into a
   * table file under `cacheDir` and loaded in the background (records get AS fields once it is loaded).
   */
  embeddedAsn?: { cacheDir: string; source?: AsnSource };
  /** Reload configured files when they are replaced. The embedded database changes only with a reinstall. */
  watch: boolean;
  /** Quiet time after the last file event before reloading (a copy in place emits many). */
  reloadDebounceMs?: number;
}

export interface GeoEnricherDeps {
  logger: Logger;
  registry: Registry;
}

/** Name of a database in `dockflow.geo_build_epoch` and in metric labels. */
export type GeoDbName = 'city' | 'country' | 'asn';
/** `dockflow.geo_build_epoch` key of the embedded AS data (its package's build time). */
export const EMBEDDED_ASN_KEY = 'ip-location-db-asn';

export interface GeoReloadEvent {
  db: GeoDbName;
  path: string;
  ok: boolean;
  /** Build epoch (s) now in service for this db: the new one on success, the old one on failure. */
  buildEpoch: number;
  error?: string;
}

export interface GeoDbInfo {
  db: GeoDbName;
  path: string;
  databaseType: string;
  buildEpoch: number;
  watched: boolean;
}

const EMBEDDED_PACKAGE_FILE = '@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb';
const DEFAULT_RELOAD_DEBOUNCE_MS = 250;
/**
 * Decoded data-section records kept per reader, by file offset. Many addresses share one record (a country db has
 * a few hundred), so this spares the decoding on the first lookup of each new address.
 */
const DECODED_RECORDS_CACHED = 4096;
const PROBE_ADDRESSES = ['1.1.1.1', '81.2.69.160', '8.8.8.8', '2001:4860::8888', '2a00::1'];

/** Absolute path of the embedded CC0 country database inside node_modules. */
export function embeddedCountryDbPath(): string {
  return createRequire(import.meta.url).resolve(EMBEDDED_PACKAGE_FILE);
}

/** The subset of GeoIP2 City/Country and ip-location-db records read here; both layouts occur in the wild. */
interface RawGeoRecord {
  continent?: { code?: string };
  country?: { iso_code?: string; names?: Record<string, string> };
  city?: { names?: Record<string, string> } | string;
  location?: { latitude?: number; longitude?: number };
  country_code?: string;
  latitude?: number;
  longitude?: number;
}

interface RawAsnRecord {
  autonomous_system_number?: number;
  autonomous_system_organization?: string;
}

/** What a lookup found for one address. Shared between records through the cache, hence frozen. */
interface Answer {
  readonly geo?: Geo;
  readonly as?: AutonomousSystem;
}

const NO_ANSWER: Answer = Object.freeze({});

type LookupResult = 'hit' | 'miss' | 'cache-hit' | 'special' | 'error';
const LOOKUP_RESULTS: readonly LookupResult[] = ['hit', 'miss', 'cache-hit', 'special', 'error'];

interface DbSlot {
  readonly name: GeoDbName;
  readonly path: string;
  readonly watched: boolean;
  reader: Reader<Response>;
  debounce?: NodeJS.Timeout;
  /** Reloads of one file run one after another. */
  queue: Promise<unknown>;
}

/**
 * Bounded least-recently-used cache in two generations (the "hashlru" scheme): a read hits the young Map or moves
 * the entry up from the old one; when the young Map fills it becomes the old one and the previous old one is dropped
 * whole. Everything used since the last turnover survives; at most `maxEntries` are held; every step is O(1).
 * (Evicting a Map's first key one at a time is not O(1) in V8: deleted slots pile up at the front of the table
 * until it is rehashed, which made such a cache slower than none; docs/design.md.)
 */
class LruCache<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  private readonly generation: number;

  constructor(maxEntries: number) {
    this.generation = Math.ceil(Math.max(0, maxEntries) / 2);
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  get(key: K): V | undefined {
    const value = this.young.get(key);
    if (value !== undefined) return value;
    const aging = this.old.get(key);
    if (aging !== undefined) {
      this.old.delete(key);
      this.put(key, aging);
    }
    return aging;
  }

  set(key: K, value: V): void {
    if (this.generation > 0) this.put(key, value);
  }

  private put(key: K, value: V): void {
    this.young.set(key, value);
    if (this.young.size >= this.generation) {
      this.old = this.young;
      this.young = new Map();
    }
  }

  clear(): void {
    this.young = new Map();
    this.old = new Map();
  }
}

function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Reads a whole mmdb file and checks it before anything uses it: a half-written or wrong file must fail here,
 * not on a lookup in the middle of ingest.
 */
async function loadReader(name: GeoDbName, path: string): Promise<Reader<Response>> {
  const fail = (why: string, cause?: unknown): DockflowError =>
    new DockflowError(ErrorCode.GEOIP_DB_INVALID, `GeoIP ${name} database ${path}: ${why}`, { cause });
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    throw fail(`cannot read it (${describeError(err)})`, err);
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) throw fail('is gzip-compressed; decompress it first');
  let reader: Reader<Response>;
  try {
    reader = new Reader<Response>(buf, { cache: new LruCache<number, unknown>(DECODED_RECORDS_CACHED) });
  } catch (err) {
    throw fail(`not a MaxMind DB file, or truncated (${describeError(err)})`, err);
  }
  const m = reader.metadata;
  if (m.binaryFormatMajorVersion !== 2) throw fail(`unsupported format version ${m.binaryFormatMajorVersion}`);
  if (m.searchTreeSize !== m.nodeCount * m.nodeByteSize || m.searchTreeSize + 16 > buf.length) {
    throw fail('search tree does not fit in the file (truncated or corrupt)');
  }
  for (let i = m.searchTreeSize; i < m.searchTreeSize + 16; i++) {
    if (buf[i] !== 0) throw fail('data section separator missing (corrupt)');
  }
  // A City file given as the ASN path (or the reverse) would load fine and answer nothing.
  if (name === 'asn' && !/asn|isp/i.test(m.databaseType)) throw fail(`database type "${m.databaseType}" is not an ASN database`);
  if (name !== 'asn' && /asn/i.test(m.databaseType)) throw fail(`database type "${m.databaseType}" is an ASN database`);
  try {
    // Walks the tree and decodes real records, which catches corrupt pointers that the metadata cannot show.
    for (const probe of PROBE_ADDRESSES) lookupIn(reader, probe);
  } catch (err) {
    throw fail(`lookups fail (${describeError(err)})`, err);
  }
  return reader;
}

/** An IPv4-only database has no tree for IPv6 addresses: walking it with one would read nonsense. */
function lookupIn(reader: Reader<Response>, ip: string): Response | null {
  return reader.metadata.ipVersion === 4 && ip.indexOf(':') >= 0 ? null : reader.get(ip);
}

function buildEpochSeconds(reader: Reader<Response>): number {
  return Math.floor(reader.metadata.buildEpoch.getTime() / 1000);
}

export class GeoEnricher extends EventEmitter implements Enricher {
  private readonly geoSlot: DbSlot | undefined;
  private readonly asnSlot: DbSlot | undefined;
  private readonly cache: LruCache<string, Answer>;
  private readonly watchers: FSWatcher[] = [];
  private readonly countryNames = new Intl.DisplayNames(['en'], { type: 'region' });
  /** `Intl.DisplayNames.of` costs microseconds; there are only a few hundred codes. */
  private readonly countryNameCache = new Map<string, string | undefined>();
  private readonly logger: Logger;
  private readonly debounceMs: number;
  /** Plain numbers on the hot path (a prom-client `inc` costs more than a cache hit); published on scrape. */
  private readonly lookups: Record<LookupResult, number> = { hit: 0, miss: 0, 'cache-hit': 0, special: 0, error: 0 };
  private readonly reloads: Counter<'db' | 'result'>;
  private readonly epochGauge: Gauge<'db'>;
  /** Shared by every record enriched with the current databases; replaced, never mutated, on reload. */
  private epochs: Readonly<Record<string, number>> = {};
  private closed = false;
  /** The embedded AS table once loaded (only without an ASN mmdb). */
  private asnTable: AsnTable | undefined;
  private asnTablePath: string | undefined;
  /** Resolves when the embedded AS table is loaded (true) or failed to (false); set by `openGeoEnricher`. */
  asnLoading: Promise<boolean> = Promise.resolve(false);
  /** Stops a conversion of the embedded AS data still running at close. */
  readonly asnAbort = new AbortController();

  /** Use `openGeoEnricher`, which reads and checks the files first. */
  constructor(
    slots: { geo?: DbSlot; asn?: DbSlot },
    opts: Pick<GeoEnricherOptions, 'cacheEntries' | 'reloadDebounceMs'>,
    deps: GeoEnricherDeps,
  ) {
    super();
    this.geoSlot = slots.geo;
    this.asnSlot = slots.asn;
    this.cache = new LruCache(opts.cacheEntries);
    this.debounceMs = opts.reloadDebounceMs ?? DEFAULT_RELOAD_DEBOUNCE_MS;
    this.logger = deps.logger;
    exportCounter(
      deps.registry,
      {
        name: 'dockflow_geoip_lookups_total',
        help: 'GeoIP lookups of remote addresses by result: hit, miss, cache-hit, special (special-purpose range, not looked up), error',
        labelNames: ['result'],
      },
      () => seriesOf('result', LOOKUP_RESULTS, this.lookups),
    );
    this.reloads = new Counter({
      name: 'dockflow_geoip_reloads_total',
      help: 'GeoIP database reloads after a file change, by database and result (ok, failed: the old database stays)',
      labelNames: ['db', 'result'] as const,
      registers: [deps.registry],
    });
    for (const slot of [slots.geo, slots.asn]) {
      if (slot === undefined) continue;
      for (const result of ['ok', 'failed']) this.reloads.inc({ db: slot.name, result }, 0);
    }
    this.epochGauge = new Gauge({
      name: 'dockflow_geoip_build_epoch_seconds',
      help: 'Build time (mmdb metadata build_epoch) of the GeoIP database in service',
      labelNames: ['db'] as const,
      registers: [deps.registry],
    });
    exportGauge(deps.registry, { name: 'dockflow_geoip_cache_entries', help: 'Addresses held in the GeoIP answer cache' }, () => this.cache.size);
    this.refreshEpochs();
  }

  /** The databases in service now. */
  get databases(): GeoDbInfo[] {
    const dbs: GeoDbInfo[] = [this.geoSlot, this.asnSlot]
      .filter((s): s is DbSlot => s !== undefined)
      .map((s) => ({
        db: s.name,
        path: s.path,
        databaseType: s.reader.metadata.databaseType,
        buildEpoch: buildEpochSeconds(s.reader),
        watched: s.watched,
      }));
    if (this.asnTable !== undefined) {
      dbs.push({
        db: 'asn',
        path: this.asnTablePath ?? '',
        databaseType: `ip-location-db/asn ${this.asnTable.version} (RouteViews + DB-IP, CC-BY-4.0)`,
        buildEpoch: this.asnTable.buildEpoch,
        watched: false,
      });
    }
    return dbs;
  }

  /** Puts the embedded AS table in service: answers cached without it are dropped. */
  useAsnTable(table: AsnTable, path: string): void {
    if (this.closed || this.asnSlot !== undefined) return;
    this.asnTable = table;
    this.asnTablePath = path;
    this.cache.clear();
    this.refreshEpochs();
  }

  enrich(record: FlowRecord): void {
    switch (record.network.direction) {
      case 'egress':
        this.enrichEndpoint(record, record.destination);
        return;
      case 'ingress':
        this.enrichEndpoint(record, record.source);
        return;
      case 'other':
        this.enrichEndpoint(record, record.source);
        this.enrichEndpoint(record, record.destination);
        return;
      default:
        return;
    }
  }

  private enrichEndpoint(record: FlowRecord, endpoint: Endpoint): void {
    const ip = endpoint.ip;
    if (ip === undefined) return;
    const cls = classifyAddress(ip);
    if (cls !== undefined) {
      endpoint.address_class = cls;
      this.lookups.special++;
      return;
    }
    if (this.geoSlot === undefined && this.asnSlot === undefined && this.asnTable === undefined) return;
    let answer = this.cache.get(ip);
    if (answer !== undefined) {
      this.lookups['cache-hit']++;
    } else {
      answer = this.lookup(ip);
      this.cache.set(ip, answer);
    }
    if (answer.geo !== undefined) endpoint.geo = answer.geo;
    if (answer.as !== undefined) endpoint.as = answer.as;
    (record.dockflow ??= {}).geo_build_epoch = this.epochs;
  }

  private lookup(ip: string): Answer {
    let geo: Geo | undefined;
    let as: AutonomousSystem | undefined;
    try {
      if (this.geoSlot !== undefined) geo = this.toGeo(lookupIn(this.geoSlot.reader, ip) as RawGeoRecord | null);
      if (this.asnSlot !== undefined) as = toAs(lookupIn(this.asnSlot.reader, ip) as RawAsnRecord | null);
      else if (this.asnTable !== undefined) as = this.asnTable.lookup(ip);
    } catch (err) {
      // The file passed the checks at load, so this is a corrupt record deep inside it: count it, keep ingesting.
      this.lookups.error++;
      this.logger.debug({ ip, err: describeError(err) }, 'GeoIP lookup failed');
      return NO_ANSWER;
    }
    if (geo === undefined && as === undefined) {
      this.lookups.miss++;
      return NO_ANSWER;
    }
    this.lookups.hit++;
    return Object.freeze({ geo, as });
  }

  private toGeo(raw: RawGeoRecord | null): Geo | undefined {
    if (raw === null) return undefined;
    const geo: Geo = {};
    const iso = raw.country?.iso_code ?? raw.country_code;
    if (iso !== undefined) {
      geo.country_iso_code = iso;
      const name = raw.country?.names?.en ?? this.countryName(iso);
      if (name !== undefined) geo.country_name = name;
    }
    const city = typeof raw.city === 'string' ? raw.city : raw.city?.names?.en;
    if (city !== undefined && city !== '') geo.city_name = city;
    if (raw.continent?.code !== undefined) geo.continent_code = raw.continent.code;
    const lat = raw.location?.latitude ?? raw.latitude;
    const lon = raw.location?.longitude ?? raw.longitude;
    if (typeof lat === 'number' && typeof lon === 'number') geo.location = Object.freeze({ lat, lon });
    return Object.keys(geo).length === 0 ? undefined : Object.freeze(geo);
  }

  /** Country-only databases (the embedded one) carry codes without names; ICU knows the English names. */
  private countryName(iso: string): string | undefined {
    if (this.countryNameCache.has(iso)) return this.countryNameCache.get(iso);
    if (!/^[A-Z]{2}$/.test(iso)) return undefined; // keeps the memo within 676 keys
    const name = this.countryNames.of(iso);
    const known = name === iso ? undefined : name;
    this.countryNameCache.set(iso, known);
    return known;
  }

  /** Re-reads one database now; resolves true when the new file is in service. Watching calls this. */
  reload(db: GeoDbName): Promise<boolean> {
    const slot = [this.geoSlot, this.asnSlot].find((s) => s?.name === db);
    if (slot === undefined) return Promise.resolve(false);
    const run = slot.queue.then(() => this.reloadSlot(slot));
    slot.queue = run;
    return run;
  }

  private async reloadSlot(slot: DbSlot): Promise<boolean> {
    if (this.closed) return false;
    let reader: Reader<Response>;
    try {
      reader = await loadReader(slot.name, slot.path);
    } catch (err) {
      const error = describeError(err);
      this.reloads.labels(slot.name, 'failed').inc();
      this.logger.warn({ db: slot.name, path: slot.path, err: error }, 'GeoIP database reload failed; the previous database stays in service');
      this.emit('reload', { db: slot.name, path: slot.path, ok: false, buildEpoch: buildEpochSeconds(slot.reader), error } satisfies GeoReloadEvent);
      return false;
    }
    if (this.closed) return false;
    // One synchronous step: no record sees the new reader with answers cached from the old one.
    slot.reader = reader;
    this.cache.clear();
    this.refreshEpochs();
    this.reloads.labels(slot.name, 'ok').inc();
    const buildEpoch = buildEpochSeconds(reader);
    this.logger.info({ db: slot.name, path: slot.path, buildEpoch, databaseType: reader.metadata.databaseType }, 'GeoIP database reloaded');
    this.emit('reload', { db: slot.name, path: slot.path, ok: true, buildEpoch } satisfies GeoReloadEvent);
    return true;
  }

  private refreshEpochs(): void {
    const epochs: Record<string, number> = {};
    for (const slot of [this.geoSlot, this.asnSlot]) {
      if (slot === undefined) continue;
      epochs[slot.name] = buildEpochSeconds(slot.reader);
      this.epochGauge.labels(slot.name).set(epochs[slot.name] as number);
    }
    if (this.asnTable !== undefined) {
      epochs[EMBEDDED_ASN_KEY] = this.asnTable.buildEpoch;
      this.epochGauge.labels(EMBEDDED_ASN_KEY).set(this.asnTable.buildEpoch);
    }
    this.epochs = Object.freeze(epochs);
  }

  /**
   * Watches the directories, not the files: `geoipupdate` (like most updaters) writes a temporary file and renames
   * it over the old one, and a watch on the old file's inode would never see the new one.
   */
  startWatching(): void {
    const byDir = new Map<string, DbSlot[]>();
    for (const slot of [this.geoSlot, this.asnSlot]) {
      if (slot === undefined || !slot.watched) continue;
      const dir = dirname(slot.path);
      byDir.set(dir, [...(byDir.get(dir) ?? []), slot]);
    }
    for (const [dir, slots] of byDir) {
      let watcher: FSWatcher;
      try {
        watcher = watch(dir, { persistent: false }, (_event, filename) => {
          for (const slot of slots) {
            if (filename === null || filename === basename(slot.path)) this.scheduleReload(slot);
          }
        });
      } catch (err) {
        // The databases are already loaded and good; out of inotify watches should not stop ingest.
        this.logger.warn({ dir, err: describeError(err) }, 'cannot watch GeoIP database directory; updates there need a restart');
        continue;
      }
      watcher.on('error', (err) => {
        this.logger.warn({ dir, err: describeError(err) }, 'GeoIP database directory watch failed; changes there are no longer picked up');
      });
      this.watchers.push(watcher);
    }
  }

  private scheduleReload(slot: DbSlot): void {
    if (this.closed) return;
    clearTimeout(slot.debounce);
    slot.debounce = setTimeout(() => {
      slot.debounce = undefined;
      void this.reload(slot.name);
    }, this.debounceMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.asnAbort.abort();
    await this.asnLoading;
    for (const watcher of this.watchers) watcher.close();
    this.watchers.length = 0;
    for (const slot of [this.geoSlot, this.asnSlot]) {
      if (slot === undefined) continue;
      clearTimeout(slot.debounce);
      await slot.queue;
    }
    this.cache.clear();
  }
}

function toAs(raw: RawAsnRecord | null): AutonomousSystem | undefined {
  if (raw === null) return undefined;
  const as: AutonomousSystem = {};
  if (raw.autonomous_system_number !== undefined) as.number = raw.autonomous_system_number;
  if (raw.autonomous_system_organization !== undefined) as.organization = Object.freeze({ name: raw.autonomous_system_organization });
  return Object.keys(as).length === 0 ? undefined : Object.freeze(as);
}

/**
 * Opens the configured databases (a missing or broken file is a DockflowError GEOIP_DB_INVALID, so a typo fails
 * at start rather than silently enriching nothing) and starts watching them when asked.
 */
export async function openGeoEnricher(opts: GeoEnricherOptions, deps: GeoEnricherDeps): Promise<GeoEnricher> {
  if (opts.cityDbPath !== undefined && opts.countryDbPath !== undefined) {
    deps.logger.warn({ cityDbPath: opts.cityDbPath, countryDbPath: opts.countryDbPath }, 'both GeoIP City and Country databases configured; the City one answers');
  }
  const openSlot = async (name: GeoDbName, path: string, watched: boolean): Promise<DbSlot> => {
    const full = resolve(path);
    return { name, path: full, watched, reader: await loadReader(name, full), queue: Promise.resolve() };
  };
  let geo: DbSlot | undefined;
  if (opts.cityDbPath !== undefined) geo = await openSlot('city', opts.cityDbPath, opts.watch);
  else if (opts.countryDbPath !== undefined) geo = await openSlot('country', opts.countryDbPath, opts.watch);
  else if (opts.embeddedDefault) geo = await openSlot('country', embeddedCountryDbPath(), false);
  const asn = opts.asnDbPath !== undefined ? await openSlot('asn', opts.asnDbPath, opts.watch) : undefined;

  const enricher = new GeoEnricher({ geo, asn }, opts, deps);
  if (opts.watch) enricher.startWatching();
  if (asn === undefined && opts.embeddedAsn !== undefined) {
    const source = opts.embeddedAsn.source ?? embeddedAsnSource();
    const cacheDir = resolve(opts.embeddedAsn.cacheDir);
    if (source === undefined) {
      deps.logger.warn('@ip-location-db/asn is not installed; records get no AS fields without an ASN database');
    } else {
      // Off the start-up path: ingest runs meanwhile, and records get AS fields from when the table is in service.
      const started = performance.now();
      enricher.asnLoading = openAsnTable(source, cacheDir, enricher.asnAbort.signal).then(
        (table) => {
          enricher.useAsnTable(table, resolve(cacheDir, ASN_TABLE_FILE));
          deps.logger.info(
            { version: table.version, v4Ranges: table.v4Ranges, v6Ranges: table.v6Ranges, bytes: table.bytes, ms: Math.round(performance.now() - started) },
            'embedded AS database in service (ip-location-db/asn: RouteViews + DB-IP, CC-BY-4.0)',
          );
          return true;
        },
        (err: unknown) => {
          if (enricher.asnAbort.signal.aborted) return false;
          deps.logger.warn({ cacheDir, err: describeError(err) }, 'embedded AS database could not be loaded; records get no AS fields');
          return false;
        },
      );
    }
  }
  const dbs = enricher.databases;
  if (dbs.length === 0) deps.logger.info('no GeoIP database configured; remote addresses get only their special-purpose class');
  for (const db of dbs) deps.logger.info(db, 'GeoIP database in service');
  return enricher;
}
