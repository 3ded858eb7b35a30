import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { DockflowError, ErrorCode } from '../errors.js';

/*
 * Several ingesters write one store, each under its own writer identity (`DOCKFLOW_INGESTER_ID`, by default the
 * machine's hostname): what one writer assigns (stream IDs, per-writer keys) must never be assigned by another at the
 * same time. Two processes that end up with the same identity (two on one machine with the default, a copied config)
 * are caught at start by a lease: a key only one holder can create (SET NX PX), renewed while the process runs, deleted
 * when it stops; a process that dies leaves it to expire.
 */

/** What the lease key holds: who holds it, for the message the second process prints. */
interface Holder {
  token: string;
  host: string;
  pid: number;
  since: string;
}

/** Renews the lease if this holder has it, takes it again if it expired (an outage outlasted it), else answers 0. */
const RENEW_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 2
end
local ok, held = pcall(cjson.decode, v)
if ok and type(held) == 'table' and held.token == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
`;

/** Takes the lease from a holder known dead: only if it still holds exactly what was read. */
const TAKEOVER_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`;

const RELEASE_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v == false then return 0 end
local ok, held = pcall(cjson.decode, v)
if ok and type(held) == 'table' and held.token == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * The identity an ingester takes when none is configured: the hostname's first label (a writer id is a partition
 * name's part and a hash tag's: `[A-Za-z0-9_-]{1,32}`).
 */
export function defaultIngesterId(host: string = hostname()): string {
  const safe = (host.split('.')[0] ?? '').replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 32);
  return safe === '' ? 'ingester' : safe;
}

export interface IngesterLeaseOptions {
  redis: Redis | Cluster;
  logger: Logger;
  /** The lease key (see `StoreKeys.ingesterLease`). */
  key: string;
  id: string;
  /** How long the lease outlives a process that stops renewing it (renewed every third of it). */
  ttlMs: number;
}

export interface IngesterLease {
  readonly id: string;
  /** False after a renewal found another holder (the lease expired during an outage and was taken). */
  readonly held: boolean;
  /** Stops renewing and deletes the lease if this process still holds it. */
  release(): Promise<void>;
}

/**
 * Takes the lease for `id` or throws DockflowError(INGESTER_ID_IN_USE) naming the process that holds it. Redis must be
 * ready. Renewal failures (Redis down) are retried each period; the lease is taken again if it expired meanwhile.
 */
export async function acquireIngesterLease(opts: IngesterLeaseOptions): Promise<IngesterLease> {
  const { redis, logger, key, id, ttlMs } = opts;
  const me: Holder = { token: randomBytes(12).toString('hex'), host: hostname(), pid: process.pid, since: new Date().toISOString() };
  const value = JSON.stringify(me);
  const taken = await redis.set(key, value, 'PX', ttlMs, 'NX');
  if (taken !== 'OK') {
    const [raw, pttl] = await Promise.all([redis.get(key), redis.pttl(key)]);
    let who = 'another process';
    let holder: Partial<Holder> | undefined;
    try {
      holder = JSON.parse(raw ?? '') as Partial<Holder>;
      who = `pid ${holder.pid} on ${holder.host} (since ${holder.since})`;
    } catch {
      // not ours to read: name the key only
    }
    // A process of this machine that died without releasing (SIGKILL, a crash) and is restarted at once: its lease is
    // taken over rather than waited out.
    if (raw !== null && holder?.host === me.host && typeof holder.pid === 'number' && !processAlive(holder.pid)) {
      if ((await redis.eval(TAKEOVER_SCRIPT, 1, key, raw, value, String(ttlMs))) === 1) {
        logger.warn({ ingesterId: id, deadPid: holder.pid }, 'ingester id lease of a process of this machine that is gone: taken over');
        return startRenewing(opts, me, value);
      }
    }
    throw new DockflowError(
      ErrorCode.INGESTER_ID_IN_USE,
      `ingester id ${JSON.stringify(id)} is in use by ${who}; every ingester writing this store needs its own id: set DOCKFLOW_INGESTER_ID (or --ingester-id) ` +
        `to a name unique among them. If that process is gone, its lease (${key}) expires within ${Math.max(0, pttl)} ms.`,
    );
  }
  return startRenewing(opts, me, value);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, as another user's.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function startRenewing(opts: IngesterLeaseOptions, me: Holder, value: string): IngesterLease {
  const { redis, logger, key, id, ttlMs } = opts;
  let held = true;
  let stopped = false;
  const renew = async (): Promise<void> => {
    try {
      const r = await redis.eval(RENEW_SCRIPT, 1, key, me.token, value, String(ttlMs));
      if (stopped) return;
      if (r === 0) {
        if (held) logger.error({ ingesterId: id, key }, 'ingester id lease taken by another process while Redis was out of reach: two ingesters now share this id');
        held = false;
      } else {
        if (!held || r === 2) logger.warn({ ingesterId: id }, 'ingester id lease had expired; taken again');
        held = true;
      }
    } catch (err) {
      logger.warn({ err: (err as Error).message, ingesterId: id }, 'ingester id lease not renewed; retrying');
    }
  };
  const timer = setInterval(() => void renew(), Math.max(100, Math.floor(ttlMs / 3)));
  timer.unref();
  logger.info({ ingesterId: id, ttlMs }, 'ingester id leased');
  return {
    id,
    get held() {
      return held;
    },
    async release() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await redis.eval(RELEASE_SCRIPT, 1, key, me.token).catch((err: unknown) => logger.warn({ err }, 'ingester id lease not released; it expires on its own'));
    },
  };
}
