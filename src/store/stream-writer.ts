import { createHash } from 'node:crypto';
import { ReplyError, type Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { DEFAULTS } from '../config/index.js';
import { ENTRY_FIELDS, entryValues, ORIGINAL_FIELD, packetTimeMs } from './encode.js';
import { INDEX_OPS_SCRIPT, LUA_APPLY_INDEX, type IndexOps } from './index-ops.js';
import { BUCKET_MS, bucketOf, bucketStartMs, partitionName, storeKeys, WRITER_RE, type StoreKeys } from './keys.js';
import { encodeArgs, readBulks, RespConnection, RespWriter } from './resp.js';
import { Retention } from './retention.js';
import { SegmentQueue, type Segment, type SegmentQueueDeps } from '../disk/segment-queue.js';
import { importLegacySpool, spooledRecord } from './spool-frame.js';
import { RateLimitedLog } from '../rate-limited-log.js';
import type { IndexEntry, StreamIndexer } from './types.js';

export type Origin = 'tcp' | 'udp' | 'tls' | 'relp' | 'file';
export type StoreDropReason = 'spool-full' | 'spool-torn' | 'spool-write-failed' | 'closed' | 'expired';
export const STORE_DROP_REASONS: readonly StoreDropReason[] = ['spool-full', 'spool-torn', 'spool-write-failed', 'closed', 'expired'];

export interface StreamWriterOptions {
  /** Key prefix (see keys.ts). Default `dockflow`. */
  keyPrefix?: string;
  /** One stream for every record, no partitions and no indexes (see `storeKeys`). */
  singleStream?: string | undefined;
  /** This ingester's id, part of every partition it writes (`<bucket>.<writer>`). Default `w1`. */
  writerId?: string;
  /** Keep the syslog message as received in each entry (`o`). Default off. */
  keepOriginal?: boolean;
  /** Records waiting for Redis before `push` asks callers to pause (UDP overflows to the spool). Default 4,000. */
  maxQueueRecords?: number;
  /** Records per batch (one transaction). Default 250. */
  batchMaxRecords?: number;
  /** A partial batch is written after this long. Default 50 ms. */
  flushIntervalMs?: number;
  /** Batches awaiting Redis' answer at once. Default 4. */
  maxBatchesInFlight?: number;
  /** Redis silent this long with a batch waiting: the batch connection is dropped and the batches are uncertain. Default 10 s. */
  replyTimeoutMs?: number;
  /** Records this writer keeps at most (whole oldest partitions are deleted above it); 0 = no count limit. Default 0. */
  maxRecords?: number;
  /** Partitions whose packet-time bucket ended longer ago than this are deleted; 0 = no age limit. Default 30 days. */
  retentionMs?: number;
  /** Default 60 s. */
  trimIntervalMs?: number;
  spoolDir: string;
  /** Default 1 GiB. */
  spoolMaxBytes?: number;
  /** Default 1 MiB. */
  spoolSegmentBytes?: number;
}

export interface StreamWriterDeps {
  logger: Logger;
  registry: Registry;
  indexer?: StreamIndexer | undefined;
  /** Wall clock (retention, and stream IDs of a single stream; tests move it). */
  now?: () => number;
  /** The spool's write system call (tests inject short writes and ENOSPC). */
  spoolWritev?: SegmentQueueDeps['writev'];
}

export interface StreamWriterStats {
  /** Records given to `push`, by origin. */
  pushed: Record<Origin, number>;
  stored: number;
  storedByDirection: Record<Direction, number>;
  dropped: Record<StoreDropReason, number>;
  /** Records written to the spool (UDP overflow, and leftovers at close). */
  spooled: number;
  /** Records read back from the spool (including ones a previous run left). */
  replayed: number;
  queued: number;
  inFlight: number;
  spoolBytes: number;
  redisUp: boolean;
}

/**
 * A partition this writer writes (or the single stream): its stream and the last ID given in it. Partition entry IDs
 * are `<bucket start ms>-<entry number>`, numbers counting up from 0, so that an index can name an entry in 4 bytes.
 */
interface Part {
  name: string;
  bucket: number;
  stream: string;
  /** The ms part of every ID (partitions); undefined for the single stream, whose IDs follow the clock. */
  fixedMs: number | undefined;
  last: [number, number];
  /** `last` was read from Redis since the last (re)connection. */
  seeded: boolean;
  /** Listed in the partition registry (as far as this writer knows). */
  registered: boolean;
}

/**
 * One record on its way to Redis: its entry's fields already in RESP, in memory off the JS heap (`staged`), and what
 * the indexer needs of it, but neither the record nor its message: what waits for Redis is copied by every
 * young-generation collection it lives through, and those copies were the largest cost of the ingest thread.
 */
interface Item {
  direction: Direction;
  part: Part;
  /** Field-value pairs staged (ENTRY_FIELDS, plus the original message when kept). */
  pairs: number;
  /** The entry's field-value pairs as RESP bulk strings, at `start`..`end` of `staged`. */
  staged: Buffer;
  start: number;
  end: number;
  /** `StreamIndexer.facts` of the record. */
  facts?: unknown;
  /** The ID it was last sent under. */
  id?: string;
  /** Sent under `id` with no answer (connection lost): Redis may or may not have it; look before resending. */
  uncertain?: boolean;
  /** The spool segment it was replayed from, deleted once all its records are stored. */
  ticket?: SegmentTicket;
  /** `pushDurable`'s callback: called once, when the record is stored or spooled (true) or dropped (false). */
  durable?: (stored: boolean) => void;
}

interface SegmentTicket {
  segment: Segment;
  pending: number;
}

interface Batch {
  seq: number;
  items: Item[];
}

/**
 * A spool frame of this version: JSON with the entry as staged (`v` 2, `p` partition, `d` direction, `e` the values
 * in ENTRY_FIELDS order), the indexer's facts (`x`) and the ID it may already be stored under; when the original
 * message is kept, an LF and its exact bytes follow (JSON holds no raw LF). Frames of the version 1 writer (see
 * spool-frame.ts) are read too.
 */
interface SpoolJson {
  v?: unknown;
  p?: unknown;
  d?: unknown;
  e?: unknown;
  x?: unknown;
  id?: unknown;
}

const LF = 0x0a;

/** The spool frame of a staged item: its fields read back from RESP, the original message as its bytes. */
function stagedSpoolFrame(item: Item, id?: string): Buffer {
  const originalAt = ENTRY_FIELDS.length * 2 + 1;
  const fields = readBulks(item.staged, item.start, item.end, item.pairs > ENTRY_FIELDS.length ? originalAt : -1);
  const values: string[] = [];
  for (let i = 1; i < ENTRY_FIELDS.length * 2; i += 2) values.push(fields[i] as string);
  const facts = item.facts === NO_FACTS ? null : item.facts;
  const json = Buffer.from(JSON.stringify({ v: 2, p: item.part.name, d: item.direction, e: values, x: facts, id }));
  const original = item.pairs > ENTRY_FIELDS.length ? (fields[originalAt] as Buffer) : undefined;
  return original === undefined ? json : Buffer.concat([json, Buffer.from([LF]), original]);
}

/** `EVALSHA <sha> <n> <keys…> <args…>` into a RESP buffer. */
function writeEvalsha(w: RespWriter, sha: string, keys: readonly string[], args: ReadonlyArray<string | Buffer>): void {
  w.command(3 + keys.length + args.length).arg('EVALSHA').arg(sha).arg(String(keys.length));
  for (const key of keys) w.arg(key);
  for (const arg of args) w.arg(arg);
}

const MAX_BACKOFF_MS = 5000;
const SPOOL_EXTENSION = '.spool';
const SPOOL_ERROR_LOG_INTERVAL_MS = 10_000;

/** The facts of a record the indexer failed on (counted then): it is stored, not indexed. */
const NO_FACTS = Symbol('no index facts');

const INDEX_COMMAND = 'dockflowIndex';
type ScriptCommand = (numKeys: number, ...keysAndArgs: Array<string | Buffer>) => unknown;

/**
 * A batch is one transaction on one partition (one hash slot): MULTI, this script (when there are index writes), an
 * XADD per entry, EXEC. Plain XADDs cost Redis about half of what the same XADDs cost from inside a script.
 *
 * The index writes must apply only if every XADD of the batch succeeds: a refused entry is resent later under a new ID,
 * and counting it twice would be wrong. Inside a transaction nothing runs in between, so the script, run first, can tell
 * in advance: an XADD with an explicit ID fails only on a key of another type or an ID not above the stream's
 * last-generated-id (out of memory refuses the whole EXEC). When some XADD would fail the script writes nothing and
 * answers 'skipped', and the writer indexes the stored entries in a call of their own. Since the transaction is atomic,
 * an entry found in Redis after a lost connection has its index writes too. The index writes run under pcall: a
 * failing one must not look like a failed batch (the writer would resend stored entries).
 *
 * KEYS: the stream, then the indexer's keys. ARGV[1]: the batch's first ID; ARGV[2]: the IndexOps blob; then its
 * APPEND payloads. Reply: 'ok', 'skipped', or 'index failed: <error>'.
 */
const GUARDED_INDEX_SCRIPT = `${LUA_APPLY_INDEX}
local function idBelow(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local key = KEYS[1]
local kind = redis.call('TYPE', key).ok
if kind ~= 'none' then
  if kind ~= 'stream' then return 'skipped' end
  local info = redis.call('XINFO', 'STREAM', key)
  local last
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] break end
  end
  if not last or not idBelow(last, ARGV[1]) then return 'skipped' end
end
local ok, err = pcall(applyIndex, ARGV[2], 1, 2)
if not ok then return 'index failed: ' .. tostring(type(err) == 'table' and err.err or err) end
return 'ok'
`;
const GUARDED_INDEX_SHA = createHash('sha1').update(GUARDED_INDEX_SCRIPT).digest('hex');
const INDEX_OPS_SHA = createHash('sha1').update(INDEX_OPS_SCRIPT).digest('hex');
/** Sent on every (re)connection of the batch connection, so that EVALSHA finds the scripts. */
const SCRIPT_LOAD = Buffer.concat([
  new RespWriter(GUARDED_INDEX_SCRIPT.length + 64).command(3).arg('SCRIPT').arg('LOAD').arg(GUARDED_INDEX_SCRIPT).bytes(),
  new RespWriter(INDEX_OPS_SCRIPT.length + 64).command(3).arg('SCRIPT').arg('LOAD').arg(INDEX_OPS_SCRIPT).bytes(),
]);

/** Field names as RESP bytes, written as they are into every XADD. */
const FIELD_ARGS = ENTRY_FIELDS.map((f) => encodeArgs(f));
const ORIGINAL_ARG = encodeArgs(ORIGINAL_FIELD);
/** Items' fields are staged in chunks of this size, each freed once no item written into it is left. */
const STAGING_CHUNK_BYTES = 1024 * 1024;
/** Room past the chunk size for the record that crosses it (a larger one grows the chunk). */
const stagingChunk = (): RespWriter => new RespWriter(STAGING_CHUNK_BYTES + 64 * 1024);
const CONFLICT_RE = /equal or smaller than the target stream top item/i;
/** Entry numbers index into 4 bytes. */
const MAX_ENTRY_NUMBER = 0xffffffff;

/**
 * Writes records into partitions (one stream and its indexes per packet-time bucket and writer, see keys.ts), in
 * pipelined batches of one partition each, with a bounded memory queue, an on-disk spool for UDP overflow and for
 * what is left at close, and retries that never lose nor reorder what Redis did not take.
 *
 * Stream IDs are assigned here (`<bucket start>-<entry number>`, strictly increasing per partition, seeded from the
 * stream's last-generated-id when a partition is first written after each (re)connection), so that the indexer can
 * reference entries in the same transaction, and so that after a lost connection the writer can ask Redis which of
 * the unanswered entries it holds (`XRANGE id id`) instead of guessing: those are counted stored, the others are
 * resent, in order, under new IDs. Nothing new is sent until that is settled, so order within a partition is kept
 * across outages. (A definite error reply such as OOM can still reorder: the failed records are resent after batches
 * already in flight.)
 */
export class StreamWriter {
  private readonly redis: Redis;
  /** The batches' own connection (see resp.ts); everything else goes through `redis`. */
  private readonly resp: RespConnection;
  private readonly logger: Logger;
  private readonly indexer: StreamIndexer | undefined;
  private readonly now: () => number;
  private readonly keys: StoreKeys;
  private readonly writerId: string;
  private readonly keepOriginal: boolean;
  private readonly parts = new Map<string, Part>();
  private readonly single: Part | undefined;
  private readonly spool: SegmentQueue;
  private readonly spoolDir: string;
  private readonly spoolErrors: RateLimitedLog<unknown>;
  private readonly retention: Retention | undefined;

  private readonly maxQueue: number;
  private readonly batchMax: number;
  private readonly flushIntervalMs: number;
  private readonly maxInFlight: number;
  private readonly retentionMs: number;
  private readonly trimIntervalMs: number;

  private readonly queue = new Fifo<Item>();
  private staging = stagingChunk();
  private readonly inFlight = new Map<number, Batch>();
  private failed: Batch[] = [];
  private batchSeq = 0;
  private uncertainCount = 0;
  /** Every partition an item waits for has its last ID read from Redis. */
  private seeded = false;
  private redisUp = false;
  private maintenance = false;
  private backoffMs = 0;
  private retryAt = 0;

  private flushTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private trimTimer: NodeJS.Timeout | undefined;
  private kickPending = false;
  private soonPending = false;
  private flushDue = false;
  private wantDrain = false;
  private readonly drainListeners: Array<() => void> = [];

  private started = false;
  private closing: Promise<void> | undefined;
  private closed = false;
  private idleWaiter: (() => void) | undefined;

  private readonly counts = {
    pushed: { tcp: 0, udp: 0, tls: 0, relp: 0, file: 0 } as Record<Origin, number>,
    stored: Object.fromEntries(DIRECTIONS.map((d) => [d, 0])) as Record<Direction, number>,
    dropped: Object.fromEntries(STORE_DROP_REASONS.map((r) => [r, 0])) as Record<StoreDropReason, number>,
    spooled: 0,
    replayed: 0,
    failedBatches: 0,
    indexErrors: 0,
  };
  private readonly writeSeconds: Histogram;

  private readonly onReady = (): void => {
    this.redisUp = true;
    this.unseedAll();
    this.indexer?.forget?.();
    this.backoffMs = 0;
    this.retryAt = 0;
    this.pump();
  };
  private readonly onClose = (): void => {
    this.redisUp = false;
  };

  constructor(redis: Redis, opts: StreamWriterOptions, deps: StreamWriterDeps) {
    this.redis = redis;
    if (!(INDEX_COMMAND in redis)) redis.defineCommand(INDEX_COMMAND, { lua: INDEX_OPS_SCRIPT });
    const { host, port, path, username, password, db, tls, connectTimeout } = redis.options;
    this.resp = new RespConnection(
      { host, port, path, username, password, db, tls, connectTimeout },
      {
        logger: deps.logger,
        onReady: () => this.pump(),
        setup: () => ({ payload: SCRIPT_LOAD, replies: 2 }),
        replyTimeoutMs: opts.replyTimeoutMs,
      },
    );
    this.logger = deps.logger;
    this.indexer = opts.singleStream === undefined ? deps.indexer : undefined;
    this.now = deps.now ?? Date.now;
    this.keys = storeKeys(opts.keyPrefix, opts.singleStream);
    this.writerId = opts.writerId ?? 'w1';
    if (!WRITER_RE.test(this.writerId)) throw new Error(`writer id ${JSON.stringify(this.writerId)} must be 1-32 of [A-Za-z0-9_-]`);
    this.keepOriginal = opts.keepOriginal ?? false;
    this.single =
      opts.singleStream === undefined ? undefined : { name: opts.singleStream, bucket: 0, stream: opts.singleStream, fixedMs: undefined, last: [0, 0], seeded: false, registered: true };
    this.maxQueue = opts.maxQueueRecords ?? DEFAULTS.store.maxQueueRecords;
    this.batchMax = opts.batchMaxRecords ?? DEFAULTS.store.batchMaxRecords;
    this.flushIntervalMs = opts.flushIntervalMs ?? DEFAULTS.store.flushIntervalMs;
    this.maxInFlight = opts.maxBatchesInFlight ?? 4;
    this.retentionMs = opts.retentionMs ?? DEFAULTS.store.retentionMs;
    this.trimIntervalMs = opts.trimIntervalMs ?? 60_000;
    const maxRecords = opts.maxRecords ?? DEFAULTS.store.maxRecords;
    if (this.single === undefined && (this.retentionMs > 0 || maxRecords > 0)) {
      this.retention = new Retention(redis, this.keys, {
        retentionMs: this.retentionMs,
        maxRecords,
        writerId: this.writerId,
        logger: this.logger,
        now: this.now,
        onDeleted: (names) => this.forgetPartitions(names),
      });
    }
    // A full disk fails every write: one log line per kind of failure per interval, the exact loss in the counters.
    this.spoolErrors = new RateLimitedLog(SPOOL_ERROR_LOG_INTERVAL_MS, (what, times, err) =>
      this.logger.error({ err, what, times, dir: opts.spoolDir }, what === 'write' ? 'spool write failed; records lost (counted as spool-write-failed)' : 'spool disk failure'),
    );
    this.spoolDir = opts.spoolDir;
    this.spool = new SegmentQueue(
      {
        dir: opts.spoolDir,
        extension: SPOOL_EXTENSION,
        maxBytes: opts.spoolMaxBytes ?? DEFAULTS.store.spoolMaxBytes,
        segmentBytes: opts.spoolSegmentBytes ?? 1024 ** 2,
        // A write per record would cost more than the UDP path can afford while Redis is down: a crash loses at most
        // the last 100 ms of spooled records, a power loss the last second.
        flushBytes: 64 * 1024,
        flushIntervalMs: 100,
        fsyncIntervalMs: 1000,
      },
      {
        onLost: (_reason, frames, err) => {
          this.counts.dropped['spool-write-failed'] += frames.length;
          this.spoolErrors.report('write', err, frames.length);
        },
        onError: (what, err) => this.spoolErrors.report(what, err),
        writev: deps.spoolWritev,
      },
    );
    this.writeSeconds = this.registerMetrics(deps.registry);
    const o = redis.options;
    if (o.enableOfflineQueue !== false || o.maxRetriesPerRequest !== 0 || o.autoResendUnfulfilledCommands !== false) {
      this.logger.warn('the Redis client may queue or resend commands on its own (use connectRedis): records could be stored twice after an outage');
    }
  }

  /** Retention's pass, for tests and for `dockflow` commands that trim on demand. */
  async trimNow(): Promise<void> {
    await this.retention?.run();
  }

  private unseedAll(): void {
    this.seeded = false;
    for (const p of this.parts.values()) {
      p.seeded = false;
      p.registered = false;
    }
    if (this.single) this.single.seeded = false;
  }

  /** The partition a packet time goes to (created on first use). */
  private partOf(timeMs: number): Part {
    if (this.single !== undefined) return this.single;
    const bucket = bucketOf(timeMs);
    const name = partitionName(bucket, this.writerId);
    let part = this.parts.get(name);
    if (part === undefined) {
      const fixedMs = bucketStartMs(bucket);
      part = { name, bucket, stream: this.keys.stream(name), fixedMs, last: [fixedMs, -1], seeded: false, registered: false };
      this.parts.set(name, part);
    }
    return part;
  }

  /** Retention deleted these partitions: they start again from entry 0 if written again, and are registered again. */
  private forgetPartitions(names: readonly string[]): void {
    for (const name of names) {
      const part = this.parts.get(name);
      if (part !== undefined) {
        part.seeded = false;
        part.registered = false;
      }
    }
    this.seeded = false;
  }

  /** A partition whose bucket retention has passed (records for it are counted as `expired`, not stored). */
  private expired(part: Part): boolean {
    return this.single === undefined && this.retentionMs > 0 && bucketStartMs(part.bucket) + BUCKET_MS <= this.now() - this.retentionMs;
  }

  /** Opens the spool (records a previous run left are replayed first) and starts writing once Redis is ready. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.spool.open();
    const imported = importLegacySpool(this.spoolDir, this.spool);
    if (imported > 0) this.logger.info({ records: imported, dir: this.spoolDir }, 'spool of an earlier version moved into the current format');
    if (this.spool.hasUnread()) this.logger.info({ dir: this.spoolDir, bytes: this.spool.bytes }, 'spool holds records from a previous run');
    this.redis.on('ready', this.onReady);
    this.redis.on('close', this.onClose);
    this.redis.on('end', this.onClose);
    this.resp.connect();
    if (this.retention !== undefined) this.trimTimer = setInterval(() => void this.retention?.run(), this.trimIntervalMs).unref();
    if (this.redis.status === 'ready') this.onReady();
    else this.logger.warn({ status: this.redis.status }, 'Redis not ready yet; records wait in the queue and the spool');
  }

  /**
   * Takes the record (always, unless closed). `false` asks the caller to pause until `onDrain`: the queue is full.
   * UDP records are not queued beyond the bound: with the queue full, or while older UDP records are in the spool,
   * they go to the spool (and the caller is asked to pause); with the spool full they are dropped and counted.
   * `message`, the syslog message the record was parsed from, is stored with it when `keepOriginal` is on. A record
   * whose packet time is already past retention is counted (`expired`) and not stored.
   */
  push(record: FlowRecord, origin: Origin, message?: string, raw?: Buffer): boolean {
    this.counts.pushed[origin]++;
    if (this.closed) {
      this.counts.dropped.closed++;
      return false;
    }
    const item = this.itemOf(record, message, raw);
    if (this.expired(item.part)) {
      this.counts.dropped.expired++;
      return true;
    }
    if (origin === 'udp' && (this.queue.length >= this.maxQueue || this.spool.hasUnread())) {
      if (this.spool.append(stagedSpoolFrame(item))) {
        this.counts.spooled++;
        // Taken; and the UDP receiver, which can hold datagrams unparsed in its own backlog, is asked to pause.
        this.wantDrain = true;
        return false;
      }
      this.counts.dropped['spool-full']++;
      return false;
    }
    this.enqueue(item);
    if (this.queue.length >= this.batchMax) {
      if (!this.kickPending) {
        this.kickPending = true;
        setImmediate(() => {
          this.kickPending = false;
          this.pump();
        });
      }
    } else this.flushTimer ??= setTimeout(() => this.onFlushTimer(), this.flushIntervalMs);
    if (this.queue.length < this.maxQueue) return true;
    this.wantDrain = true;
    return false;
  }

  /**
   * Durability watermark (RELP; docs/design.md): as `push` for a queued origin, and `durable` is called exactly once:
   * `true` when the record is stored in Redis (its transaction answered) or written to the spool and fsynced (at
   * close), `false` when it is dropped (pushed after close, or the spool write at close failed). A record whose
   * connection to Redis was lost stays pending until the writer has asked Redis whether it holds it. Never for UDP:
   * its overflow spool is not fsynced per record.
   */
  pushDurable(record: FlowRecord, origin: Exclude<Origin, 'udp'>, message: string | undefined, durable: (stored: boolean) => void, raw?: Buffer): boolean {
    if (this.closed) {
      this.counts.pushed[origin]++;
      this.counts.dropped.closed++;
      durable(false);
      return false;
    }
    const before = this.queue.last();
    const ok = this.push(record, origin, message, raw);
    const item = this.queue.last();
    // Not queued: its packet time is older than retention (`expired`), so it is settled as if stored and deleted.
    if (item === undefined || item === before) durable(true);
    else item.durable = durable;
    // The sender waits for this record's answer (omrelp waits at the end of each of its batches): send it on the next
    // turn of the event loop with whatever else is queued, not after flushIntervalMs.
    if (!this.soonPending) {
      this.soonPending = true;
      setImmediate(() => {
        this.soonPending = false;
        this.flushDue = true;
        this.pump();
        this.flushDue = false;
      });
    }
    return ok;
  }

  private enqueue(item: Item): void {
    if (!item.part.seeded) this.seeded = false;
    this.queue.push(item);
  }

  private itemOf(record: FlowRecord, message: string | undefined, raw?: Buffer): Item {
    let timeMs = packetTimeMs(record);
    if (!Number.isFinite(timeMs)) timeMs = this.now();
    const values = entryValues(record, timeMs);
    // The message's stored bytes: exactly as received (`raw`, when its text is not), else its text in UTF-8.
    const original = this.keepOriginal && message !== undefined ? (raw ?? message) : undefined;
    return this.stage(record.network.direction, this.partOf(timeMs), values, original, this.factsOf(record));
  }

  /** Stages an entry's fields as RESP. */
  private stage(direction: Direction, part: Part, values: readonly string[], original: string | Buffer | undefined, facts: unknown): Item {
    let staging = this.staging;
    if (staging.length >= STAGING_CHUNK_BYTES) staging = this.staging = stagingChunk();
    const start = staging.length;
    for (let i = 0; i < FIELD_ARGS.length; i++) staging.raw(FIELD_ARGS[i]!).arg(values[i] ?? '');
    if (original !== undefined) staging.raw(ORIGINAL_ARG).arg(original);
    return { direction, part, pairs: FIELD_ARGS.length + (original !== undefined ? 1 : 0), staged: staging.buffer, start, end: staging.length, facts };
  }

  private factsOf(record: FlowRecord): unknown {
    if (this.indexer === undefined) return undefined;
    try {
      return this.indexer.facts(record);
    } catch (err) {
      this.counts.indexErrors++;
      this.logger.error({ err }, 'indexer failed on a record; it is stored without its index entries');
      return NO_FACTS;
    }
  }

  /** Called when the queue has room again after `push` returned `false`. */
  onDrain(listener: () => void): void {
    this.drainListeners.push(listener);
  }

  /**
   * Writes everything queued, waiting at most `deadlineMs` (milliseconds from now) for Redis; what is still not
   * stored then is written to the spool, replayed at the next start. Records pushed afterwards are dropped (`closed`).
   */
  close(deadlineMs: number): Promise<void> {
    this.closing ??= this.doClose(deadlineMs);
    return this.closing;
  }

  stats(): StreamWriterStats {
    const c = this.counts;
    let stored = 0;
    for (const d of DIRECTIONS) stored += c.stored[d];
    let inFlight = 0;
    for (const b of this.inFlight.values()) inFlight += b.items.length;
    return {
      pushed: { ...c.pushed },
      stored,
      storedByDirection: { ...c.stored },
      dropped: { ...c.dropped },
      spooled: c.spooled,
      replayed: c.replayed,
      queued: this.queue.length,
      inFlight,
      spoolBytes: this.spool.bytes,
      redisUp: this.connected,
    };
  }

  /** Both connections ready: ioredis' (seeding, lookups) and the batches'. */
  private get connected(): boolean {
    return this.redisUp && this.resp.isReady;
  }

  /** Decides the next step; called whenever something changed. Never awaits. */
  private pump(): void {
    if (!this.started || this.closed || !this.connected || this.maintenance) return;
    if (this.failed.length > 0) {
      if (this.inFlight.size > 0) return;
      this.requeueFailed();
    }
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      this.retryTimer ??= setTimeout(() => {
        this.retryTimer = undefined;
        this.pump();
      }, wait);
      return;
    }
    this.replayFromSpool();
    if (!this.seeded || this.uncertainCount > 0) {
      void this.runMaintenance();
      return;
    }
    const partialOk = this.flushDue || this.closing !== undefined;
    while (this.inFlight.size < this.maxInFlight && this.queue.length > 0) {
      if (this.queue.length < this.batchMax && !partialOk) {
        this.flushTimer ??= setTimeout(() => this.onFlushTimer(), this.flushIntervalMs);
        break;
      }
      this.dispatch(this.queue.take(this.batchMax));
    }
    if (this.wantDrain && this.queue.length <= this.maxQueue / 2) {
      this.wantDrain = false;
      for (const l of this.drainListeners) l();
    }
    this.checkIdle();
  }

  private onFlushTimer(): void {
    this.flushTimer = undefined;
    this.flushDue = true;
    this.pump();
    this.flushDue = false;
  }

  /** Sends what was taken from the queue as one transaction per partition, in queue order within each. */
  private dispatch(taken: Item[]): void {
    const byPart = new Map<Part, Item[]>();
    for (const item of taken) {
      if (this.expired(item.part)) {
        // Waited (an outage, the spool) past retention: its partition may be deleted already.
        this.counts.dropped.expired++;
        this.release(item);
        continue;
      }
      let list = byPart.get(item.part);
      if (list === undefined) byPart.set(item.part, (list = []));
      list.push(item);
    }
    for (const [part, items] of byPart) this.dispatchPart(part, items);
  }

  private dispatchPart(part: Part, items: Item[]): void {
    let bytes = 0;
    for (const item of items) {
      item.id = this.nextId(part);
      bytes += item.end - item.start + 64;
    }
    const firstId = items[0]!.id as string;
    const ops = this.buildIndex(part, items);
    const registry = this.buildRegistry(part, items);
    const w = new RespWriter(bytes + (ops === undefined ? 0 : ops.keys.length * 64 + 1024) + 256);
    let before = 0;
    // The partition is listed before its first entry is written: queries and retention find partitions there.
    const registering = !part.registered;
    if (registering) {
      w.command(5).arg('ZADD').arg(this.keys.partitions).arg('NX').arg(String(part.bucket)).arg(part.name);
      part.registered = true;
      before++;
    }
    if (registry !== undefined) {
      writeEvalsha(w, INDEX_OPS_SHA, registry.keys, [registry.encode(), ...registry.payloads]);
      before++;
    }
    w.command(1).arg('MULTI');
    let queued = items.length;
    if (ops !== undefined) {
      writeEvalsha(w, GUARDED_INDEX_SHA, [part.stream, ...ops.keys], [firstId, ops.encode(), ...ops.payloads]);
      queued++;
    }
    for (const item of items) {
      w.command(3 + item.pairs * 2)
        .arg('XADD')
        .arg(part.stream)
        .arg(item.id as string)
        .raw(item.staged, item.start, item.end);
    }
    w.command(1).arg('EXEC');
    const batch: Batch = { seq: this.batchSeq++, items };
    this.inFlight.set(batch.seq, batch);
    const endTimer = this.writeSeconds.startTimer();
    // Replies: the registry script's (if sent), MULTI's OK, one per queued command, then EXEC's array of their
    // results (or its error).
    this.resp.send(w.bytes(), before + queued + 2).then(
      (replies) => {
        if (registering && replies[0] instanceof Error) part.registered = false;
        const reg = replies[registering ? 1 : 0];
        if (registry !== undefined && reg instanceof Error) this.registryFailed(reg);
        this.settle(batch, replies[replies.length - 1], ops !== undefined, endTimer);
      },
      (err: unknown) => {
        if (registering) part.registered = false;
        this.indexer?.forget?.();
        this.settle(batch, err instanceof Error ? err : new Error(String(err)), ops !== undefined, endTimer);
      },
    );
  }

  private registryFailed(err: Error): void {
    this.indexer?.forget?.();
    this.counts.indexErrors++;
    if (/NOSCRIPT/.test(err.message)) void this.resp.send(SCRIPT_LOAD, 2).catch(() => undefined);
    this.logger.warn({ err }, 'registry writes failed; they are made again with the next batches');
  }

  private entriesOf(part: Part, items: readonly Item[]): IndexEntry[] {
    const entries: IndexEntry[] = [];
    for (const item of items) {
      if (item.facts !== NO_FACTS) entries.push({ facts: item.facts, partition: part.name, stream: part.stream, id: item.id as string });
    }
    return entries;
  }

  private buildRegistry(part: Part, items: readonly Item[]): IndexOps | undefined {
    if (this.indexer?.registry === undefined) return undefined;
    try {
      return this.indexer.registry(this.entriesOf(part, items));
    } catch (err) {
      this.counts.indexErrors++;
      this.logger.error({ err }, 'indexer failed on registry writes');
      return undefined;
    }
  }

  private buildIndex(part: Part, items: readonly Item[]): IndexOps | undefined {
    if (this.indexer === undefined) return undefined;
    const entries = this.entriesOf(part, items);
    try {
      return this.indexer.build(entries);
    } catch (err) {
      this.counts.indexErrors++;
      this.logger.error({ err, records: entries.length }, 'indexer failed; the records are stored without those index entries');
      return undefined;
    }
  }

  /** Index writes for the stored part of a batch whose other entries Redis refused (the batch's own were skipped). */
  private indexApart(items: readonly Item[]): void {
    const part = items[0]?.part;
    if (part === undefined) return;
    const ops = this.buildIndex(part, items);
    if (ops === undefined) return;
    const pipeline = this.redis.pipeline();
    (pipeline as unknown as Record<string, ScriptCommand>)[INDEX_COMMAND]!.call(pipeline, ops.keys.length, ...ops.keys, ops.encode(), ...ops.payloads);
    pipeline.exec().then(
      (results) => {
        const err = results?.[0]?.[0];
        if (err) this.indexFailed(err);
      },
      (err: unknown) => this.indexFailed(err),
    );
  }

  private indexFailed(err: unknown): void {
    this.counts.indexErrors++;
    this.logger.warn({ err }, 'index writes failed for stored records');
  }

  /**
   * `exec` is EXEC's reply (an array of the results: the script's when `indexed`, then each XADD's, then the XTRIMs'),
   * or the error that stands for all of them: EXEC's own error reply (Redis ran nothing) or a lost connection (Redis may
   * have run it all or nothing: the transaction is atomic).
   */
  private settle(batch: Batch, exec: unknown, indexed: boolean, endTimer: () => number): void {
    if (this.closed) return; // close() has already spooled this batch, its IDs kept for the next run to look up
    this.inFlight.delete(batch.seq);
    const results = Array.isArray(exec) ? (exec as unknown[]) : undefined;
    const batchErr = results === undefined ? (exec instanceof Error ? exec : new ReplyError(`unexpected EXEC reply: ${String(exec)}`)) : undefined;
    const offset = indexed ? 1 : 0;
    const notStored: Item[] = [];
    let firstErr: unknown;
    for (let i = 0; i < batch.items.length; i++) {
      const item = batch.items[i] as Item;
      const reply = results?.[offset + i];
      const err = batchErr ?? (reply instanceof Error ? reply : undefined);
      if (!err) {
        this.stored(item);
        continue;
      }
      firstErr ??= err;
      if (err.name === 'ReplyError') {
        // Redis answered no: it does not hold the entry. A conflict means our idea of the stream's last ID is stale.
        if (CONFLICT_RE.test(err.message)) {
          item.part.seeded = false;
          this.seeded = false;
        }
        item.id = undefined;
      } else item.uncertain = true;
      notStored.push(item);
    }
    if (results !== undefined && indexed) this.settleIndex(batch.items, results[0], notStored);
    if (notStored.length > 0) {
      this.counts.failedBatches++;
      this.failed.push({ seq: batch.seq, items: notStored });
      this.backOff();
      this.logger.warn({ err: firstErr, records: notStored.length }, 'Redis did not take a batch; it will be retried');
    } else {
      endTimer();
      this.backoffMs = 0;
    }
    this.pump();
  }

  /** What the guarded index script answered for a batch Redis ran (see GUARDED_INDEX_SCRIPT). */
  private settleIndex(items: readonly Item[], answer: unknown, notStored: readonly Item[]): void {
    if (answer === 'ok') {
      if (notStored.length > 0) this.logger.warn({ records: notStored.length }, 'entries refused after their index writes were applied; resent, they are counted again');
      return;
    }
    if (typeof answer === 'string' && answer.startsWith('index failed: ')) {
      this.indexFailed(new ReplyError(answer.slice('index failed: '.length)));
      return;
    }
    // 'skipped' (some XADD was going to fail), or the script did not run (NOSCRIPT after a SCRIPT FLUSH): the stored
    // entries are indexed in a call of their own.
    if (answer instanceof Error && /NOSCRIPT/.test(answer.message)) void this.resp.send(SCRIPT_LOAD, 2).catch(() => undefined);
    const notStoredSet = new Set(notStored);
    const stored = items.filter((item) => !notStoredSet.has(item));
    if (stored.length > 0) this.indexApart(stored);
  }

  private stored(item: Item): void {
    this.counts.stored[item.direction]++;
    this.release(item);
  }

  /** The item is settled (stored or counted): its spool segment can go once all of its records are. */
  private release(item: Item): void {
    // An expired record (never stored: older than retention) is settled too.
    if (item.durable !== undefined) {
      const durable = item.durable;
      item.durable = undefined;
      durable(true);
    }
    const ticket = item.ticket;
    if (ticket && --ticket.pending === 0) this.spool.release(ticket.segment);
  }

  private backOff(): void {
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs === 0 ? 100 : this.backoffMs * 2);
    this.retryAt = Date.now() + this.backoffMs;
  }

  /** Puts what failed back at the head of the queue, in the order it was first sent. */
  private requeueFailed(): void {
    const batches = this.failed.sort((a, b) => a.seq - b.seq);
    this.failed = [];
    const items = batches.flatMap((b) => b.items);
    for (const item of items) {
      if (item.uncertain) this.uncertainCount++;
      if (!item.part.seeded) this.seeded = false;
    }
    this.queue.unshift(items);
  }

  /** Seeds the stream IDs and settles uncertain records, then resumes writing. */
  private async runMaintenance(): Promise<void> {
    this.maintenance = true;
    try {
      if (!this.seeded) await this.seed();
      if (this.uncertainCount > 0 && !this.closed) await this.resolveUncertain();
      this.backoffMs = 0;
    } catch (err) {
      this.logger.warn({ err }, 'Redis unavailable; will retry');
      this.backOff();
    } finally {
      this.maintenance = false;
    }
    this.pump();
  }

  /** Reads the last ID of every partition an item waits for and that was not read since the (re)connection. */
  private async seed(): Promise<void> {
    const parts = new Set<Part>();
    for (const item of this.queue.filter((i) => !i.part.seeded)) parts.add(item.part);
    const list = [...parts];
    const pipeline = this.redis.pipeline();
    for (const part of list) pipeline.xinfo('STREAM', part.stream);
    const results = list.length > 0 ? ((await pipeline.exec()) ?? []) : [];
    list.forEach((part, i) => {
      const [err, info] = results[i] ?? [new Error('no reply'), undefined];
      if (err) {
        // No stream yet; or a key of another type, which its XADDs will be refused on (counted, retried).
        if (/no such key|WRONGTYPE/i.test(err.message)) return;
        throw err;
      }
      const last = parseId(lastGeneratedId(info));
      if (!last) throw new Error(`XINFO STREAM ${part.stream}: no last-generated-id`);
      if (compareIds(last, part.last) > 0) part.last = last;
    });
    if (this.closed) return;
    for (const part of list) part.seeded = true;
    // Items queued meanwhile for partitions not read yet leave `seeded` false for another round.
    this.seeded = !this.queue.filter((i) => !i.part.seeded).length;
  }

  /** Asks Redis, for each record sent without an answer, whether it holds it. */
  private async resolveUncertain(): Promise<void> {
    const pending = this.queue.filter((item) => item.uncertain === true);
    const pipeline = this.redis.pipeline();
    for (const item of pending) pipeline.xrange(item.part.stream, item.id as string, item.id as string);
    const results = (await pipeline.exec()) ?? [];
    if (this.closed) return;
    const found = new Set<Item>();
    pending.forEach((item, i) => {
      const [err, entries] = results[i] ?? [new Error('no reply'), undefined];
      if (err) throw err;
      if (Array.isArray(entries) && entries.length > 0) found.add(item);
    });
    // Only now (every lookup answered) change anything, so a failure above leaves the items uncertain for a retry.
    for (const item of pending) {
      item.uncertain = false;
      if (!found.has(item)) item.id = undefined;
    }
    this.uncertainCount = 0;
    if (found.size === 0) return;
    this.queue.remove(found);
    for (const item of found) this.stored(item);
    this.logger.info({ records: found.size }, 'records sent before the connection was lost were stored; not resending them');
  }

  /** Moves one spool segment into the queue when there is room and nothing else is pending. */
  private replayFromSpool(): void {
    if (this.closing || this.queue.length >= this.maxQueue / 2 || !this.spool.hasUnread()) return;
    const read = this.spool.readNext();
    if (!read) return;
    const ticket: SegmentTicket = { segment: read.segment, pending: 0 };
    // A torn tail is one record cut by a crash mid-write.
    let bad = read.tornBytes > 0 ? 1 : 0;
    for (const frame of read.frames) {
      const spooled = this.spooledItem(frame);
      if (spooled === undefined) {
        bad++;
        continue;
      }
      const { item, id } = spooled;
      item.ticket = ticket;
      if (id !== undefined) {
        item.id = id;
        item.uncertain = true;
        this.uncertainCount++;
      }
      ticket.pending++;
      if (this.expired(item.part)) {
        this.counts.dropped.expired++;
        this.release(item);
        continue;
      }
      this.enqueue(item);
    }
    this.counts.replayed += ticket.pending;
    this.counts.dropped['spool-torn'] += bad;
    if (ticket.pending === 0) this.spool.release(read.segment);
    this.logger.info({ records: ticket.pending, unreadable: bad, spoolBytes: this.spool.bytes }, 'replaying spooled records');
  }

  /**
   * The item a spool frame holds (this version's, or a record of the version 1 writer), and the ID it may already be
   * stored under (only this version's IDs: the version 1 writer's are in its own streams), or undefined.
   */
  private spooledItem(frame: Buffer): { item: Item; id: string | undefined } | undefined {
    const lf = frame.indexOf(LF);
    let line: SpoolJson;
    try {
      line = JSON.parse(frame.toString('utf8', 0, lf === -1 ? frame.length : lf)) as SpoolJson;
    } catch {
      return undefined;
    }
    if (typeof line !== 'object' || line === null) return undefined;
    if (line.v !== 2) {
      const v1 = spooledRecord(frame);
      return v1 === undefined ? undefined : { item: this.itemOf(v1.record, v1.message, v1.raw), id: undefined };
    }
    const values = line.e;
    if (typeof line.p !== 'string' || typeof line.d !== 'string' || !Array.isArray(values) || values.length !== ENTRY_FIELDS.length) return undefined;
    if (!values.every((v) => typeof v === 'string') || !(DIRECTIONS as readonly string[]).includes(line.d)) return undefined;
    const t = Number(values[0]);
    if (!Number.isFinite(t)) return undefined;
    const part = this.partOf(t);
    const facts = this.indexer === undefined ? undefined : line.x === null || line.x === undefined ? NO_FACTS : line.x;
    const original = lf === -1 ? undefined : frame.subarray(lf + 1);
    const item = this.stage(line.d as Direction, part, values as string[], original, facts);
    return { item, id: typeof line.id === 'string' ? line.id : undefined };
  }

  private nextId(part: Part): string {
    const last = part.last;
    if (part.fixedMs !== undefined) {
      if (last[0] !== part.fixedMs || last[1] >= MAX_ENTRY_NUMBER) throw new Error(`partition ${part.name} is full`);
      last[1]++;
      return `${part.fixedMs}-${last[1]}`;
    }
    const now = this.now();
    // The clock may step back (NTP) or the stream may hold later IDs: stay on the last millisecond then.
    if (now > last[0]) {
      last[0] = now;
      last[1] = 0;
    } else last[1]++;
    return `${last[0]}-${last[1]}`;
  }

  private checkIdle(): void {
    if (this.idleWaiter && this.queue.length === 0 && this.inFlight.size === 0 && this.failed.length === 0 && !this.maintenance) this.idleWaiter();
  }

  private async doClose(deadlineMs: number): Promise<void> {
    if (this.trimTimer) clearInterval(this.trimTimer);
    if (this.started) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.idleWaiter = resolve;
        timer = setTimeout(resolve, deadlineMs);
        this.pump();
        this.checkIdle();
      });
      clearTimeout(timer);
    }
    this.closed = true;
    this.idleWaiter = undefined;
    for (const t of [this.flushTimer, this.retryTimer]) if (t) clearTimeout(t);
    this.redis.off('ready', this.onReady);
    this.redis.off('close', this.onClose);
    this.redis.off('end', this.onClose);
    this.resp.close();
    if (!this.started) this.spool.open(); // records pushed before start() still go somewhere durable
    // Oldest first: what was sent (in flight or failed, by batch order), then the queue.
    const sent = [...this.inFlight.values(), ...this.failed].sort((a, b) => a.seq - b.seq);
    const left = [...sent.flatMap((b) => b.items), ...this.queue.take(this.queue.length)];
    this.inFlight.clear();
    this.failed = [];
    // An item still carrying an ID was sent and not answered: keep the ID so the next run asks Redis whether it
    // took it before resending.
    const lines = left.map((item) => stagedSpoolFrame(item, item.id));
    let written = false;
    try {
      this.spool.writeHead(lines);
      written = true;
      this.counts.spooled += lines.length;
      if (lines.length > 0) this.logger.warn({ records: lines.length }, 'Redis did not take everything before the deadline; the rest is in the spool');
    } catch (err) {
      this.counts.dropped['spool-write-failed'] += lines.length;
      throw err;
    } finally {
      this.spool.close();
      // writeHead fsyncs the segment and its directory before returning.
      for (const item of left) item.durable?.(written);
      this.spoolErrors.flush();
    }
  }

  private registerMetrics(registry: Registry): Histogram {
    const registers = [registry];
    const c = this.counts;
    // The hot path bumps plain numbers; Prometheus reads them at scrape time.
    const byLabel = (name: string, help: string, label: string, values: () => Record<string, number>): void => {
      const reported: Record<string, number> = {};
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          for (const [k, v] of Object.entries(values())) {
            if (v > (reported[k] ?? 0)) this.inc({ [label]: k }, v - (reported[k] ?? 0));
            reported[k] = v;
          }
        },
      });
    };
    const total = (name: string, help: string, value: () => number): void => {
      let reported = 0;
      new Counter({
        name,
        help,
        registers,
        collect() {
          const v = value();
          if (v > reported) this.inc(v - reported);
          reported = v;
        },
      });
    };
    const gauge = (name: string, help: string, value: () => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(value());
        },
      });
    };
    byLabel('dockflow_store_records_pushed_total', 'Records handed to the Redis writer, by origin', 'origin', () => c.pushed);
    byLabel('dockflow_store_records_stored_total', 'Records Redis acknowledged, by direction', 'direction', () => c.stored);
    byLabel('dockflow_store_records_dropped_total', 'Records the writer dropped, by reason', 'reason', () => c.dropped);
    total('dockflow_store_records_spooled_total', 'Records written to the on-disk spool', () => c.spooled);
    total('dockflow_store_records_replayed_total', 'Records read back from the on-disk spool', () => c.replayed);
    total('dockflow_store_batch_failures_total', 'Pipelines Redis did not fully take (retried)', () => c.failedBatches);
    total('dockflow_store_index_errors_total', 'Secondary index writes that failed', () => c.indexErrors);
    gauge('dockflow_store_queue_records', 'Records waiting in memory for Redis', () => this.queue.length);
    gauge('dockflow_store_batches_in_flight', 'Batches (transactions) awaiting an answer from Redis', () => this.inFlight.size);
    gauge('dockflow_store_spool_bytes', 'Bytes in the on-disk spool', () => this.spool.bytes);
    gauge('dockflow_store_redis_up', '1 when the Redis connections (batches, and everything else) are ready', () => (this.connected ? 1 : 0));
    return new Histogram({
      name: 'dockflow_store_redis_write_seconds',
      help: 'Time from sending a batch to its reply (batches stored whole)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
  }
}

/** A FIFO with O(1) push/take, compacted lazily. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  last(): T | undefined {
    return this.items.length > this.head ? this.items[this.items.length - 1] : undefined;
  }

  take(n: number): T[] {
    const out = this.items.slice(this.head, this.head + n);
    this.head += out.length;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return out;
  }

  unshift(items: readonly T[]): void {
    this.items = [...items, ...this.items.slice(this.head)];
    this.head = 0;
  }

  filter(pred: (item: T) => boolean): T[] {
    return this.items.slice(this.head).filter(pred);
  }

  remove(set: ReadonlySet<T>): void {
    this.items = this.items.slice(this.head).filter((item) => !set.has(item));
    this.head = 0;
  }
}

function parseId(id: unknown): [number, number] | undefined {
  if (typeof id !== 'string') return undefined;
  const dash = id.indexOf('-');
  if (dash <= 0) return undefined;
  const ms = Number(id.slice(0, dash));
  const seq = Number(id.slice(dash + 1));
  return Number.isFinite(ms) && Number.isFinite(seq) ? [ms, seq] : undefined;
}

function compareIds(a: readonly [number, number], b: readonly [number, number]): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
}

/** `last-generated-id` from XINFO STREAM, as a flat RESP2-style array or a RESP3 map. */
function lastGeneratedId(info: unknown): unknown {
  if (Array.isArray(info)) {
    const i = info.indexOf('last-generated-id');
    return i >= 0 ? info[i + 1] : undefined;
  }
  if (typeof info === 'object' && info !== null) return (info as Record<string, unknown>)['last-generated-id'];
  return undefined;
}
