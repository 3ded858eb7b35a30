import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { DockflowError, ErrorCode } from '../errors.js';
import type { Logger } from 'pino';

/** Reconnect delay: 50 ms doubling to 2 s, so a restarted Redis is used again within about two seconds. */
export function reconnectDelayMs(attempt: number): number {
  return Math.min(2000, 50 * 2 ** Math.min(attempt - 1, 6));
}

/**
 * The options dockflow's clients use, chosen for a writer that owns its buffering and retries:
 * - `enableOfflineQueue: false`: while disconnected, commands fail at once instead of piling up in ioredis' unbounded
 *   offline queue; the StreamWriter's bounded queue and spool are the only buffers, and readers (HTTP) answer
 *   "unavailable" instead of hanging.
 * - `maxRetriesPerRequest: 0` and `autoResendUnfulfilledCommands: false`: commands in flight when the connection drops
 *   fail at once and are never resent behind the writer's back; the writer asks Redis what landed and resends the
 *   rest itself, in order (a silent resend could store a record twice or out of order).
 * - reconnect forever with capped backoff (`reconnectDelayMs`); `enableReadyCheck` waits until Redis has loaded its
 *   AOF before the client reports ready.
 */
export const CLIENT_OPTIONS: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  autoResendUnfulfilledCommands: false,
  enableReadyCheck: true,
  connectTimeout: 5000,
  retryStrategy: reconnectDelayMs,
  connectionName: 'dockflow',
};

/**
 * A client for `url` (`redis://`, `rediss://`, or `unix:///path/to/redis.sock`). It connects in the background and
 * reconnects forever; state changes are logged once each (not every failed attempt).
 */
export function connectRedis(url: string, logger: Logger, overrides: RedisOptions = {}): Redis {
  const options = { ...CLIENT_OPTIONS, ...overrides };
  const client = url.startsWith('unix:') ? new Redis({ ...options, path: new URL(url).pathname }) : new Redis(url, options);
  const where = redactUrl(url);
  let lastError = '';
  let wasReady = false;
  client.on('ready', () => {
    lastError = '';
    wasReady = true;
    logger.info({ redis: where }, 'Redis connected');
  });
  // 'reconnecting', not 'close': a quit() at shutdown closes the connection too, and that is no loss.
  client.on('reconnecting', () => {
    if (wasReady) logger.warn({ redis: where }, 'Redis connection lost; reconnecting');
    wasReady = false;
  });
  client.on('error', (err: Error) => {
    if (err.message === lastError) return;
    lastError = err.message;
    logger.warn({ redis: where, err: err.message }, 'Redis error');
  });
  return client;
}

/** One node of a cluster's seed list. */
export interface ClusterSeed {
  host: string;
  port: number;
}

/** What `REDIS_URL` names: one server (any URL ioredis takes), or a Redis Cluster by some of its nodes. */
export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'cluster'; seeds: ClusterSeed[]; username?: string; password?: string; tls: boolean };

const CLUSTER_SCHEME_RE = /^(rediss?)\+cluster:\/\/(.*)$/i;

/**
 * Parses `REDIS_URL`. A cluster is `redis+cluster://[user:password@]host:port,host:port,…` (`rediss+cluster://` for
 * TLS): any reachable nodes of it, from which the client learns the rest. Anything else is one server.
 */
export function parseRedisTarget(url: string): RedisTarget {
  const m = CLUSTER_SCHEME_RE.exec(url.trim());
  if (m === null) return { kind: 'single', url };
  const bad = (why: string): DockflowError => new DockflowError(ErrorCode.CONFIG_INVALID, `REDIS_URL ${redactUrl(url)}: ${why}`);
  let rest = m[2] as string;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const path = rest.slice(slash);
    // A cluster has database 0 only.
    if (path !== '/' && path !== '/0') throw bad('a Redis Cluster has no database other than 0');
    rest = rest.slice(0, slash);
  }
  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = decodeURIComponent(colon >= 0 ? userinfo.slice(0, colon) : '');
    const pass = decodeURIComponent(colon >= 0 ? userinfo.slice(colon + 1) : userinfo);
    if (user !== '') username = user;
    if (pass !== '') password = pass;
  }
  const seeds: ClusterSeed[] = [];
  for (const part of rest.split(',')) {
    const node = part.trim();
    if (node === '') continue;
    // host:port, [v6]:port, or a host alone (port 6379).
    const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(node);
    const plain = /^([^:[\]]+)(?::(\d+))?$/.exec(node);
    const hit = v6 ?? plain;
    if (hit === null) throw bad(`cannot read node ${JSON.stringify(node)} (host:port)`);
    const port = hit[2] === undefined ? 6379 : Number(hit[2]);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`bad port in ${JSON.stringify(node)}`);
    seeds.push({ host: hit[1] as string, port });
  }
  if (seeds.length === 0) throw bad('no cluster node given (redis+cluster://host:port,host:port,…)');
  return { kind: 'cluster', seeds, ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}), tls: (m[1] as string).toLowerCase() === 'rediss' };
}

/**
 * A Redis Cluster client with dockflow's client options (see CLIENT_OPTIONS): no offline queue, no resends behind the
 * caller's back, reconnects forever. Reads go to masters (a replica may lag what the writer just stored). Logged like
 * connectRedis.
 */
export function connectCluster(target: Extract<RedisTarget, { kind: 'cluster' }>, logger: Logger, overrides: Partial<ClusterOptions> = {}): Cluster {
  const { enableOfflineQueue: _q, retryStrategy: _r, ...nodeOptions } = CLIENT_OPTIONS;
  const options: ClusterOptions = {
    enableOfflineQueue: false,
    enableReadyCheck: true,
    scaleReads: 'master',
    clusterRetryStrategy: reconnectDelayMs,
    // A failed-over master's slots are learned again within this long even if no command hits a MOVED.
    slotsRefreshInterval: 2000,
    redisOptions: {
      ...nodeOptions,
      ...(target.username !== undefined ? { username: target.username } : {}),
      ...(target.password !== undefined ? { password: target.password } : {}),
      ...(target.tls ? { tls: {} } : {}),
    },
    ...overrides,
  };
  const client = new Cluster(target.seeds, options);
  const where = target.seeds.map((s) => `${s.host}:${s.port}`).join(',');
  let lastError = '';
  let wasReady = false;
  client.on('ready', () => {
    lastError = '';
    wasReady = true;
    logger.info({ redisCluster: where }, 'Redis Cluster connected');
  });
  client.on('reconnecting', () => {
    if (wasReady) logger.warn({ redisCluster: where }, 'Redis Cluster connection lost; reconnecting');
    wasReady = false;
  });
  client.on('error', (err: Error) => {
    if (err.message === lastError) return;
    lastError = err.message;
    logger.warn({ redisCluster: where, err: err.message }, 'Redis Cluster error');
  });
  return client;
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  const cluster = CLUSTER_SCHEME_RE.exec(url);
  if (cluster !== null) return url.replace(/\/\/([^@/]*:)?[^@/]*@/, (_all, user: string | undefined) => `//${user ?? ''}***@`);
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}
