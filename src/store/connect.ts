import { Redis, type RedisOptions } from 'ioredis';
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

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}
