import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DockflowError, ErrorCode } from '../errors.js';
import { DEFAULT_BRIDGES } from '../parse/direction.js';
import { defaultIngesterId } from '../store/ingester-lease.js';

const port = z.number().int().min(0).max(65535);
const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().min(0);

/** The one configuration schema: defaults here, units in names. Parsed once at start-up, then frozen. */
export const ConfigSchema = z
  .object({
    syslog: z
      .object({
        host: z.string().default('0.0.0.0'),
        udpEnabled: z.boolean().default(true),
        udpPort: port.default(5514),
        udpReceiveBufferBytes: positiveInt.default(8 * 1024 * 1024),
        /** recvmmsg through the addon (`batch`), node:dgram, or the addon when it loads and node:dgram otherwise. */
        udpReader: z.enum(['auto', 'batch', 'dgram']).default('auto'),
        /** Datagrams read ahead of parsing, in memory; beyond it they go to `<spoolDir>/udp`. */
        udpBacklogMemoryBytes: positiveInt.default(8 * 1024 * 1024),
        /** The on-disk part of that backlog; beyond it datagrams are dropped and counted. */
        udpBacklogDiskBytes: nonNegativeInt.default(1024 * 1024 * 1024),
        tcpEnabled: z.boolean().default(true),
        tcpPort: port.default(5514),
        maxConnections: positiveInt.default(1024),
        /** TCP connections from one source address; beyond it they are refused and counted. */
        maxConnectionsPerSource: positiveInt.default(32),
        idleTimeoutMs: positiveInt.default(5 * 60_000),
        /** A TCP connection that sends bytes but completes no message for this long is closed (slowloris). */
        frameTimeoutMs: positiveInt.default(30_000),
        /** A kernel LOG line with its syslog header is under 1 KiB; rsyslog's own default is 8 KiB. */
        maxMessageBytes: positiveInt.default(8 * 1024),
        /** CIDRs allowed to send; empty allows everyone (syslog carries no authentication). */
        allowedSenders: z.array(z.string()).default([]),
        /** Syslog over TLS (RFC 5425, octet-counted) on a port of its own; needs `tlsCertFile` and `tlsKeyFile`. */
        tlsEnabled: z.boolean().default(false),
        tlsPort: port.default(6514),
        tlsCertFile: z.string().optional(),
        tlsKeyFile: z.string().optional(),
        /** When set, clients must present a certificate this CA signed (mutual TLS). */
        tlsCaFile: z.string().optional(),
        /** Client certificate CNs or SAN DNS names / IP addresses admitted; empty admits any the CA verified. */
        tlsAllowedSubjects: z.array(z.string().min(1)).default([]),
        /** The certificate, key and CA files are checked for changes this often and reloaded. */
        tlsReloadIntervalMs: positiveInt.default(5_000),
        tlsHandshakeTimeoutMs: positiveInt.default(10_000),
        /** RELP (rsyslog omrelp): each message acknowledged once its record is stored in Redis or the spool. */
        relpEnabled: z.boolean().default(false),
        relpPort: port.default(2514),
        /** Unacknowledged frames per RELP connection before dockflow stops reading it (omrelp's windowSize is 128). */
        relpWindowFrames: positiveInt.default(1024),
        /** Hashes of recent RELP messages kept to recognise one sent again (also read from the streams' tails at start). */
        relpRecentHashes: positiveInt.default(100_000),
      })
      .prefault({}),
    parse: z
      .object({
        bridges: z.array(z.string().min(1)).default([...DEFAULT_BRIDGES]),
        /** Zone of RFC 3164 timestamps, which carry none (IANA name). */
        timeZone: z.string().default('UTC'),
      })
      .prefault({}),
    redis: z
      .object({
        /** Unset: dockflow starts and manages a local redis-server under `embeddedDataDir`. */
        url: z.string().optional(),
        embeddedDataDir: z.string().default('.dockflow/redis'),
        embeddedPort: port.default(0),
        /**
         * The embedded server's AOF fsync policy. `everysec` can lose acknowledged writes if redis-server dies while
         * the disk stalls (Redis then defers the AOF write by up to 2 s but still replies); `always` cannot, for an
         * fsync per event-loop turn of Redis (a batch of records, not one record).
         */
        embeddedAppendFsync: z.enum(['everysec', 'always']).default('everysec'),
      })
      .prefault({}),
    store: z
      .object({
        keyPrefix: z.string().regex(/^[A-Za-z0-9_.-]+$/).default('dockflow'),
        /** When set, every record goes into this one stream (no partitions, no indexes, no API answers). */
        singleStream: z.string().optional(),
        /** Keep each syslog message as received beside the record (`event.original`). */
        keepOriginal: z.boolean().default(false),
        batchMaxRecords: positiveInt.default(500),
        flushIntervalMs: positiveInt.default(20),
        /** Twice what is in flight (4 batches): enough to keep Redis busy; more only costs memory. */
        maxQueueRecords: positiveInt.default(4_000),
        /** With batches waiting, the longest wait for Redis to answer one before the writer reconnects. */
        replyTimeoutMs: positiveInt.default(10_000),
        /** Records this ingester keeps at most; above it its oldest partitions are deleted whole (0: no cap). */
        maxRecords: nonNegativeInt.default(0),
        retentionMs: nonNegativeInt.default(30 * 24 * 3600_000),
        spoolDir: z.string().default('.dockflow/spool'),
        spoolMaxBytes: positiveInt.default(1024 * 1024 * 1024),
        /**
         * This process' writer identity among the ingesters sharing the store: unique among them (a lease refuses a
         * second process with the same one). Default: the hostname.
         */
        ingesterId: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/).default(defaultIngesterId()),
        /** The ingester id's lease outlives a process that died by this long. */
        ingesterLeaseMs: positiveInt.default(15_000),
      })
      .prefault({}),
    http: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: port.default(8080),
        /** Required when `host` is not a loopback address. */
        apiToken: z.string().min(16).optional(),
        /** With no token: Host names accepted beside the loopback ones (DNS-rebinding defence), `name` or `name:port`. */
        allowedHosts: z.array(z.string().min(1)).default([]),
        /** Open HTTP connections; beyond it new ones are closed at once (counted). */
        maxConnections: positiveInt.default(512),
        /** A request's headers must arrive within this, its whole body within `requestTimeoutMs`. */
        headersTimeoutMs: positiveInt.default(10_000),
        requestTimeoutMs: positiveInt.default(30_000),
        /** An idle keep-alive connection is closed after this. */
        keepAliveTimeoutMs: positiveInt.default(5_000),
        /** A connection silent both ways this long is closed (one that never sends a request, too); above the live heartbeat. */
        idleTimeoutMs: positiveInt.default(60_000),
        /** Live (SSE) followers at once; beyond it 503. */
        maxLiveClients: positiveInt.default(64),
        /** Records the live tail fans out per second; beyond it followers get a counted gap instead. */
        liveMaxRecordsPerSecond: positiveInt.default(5_000),
        /** Heavy queries (flows, connections, top, inventory) running at once; beyond it 503 with Retry-After. */
        maxConcurrentQueries: positiveInt.default(4),
        /** Index entries a flow query examines per page before answering partial with a cursor. */
        flowsScanBudget: positiveInt.default(20_000),
        /** Packet records a connections query folds per page before answering partial with a cursor. */
        connectionsScanBudget: positiveInt.default(10_000),
        /** Longest range a top-N query counts (newer part kept); also clamped to `store.retentionMs`. */
        topMaxRangeMs: positiveInt.default(7 * 24 * 3600_000),
        /** Counter entries a top-N query reads from Redis at most; beyond it the answer is marked inexact. */
        topMaxReadEntries: positiveInt.default(200_000),
        /** A CIDR filter enumerating at most this many seen addresses is served from their indexes. */
        cidrMaxAddresses: positiveInt.default(256),
      })
      .prefault({}),
    geo: z
      .object({
        enabled: z.boolean().default(true),
        cityDbPath: z.string().optional(),
        countryDbPath: z.string().optional(),
        asnDbPath: z.string().optional(),
        embeddedDefault: z.boolean().default(true),
        /** Without `asnDbPath`: AS numbers and names from the embedded @ip-location-db/asn data. */
        embeddedAsn: z.boolean().default(true),
        /** Where the embedded AS data is kept converted (one file, about 11 MB). */
        asnCacheDir: z.string().default('.dockflow/asn'),
        cacheEntries: positiveInt.default(100_000),
        watch: z.boolean().default(true),
      })
      .prefault({}),
    docker: z
      .object({
        enabled: z.boolean().default(true),
        /** DOCKER_HOST-style endpoint for records whose syslog hostname is not in `endpoints`. */
        defaultEndpoint: z.string().optional(),
        /** Syslog hostname → Docker endpoint, for several Docker hosts sending to one dockflow. */
        endpoints: z.record(z.string(), z.string()).default({}),
        reconcileIntervalMs: positiveInt.default(60_000),
      })
      .prefault({}),
    detect: z
      .object({
        enabled: z.boolean().default(true),
        /** Load the rules shipped in `rules/detections`. */
        shippedRules: z.boolean().default(true),
        /** User rule files or directories (`*.yaml`), loaded after the shipped ones, reloaded on change. */
        rules: z.array(z.string().min(1)).default([]),
        /** Repeats of a rule for one container and remote within this window are one alert with a count. */
        groupWindowMs: positiveInt.default(10 * 60_000),
        maxGroups: positiveInt.default(10_000),
        /** Keys held per stateful rule (subjects, beacon targets, first-contact baselines). */
        maxStateKeys: positiveInt.default(100_000),
        baselineFlushMs: positiveInt.default(1000),
        reloadDebounceMs: positiveInt.default(250),
        /** Approximate length cap of the alert stream. */
        alertsMaxLen: positiveInt.default(100_000),
        alertsMaxQueue: positiveInt.default(10_000),
        /** Followers of `/api/alerts/live` at once. */
        liveMaxClients: positiveInt.default(32),
        webhookUrl: z.string().url().optional(),
        webhookMaxQueue: positiveInt.default(1000),
        webhookMaxAttempts: positiveInt.default(5),
        webhookBackoffMs: positiveInt.default(1000),
        webhookTimeoutMs: positiveInt.default(5000),
      })
      .prefault({}),
    /**
     * false: serve the API and dashboard from the shared store only: no syslog listeners, no writer, no Docker
     * watchers (several API processes beside the ingesters).
     */
    ingest: z.boolean().default(true),
    shutdownTimeoutMs: positiveInt.default(10_000),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

type Kind = 'string' | 'int' | 'bool' | 'list' | 'map';

/** One row per setting reachable from the environment or the command line. */
interface Setting {
  path: string;
  env?: string;
  flag?: string;
  kind: Kind;
  help: string;
}

export const SETTINGS: readonly Setting[] = [
  { path: 'redis.url', env: 'REDIS_URL', flag: 'redis-url', kind: 'string', help: 'Redis URL; unset: start a local redis-server' },
  { path: 'redis.embeddedDataDir', env: 'DOCKFLOW_REDIS_DIR', flag: 'redis-dir', kind: 'string', help: 'data directory of the embedded redis-server' },
  { path: 'redis.embeddedAppendFsync', env: 'DOCKFLOW_REDIS_FSYNC', flag: 'redis-fsync', kind: 'string', help: 'AOF fsync of the embedded redis-server (no REDIS_URL): everysec or always' },
  { path: 'syslog.host', env: 'SYSLOG_HOST', flag: 'syslog-host', kind: 'string', help: 'syslog listen address (0.0.0.0, ::)' },
  { path: 'syslog.udpPort', env: 'SYSLOG_UDP_PORT', flag: 'udp-port', kind: 'int', help: 'syslog UDP port' },
  { path: 'syslog.tcpPort', env: 'SYSLOG_TCP_PORT', flag: 'tcp-port', kind: 'int', help: 'syslog TCP port' },
  { path: 'syslog.udpEnabled', env: 'SYSLOG_UDP', flag: 'udp', kind: 'bool', help: 'listen on UDP' },
  { path: 'syslog.tcpEnabled', env: 'SYSLOG_TCP', flag: 'tcp', kind: 'bool', help: 'listen on TCP' },
  { path: 'syslog.udpReceiveBufferBytes', env: 'UDP_RCVBUF', flag: 'udp-rcvbuf', kind: 'int', help: 'UDP socket receive buffer' },
  { path: 'syslog.udpReader', env: 'DOCKFLOW_UDP_READER', flag: 'udp-reader', kind: 'string', help: 'UDP reader: auto, batch (recvmmsg addon) or dgram' },
  { path: 'syslog.udpBacklogMemoryBytes', env: 'DOCKFLOW_UDP_BACKLOG_MEMORY_BYTES', flag: 'udp-backlog-memory-bytes', kind: 'int', help: 'UDP datagrams read ahead of parsing, in memory' },
  { path: 'syslog.udpBacklogDiskBytes', env: 'DOCKFLOW_UDP_BACKLOG_DISK_BYTES', flag: 'udp-backlog-disk-bytes', kind: 'int', help: 'then on disk under <spool-dir>/udp (0: none)' },
  { path: 'syslog.maxMessageBytes', env: 'SYSLOG_MAX_MESSAGE_BYTES', flag: 'max-message-bytes', kind: 'int', help: 'largest syslog message accepted' },
  { path: 'syslog.maxConnections', env: 'SYSLOG_MAX_CONNECTIONS', flag: 'max-connections', kind: 'int', help: 'concurrent TCP senders' },
  { path: 'syslog.maxConnectionsPerSource', env: 'SYSLOG_MAX_CONNECTIONS_PER_SOURCE', flag: 'max-connections-per-source', kind: 'int', help: 'concurrent TCP connections from one address' },
  { path: 'syslog.idleTimeoutMs', env: 'SYSLOG_IDLE_TIMEOUT_MS', flag: 'idle-timeout-ms', kind: 'int', help: 'close silent TCP connections after' },
  { path: 'syslog.frameTimeoutMs', env: 'SYSLOG_FRAME_TIMEOUT_MS', flag: 'frame-timeout-ms', kind: 'int', help: 'close TCP connections that complete no message for' },
  { path: 'syslog.tlsEnabled', env: 'SYSLOG_TLS', flag: 'tls', kind: 'bool', help: 'listen for syslog over TLS (RFC 5425)' },
  { path: 'syslog.tlsPort', env: 'SYSLOG_TLS_PORT', flag: 'tls-port', kind: 'int', help: 'syslog TLS port' },
  { path: 'syslog.tlsCertFile', env: 'SYSLOG_TLS_CERT', flag: 'tls-cert', kind: 'string', help: 'TLS certificate (PEM), reloaded on change' },
  { path: 'syslog.tlsKeyFile', env: 'SYSLOG_TLS_KEY', flag: 'tls-key', kind: 'string', help: 'TLS private key (PEM), reloaded on change' },
  { path: 'syslog.tlsCaFile', env: 'SYSLOG_TLS_CA', flag: 'tls-ca', kind: 'string', help: 'CA (PEM) client certificates must be signed by (mutual TLS)' },
  { path: 'syslog.tlsAllowedSubjects', env: 'SYSLOG_TLS_ALLOWED_SUBJECTS', flag: 'tls-allowed-subjects', kind: 'list', help: 'comma-separated client certificate CNs/SAN names admitted' },
  { path: 'syslog.tlsReloadIntervalMs', env: 'SYSLOG_TLS_RELOAD_INTERVAL_MS', flag: 'tls-reload-interval-ms', kind: 'int', help: 'check the TLS files for changes this often' },
  { path: 'syslog.relpEnabled', env: 'SYSLOG_RELP', flag: 'relp', kind: 'bool', help: 'listen for RELP (acknowledged delivery)' },
  { path: 'syslog.relpPort', env: 'SYSLOG_RELP_PORT', flag: 'relp-port', kind: 'int', help: 'RELP port' },
  { path: 'syslog.relpWindowFrames', env: 'SYSLOG_RELP_WINDOW', flag: 'relp-window', kind: 'int', help: 'unacknowledged RELP frames per connection' },
  { path: 'syslog.allowedSenders', env: 'SYSLOG_ALLOWED_SENDERS', flag: 'allowed-senders', kind: 'list', help: 'comma-separated CIDRs allowed to send' },
  { path: 'parse.bridges', env: 'DOCKFLOW_BRIDGES', flag: 'bridges', kind: 'list', help: 'container bridge names (trailing * = prefix)' },
  { path: 'parse.timeZone', env: 'SYSLOG_TIME_ZONE', flag: 'tz', kind: 'string', help: 'zone of RFC 3164 timestamps' },
  { path: 'store.keyPrefix', env: 'DOCKFLOW_KEY_PREFIX', flag: 'key-prefix', kind: 'string', help: 'prefix of every Redis key' },
  { path: 'store.singleStream', env: 'REDIS_STREAM', flag: 'stream', kind: 'string', help: 'one stream for all records instead of one per direction' },
  { path: 'store.retentionMs', env: 'DOCKFLOW_RETENTION_MS', flag: 'retention-ms', kind: 'int', help: 'keep records this long' },
  { path: 'store.maxRecords', env: 'DOCKFLOW_MAX_RECORDS', flag: 'max-records', kind: 'int', help: 'records kept at most, whole oldest partitions deleted above it (0: none)' },
  { path: 'store.keepOriginal', env: 'DOCKFLOW_KEEP_ORIGINAL', flag: 'keep-original', kind: 'bool', help: 'store each syslog message as received (event.original)' },
  { path: 'store.maxQueueRecords', env: 'DOCKFLOW_MAX_QUEUE_RECORDS', flag: 'max-queue-records', kind: 'int', help: 'records waiting for Redis before TCP senders are paused' },
  { path: 'store.batchMaxRecords', env: 'DOCKFLOW_BATCH_MAX_RECORDS', flag: 'batch-max-records', kind: 'int', help: 'records per Redis write' },
  { path: 'store.replyTimeoutMs', env: 'DOCKFLOW_REDIS_REPLY_TIMEOUT_MS', flag: 'redis-reply-timeout-ms', kind: 'int', help: 'Redis silent this long with a batch waiting: reconnect and resend' },
  { path: 'store.spoolDir', env: 'DOCKFLOW_SPOOL_DIR', flag: 'spool-dir', kind: 'string', help: 'on-disk spool for Redis outages' },
  { path: 'store.spoolMaxBytes', env: 'DOCKFLOW_SPOOL_MAX_BYTES', flag: 'spool-max-bytes', kind: 'int', help: 'spool size limit' },
  { path: 'store.ingesterId', env: 'DOCKFLOW_INGESTER_ID', flag: 'ingester-id', kind: 'string', help: 'writer identity, unique among ingesters sharing the store (default: hostname)' },
  { path: 'ingest', env: 'DOCKFLOW_INGEST', flag: 'ingest', kind: 'bool', help: 'receive and store syslog; false (or --no-ingest): API and dashboard only' },
  { path: 'http.host', env: 'HTTP_HOST', flag: 'http-host', kind: 'string', help: 'HTTP API listen address' },
  { path: 'http.port', env: 'HTTP_PORT', flag: 'http-port', kind: 'int', help: 'HTTP API port' },
  { path: 'http.apiToken', env: 'API_TOKEN', flag: 'api-token', kind: 'string', help: 'bearer token (required off loopback)' },
  { path: 'geo.enabled', env: 'GEOIP', flag: 'geoip', kind: 'bool', help: 'GeoIP/ASN enrichment' },
  { path: 'geo.cityDbPath', env: 'GEOIP_CITY_DB', flag: 'geoip-city-db', kind: 'string', help: 'GeoIP2/GeoLite2 City mmdb' },
  { path: 'geo.countryDbPath', env: 'GEOIP_DB', flag: 'geoip-country-db', kind: 'string', help: 'Country mmdb (default: embedded CC0 db)' },
  { path: 'geo.asnDbPath', env: 'GEOIP_ASN_DB', flag: 'geoip-asn-db', kind: 'string', help: 'ASN mmdb' },
  { path: 'geo.embeddedAsn', env: 'GEOIP_EMBEDDED_ASN', flag: 'geoip-embedded-asn', kind: 'bool', help: 'AS from the embedded ip-location-db/asn data without an ASN mmdb' },
  { path: 'geo.asnCacheDir', env: 'DOCKFLOW_ASN_CACHE_DIR', flag: 'asn-cache-dir', kind: 'string', help: 'where the embedded AS data is kept converted' },
  { path: 'docker.enabled', env: 'DOCKFLOW_DOCKER', flag: 'docker', kind: 'bool', help: 'container attribution' },
  { path: 'docker.defaultEndpoint', env: 'DOCKER_HOST', flag: 'docker-host', kind: 'string', help: 'Docker endpoint (unix://, tcp://)' },
  { path: 'docker.endpoints', env: 'DOCKFLOW_DOCKER_ENDPOINTS', flag: 'docker-endpoints', kind: 'map', help: 'host=endpoint,… per syslog hostname' },
  { path: 'detect.enabled', env: 'DOCKFLOW_DETECT', flag: 'detect', kind: 'bool', help: 'run detection rules on received records' },
  { path: 'detect.rules', env: 'DOCKFLOW_RULES', flag: 'rules', kind: 'list', help: 'comma-separated rule files or directories (after the shipped ones)' },
  { path: 'detect.shippedRules', env: 'DOCKFLOW_SHIPPED_RULES', flag: 'shipped-rules', kind: 'bool', help: 'load the rules shipped in rules/detections' },
  { path: 'detect.webhookUrl', env: 'DOCKFLOW_ALERT_WEBHOOK', flag: 'alert-webhook', kind: 'string', help: 'POST each alert as JSON to this URL' },
  { path: 'shutdownTimeoutMs', env: 'DOCKFLOW_SHUTDOWN_TIMEOUT_MS', flag: 'shutdown-timeout-ms', kind: 'int', help: 'drain deadline on SIGTERM' },
  { path: 'logLevel', env: 'LOG_LEVEL', flag: 'log-level', kind: 'string', help: 'pino level' },
];

function convert(raw: string, setting: Setting, origin: string): unknown {
  switch (setting.kind) {
    case 'string':
      return raw;
    case 'int': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isInteger(n)) {
        throw new DockflowError(ErrorCode.CONFIG_INVALID, `${origin}: expected an integer, got ${JSON.stringify(raw)}`);
      }
      return n;
    }
    case 'bool': {
      const v = raw.toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      throw new DockflowError(ErrorCode.CONFIG_INVALID, `${origin}: expected true or false, got ${JSON.stringify(raw)}`);
    }
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
    case 'map': {
      const out: Record<string, string> = {};
      for (const pair of raw.split(',')) {
        const eq = pair.indexOf('=');
        if (eq <= 0) throw new DockflowError(ErrorCode.CONFIG_INVALID, `${origin}: expected name=value pairs, got ${JSON.stringify(pair)}`);
        out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
      }
      return out;
    }
  }
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (typeof next === 'object' && next !== null) node = next as Record<string, unknown>;
    else node = node[part] = {};
  }
  node[parts[parts.length - 1]!] = value;
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

export interface ConfigSources {
  /** Parsed JSON config file contents, lowest precedence after the defaults. */
  file?: unknown;
  env?: NodeJS.ProcessEnv;
  /** `--flag value` pairs by flag name (without dashes). */
  flags?: Record<string, string | undefined>;
}

/** Defaults < config file < environment < flags. Throws DockflowError(CONFIG_INVALID) naming every bad setting. */
export function loadConfig(sources: ConfigSources): Readonly<Config> {
  const merged: Record<string, unknown> = structuredClone((sources.file ?? {}) as Record<string, unknown>);
  for (const setting of SETTINGS) {
    const fromEnv = setting.env !== undefined ? sources.env?.[setting.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') setPath(merged, setting.path, convert(fromEnv, setting, `environment ${setting.env}`));
    const fromFlag = setting.flag !== undefined ? sources.flags?.[setting.flag] : undefined;
    if (fromFlag !== undefined) setPath(merged, setting.path, convert(fromFlag, setting, `--${setting.flag}`));
  }
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    throw new DockflowError(ErrorCode.CONFIG_INVALID, `invalid configuration:\n${z.prettifyError(parsed.error)}`);
  }
  const config = parsed.data;
  if (config.syslog.tlsEnabled && (config.syslog.tlsCertFile === undefined || config.syslog.tlsKeyFile === undefined)) {
    throw new DockflowError(ErrorCode.CONFIG_INVALID, 'invalid configuration: syslog over TLS needs SYSLOG_TLS_CERT and SYSLOG_TLS_KEY (--tls-cert, --tls-key)');
  }
  if (config.syslog.tlsAllowedSubjects.length > 0 && config.syslog.tlsCaFile === undefined) {
    throw new DockflowError(ErrorCode.CONFIG_INVALID, 'invalid configuration: SYSLOG_TLS_ALLOWED_SUBJECTS needs SYSLOG_TLS_CA to verify client certificates');
  }
  if (config.http.apiToken === undefined && !isLoopback(config.http.host)) {
    throw new DockflowError(
      ErrorCode.CONFIG_INVALID,
      `invalid configuration: the HTTP API is bound to ${config.http.host}, off loopback; set API_TOKEN (16+ characters)`,
    );
  }
  return deepFreeze(config);
}

/**
 * Every default, as the schema gives it. Modules that take optional settings fall back to these, so a default is
 * written once, in the schema above.
 */
export const DEFAULTS: Readonly<Config> = deepFreeze(ConfigSchema.parse({}));

export function readConfigFile(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new DockflowError(ErrorCode.CONFIG_INVALID, `cannot read config file ${path}: ${(err as Error).message}`, { cause: err });
  }
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
