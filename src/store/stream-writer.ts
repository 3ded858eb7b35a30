import { createHash } from 'node:crypto';
import { ReplyError, type ChainableCommander, type Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { DEFAULTS } from '../config/index.js';
import { DIRECTIONS, type Direction, type FlowRecord } from '../record.js';
import { CONTEXT_FIELD, encodeContext, encodeRecord, MESSAGE_FIELD, RECORD_FIELD } from './encode.js';
import { INDEX_OPS_SCRIPT, LUA_APPLY_INDEX, type IndexOps } from './index-ops.js';
import { storeKeys } from './keys.js';
import { encodeArgs, readBulks, RespConnection, RespWriter } from './resp.js';
import { SegmentQueue, type Segment, type SegmentQueueDeps } from '../disk/segment-queue.js';
import { importLegacySpool, spooledRecord, spoolFrame } from './spool-frame.js';
import { RateLimitedLog } from '../rate-limited-log.js';
import type { IndexEntry, StreamIndexer } from './types.js';

export type Origin = 'tcp' | 'udp' | 'file';
export type StoreDropReason = 'spool-full' | 'spool-torn' | 'spool-write-failed' | 'closed';
export const STORE_DROP_REASONS: readonly StoreDropReason[] = ['spool-full', 'spool-torn', 'spool-write-failed', 'closed'];

export interface StreamWriterOptions {
  /** Key prefix (`<prefix>:flows:<direction>`). Unset options take the config schema's defaults. */
  keyPrefix?: string;
  /** One stream for every direction instead of one per direction (see `storeKeys`). */
  singleStream?: string | undefined;
  /** Records waiting for Redis before `push` asks callers to pause (UDP overflows to the spool). */
  maxQueueRecords?: number;
  /** Records per batch (one transaction). */
  batchMaxRecords?: number;
  /** A partial batch is written after this long. */
  flushIntervalMs?: number;
  /** Batches awaiting Redis' answer at once. Default 4. */
  maxBatchesInFlight?: number;
  /** Redis silent this long with a batch waiting: the batch connection is dropped and the batches are uncertain. */
  replyTimeoutMs?: number;
  /** `XADD … MAXLEN ~ n`; 0 = no count limit. */
  maxLenPerStream?: number;
  /** `XTRIM … MINID ~ now-retentionMs`; 0 = no age limit. */
  retentionMs?: number;
  /** Default 60 s. */
  trimIntervalMs?: number;
  spoolDir: string;
  spoolMaxBytes?: number;
  /** Default 1 MiB. */
  spoolSegmentBytes?: number;
}

export interface StreamWriterDeps {
  logger: Logger;
  registry: Registry;
  indexer?: StreamIndexer | undefined;
  /** Wall clock for stream IDs (tests move it backwards). */
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
 * One record on its way to Redis: its entry's fields already in RESP, in memory off the JS heap (`staged`), and what
 * the indexer needs of it, but neither the record nor its message: what waits for Redis is copied by every
 * young-generation collection it lives through, and those copies were the largest cost of the ingest thread.
 */
interface Item {
  direction: Direction;
  /** Index into the stream keys (`DIRECTIONS` order). */
  stream: number;
  /** Stored with its message (`m`, `x`: see encode.ts) rather than whole (`r`). */
  withMessage: boolean;
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
}

interface SegmentTicket {
  segment: Segment;
  pending: number;
}

/** `XADD <stream>` with the argument count of an entry stored with its message (`m`, `x`: 7) or whole (`r`: 5). */
interface XaddHeads {
  message: Buffer;
  whole: Buffer;
}

interface Batch {
  seq: number;
  items: Item[];
}

/** The message's stored bytes: exactly as received (`raw`, when its text is not), else its text in UTF-8. */
const messageBytes = (message: string, raw: Buffer | undefined): Buffer => raw ?? Buffer.from(message);

/**
 * The entry's stored form (see encode.ts): the message and the context JSON, or (no message) the whole record's
 * JSON. An empty message parses to no record, so it cannot stand for one.
 */
function storedForm(record: FlowRecord, message: string | undefined): { message: string | undefined; encoded: string } {
  return message !== undefined && message !== '' ? { message, encoded: encodeContext(record) } : { message: undefined, encoded: encodeRecord(record) };
}

/** The spool frame of a staged item: its fields read back from RESP, the message as its bytes. */
function stagedSpoolFrame(item: Item): Buffer {
  const fields = readBulks(item.staged, item.start, item.end, item.withMessage ? 1 : -1);
  return item.withMessage ? spoolFrame(fields[1] as Buffer, fields[3] as string, item.id) : spoolFrame(undefined, fields[1] as string, item.id);
}

const MAX_BACKOFF_MS = 5000;
const SPOOL_EXTENSION = '.spool';
const SPOOL_ERROR_LOG_INTERVAL_MS = 10_000;

/** The facts of a record the indexer failed on (counted then): it is stored, not indexed. */
const NO_FACTS = Symbol('no index facts');

const INDEX_COMMAND = 'dockflowIndex';
type ScriptCommand = (numKeys: number, ...keysAndArgs: Array<string | Buffer>) => unknown;

/**
 * A batch is one transaction: MULTI, this script (when there are index writes), an XADD per entry, an XTRIM per stream
 * written (once per batch rather than a MAXLEN on every XADD: the same approximate cap for fewer arguments), EXEC.
 * Plain XADDs cost Redis about half of what the same XADDs cost from inside a script (2.9 against 5.3–6.3 µs per
 * record, measured here).
 *
 * The index writes must apply only if every XADD of the batch succeeds: a refused entry is resent later under a new ID,
 * and counting it twice would be wrong. Inside a transaction nothing runs in between, so the script, run first, can tell
 * in advance: an XADD with an explicit ID fails only on a key of another type or an ID not above the stream's
 * last-generated-id (out of memory refuses the whole EXEC). When some XADD would fail the script writes nothing and
 * answers 'skipped', and the writer indexes the stored entries in a call of their own. Since the transaction is atomic,
 * an entry found in Redis after a lost connection has its index writes too. The index writes run under pcall: a
 * failing one must not look like a failed batch (the writer would resend stored entries).
 *
 * KEYS: the streams, then the indexer's keys. ARGV[1]: the number of streams; ARGV[2]: `<stream number>:<first ID>`
 * of each stream the batch writes, joined by ','; ARGV[3]: the IndexOps blob.
 * Reply: 'ok', 'skipped', or 'index failed: <error>'.
 */
const GUARDED_INDEX_SCRIPT = `${LUA_APPLY_INDEX}
local function idBelow(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
for spec in string.gmatch(ARGV[2], '[^,]+') do
  local n, first = string.match(spec, '^(%d+):(.+)$')
  local key = KEYS[tonumber(n)]
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'none' then
    if kind ~= 'stream' then return 'skipped' end
    local info = redis.call('XINFO', 'STREAM', key)
    local last
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] break end
    end
    if not last or not idBelow(last, first) then return 'skipped' end
  end
end
local ok, err = pcall(applyIndex, ARGV[3], tonumber(ARGV[1]))
if not ok then return 'index failed: ' .. tostring(type(err) == 'table' and err.err or err) end
return 'ok'
`;
const GUARDED_INDEX_SHA = createHash('sha1').update(GUARDED_INDEX_SCRIPT).digest('hex');
/** Sent on every (re)connection of the batch connection, so that EVALSHA finds the script. */
const SCRIPT_LOAD = new RespWriter(GUARDED_INDEX_SCRIPT.length + 64).command(3).arg('SCRIPT').arg('LOAD').arg(GUARDED_INDEX_SCRIPT).bytes();

/** Lua's 1-based stream numbers, as strings, made once. */
const STREAM_INDEX_ARG = Array.from({ length: 16 }, (_, i) => String(i + 1));
/** Field names as RESP bytes, written as they are into every XADD. */
const MESSAGE_ARG = encodeArgs(MESSAGE_FIELD);
const CONTEXT_ARG = encodeArgs(CONTEXT_FIELD);
const RECORD_ARG = encodeArgs(RECORD_FIELD);
/** Items' fields are staged in chunks of this size, each freed once no item written into it is left. */
const STAGING_CHUNK_BYTES = 1024 * 1024;
/** Room past the chunk size for the record that crosses it (a larger one grows the chunk). */
const stagingChunk = (): RespWriter => new RespWriter(STAGING_CHUNK_BYTES + 64 * 1024);
const CONFLICT_RE = /equal or smaller than the target stream top item/i;

/**
 * Writes records into one Redis stream per direction, in pipelined batches, with a bounded memory queue, an on-disk
 * spool for UDP overflow and for what is left at close, and retries that never lose nor reorder what Redis did not
 * take.
 *
 * Stream IDs are assigned here (`<ms>-<seq>`, strictly increasing per stream, seeded from the stream's
 * last-generated-id on every (re)connection, the clock taken as max(now, last) so it never goes backwards), so that
 * the indexer can reference entries in the same transaction, and so that after a lost connection the writer can ask Redis
 * which of the unanswered entries it holds (`XRANGE id id`) instead of guessing: those are counted stored, the
 * others are resent, in order, under new IDs. Nothing new is sent until that is settled, so order within a stream is
 * kept across outages. (A definite error reply such as OOM can still reorder: the failed records are resent after
 * batches already in flight.)
 */
export class StreamWriter {
  private readonly redis: Redis;
  /** The batches' own connection (see resp.ts); everything else goes through `redis`. */
  private readonly resp: RespConnection;
  private readonly logger: Logger;
  private readonly indexer: StreamIndexer | undefined;
  private readonly now: () => number;
  private readonly streams: readonly string[];
  private readonly streamCountArg: string;
  private readonly streamOf: Map<string, number>;
  private readonly xaddHeads: readonly XaddHeads[];
  private readonly spool: SegmentQueue;
  private readonly spoolDir: string;
  private readonly spoolErrors: RateLimitedLog<unknown>;

  private readonly maxQueue: number;
  private readonly batchMax: number;
  private readonly flushIntervalMs: number;
  private readonly maxInFlight: number;
  private readonly maxLen: string | undefined;
  private readonly retentionMs: number;
  private readonly trimIntervalMs: number;

  private readonly queue = new Fifo<Item>();
  private staging = stagingChunk();
  private readonly inFlight = new Map<number, Batch>();
  private failed: Batch[] = [];
  private batchSeq = 0;
  private uncertainCount = 0;
  /** Last ID per stream: [ms, seq]. */
  private readonly lastIds: Array<[number, number]>;
  private seeded = false;
  private redisUp = false;
  private maintenance = false;
  private backoffMs = 0;
  private retryAt = 0;

  private flushTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private trimTimer: NodeJS.Timeout | undefined;
  private kickPending = false;
  private flushDue = false;
  private wantDrain = false;
  private readonly drainListeners: Array<() => void> = [];

  private started = false;
  private closing: Promise<void> | undefined;
  private closed = false;
  private idleWaiter: (() => void) | undefined;

  private readonly counts = {
    pushed: { tcp: 0, udp: 0, file: 0 } as Record<Origin, number>,
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
    this.seeded = false;
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
      { logger: deps.logger, onReady: () => this.pump(), setup: () => ({ payload: SCRIPT_LOAD, replies: 1 }), replyTimeoutMs: opts.replyTimeoutMs },
    );
    this.logger = deps.logger;
    this.indexer = deps.indexer;
    this.now = deps.now ?? Date.now;
    const keys = storeKeys(opts.keyPrefix, opts.singleStream);
    this.streams = keys.streams;
    this.streamCountArg = String(this.streams.length);
    this.streamOf = new Map(DIRECTIONS.map((d) => [d, this.streams.indexOf(keys.stream(d))]));
    const head = (argc: number, stream: string): Buffer => Buffer.from(new RespWriter(64).command(argc).arg('XADD').arg(stream).bytes());
    this.xaddHeads = this.streams.map((stream) => ({ message: head(7, stream), whole: head(5, stream) }));
    this.lastIds = this.streams.map(() => [0, 0]);
    this.maxQueue = opts.maxQueueRecords ?? DEFAULTS.store.maxQueueRecords;
    this.batchMax = opts.batchMaxRecords ?? DEFAULTS.store.batchMaxRecords;
    this.flushIntervalMs = opts.flushIntervalMs ?? DEFAULTS.store.flushIntervalMs;
    this.maxInFlight = opts.maxBatchesInFlight ?? 4;
    const maxLen = opts.maxLenPerStream ?? DEFAULTS.store.maxLenPerStream;
    this.maxLen = maxLen > 0 ? String(maxLen) : undefined;
    this.retentionMs = opts.retentionMs ?? DEFAULTS.store.retentionMs;
    this.trimIntervalMs = opts.trimIntervalMs ?? 60_000;
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
    if (this.retentionMs > 0) this.trimTimer = setInterval(() => void this.trim(), this.trimIntervalMs).unref();
    if (this.redis.status === 'ready') this.onReady();
    else this.logger.warn({ status: this.redis.status }, 'Redis not ready yet; records wait in the queue and the spool');
  }

  /**
   * Takes the record (always, unless closed). `false` asks the caller to pause until `onDrain`: the queue is full.
   * UDP records are not queued beyond the bound: with the queue full, or while older UDP records are in the spool,
   * they go to the spool (and the caller is asked to pause); with the spool full they are dropped and counted.
   * `message`, the syslog message the record was parsed from, is stored with it (see encode.ts).
   */
  push(record: FlowRecord, origin: Origin, message?: string, raw?: Buffer): boolean {
    this.counts.pushed[origin]++;
    if (this.closed) {
      this.counts.dropped.closed++;
      return false;
    }
    if (origin === 'udp' && (this.queue.length >= this.maxQueue || this.spool.hasUnread())) {
      const form = storedForm(record, message);
      if (this.spool.append(spoolFrame(form.message === undefined ? undefined : messageBytes(form.message, raw), form.encoded))) {
        this.counts.spooled++;
        // Taken; and the UDP receiver, which can hold datagrams unparsed in its own backlog, is asked to pause.
        this.wantDrain = true;
        return false;
      }
      this.counts.dropped['spool-full']++;
      return false;
    }
    this.queue.push(this.itemOf(record, message, raw));
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

  private itemOf(record: FlowRecord, message: string | undefined, raw: Buffer | undefined): Item {
    const direction = record.network.direction;
    const stream = this.streamOf.get(direction) ?? this.streams.length - 1;
    const facts = this.factsOf(record);
    const form = storedForm(record, message);
    let staging = this.staging;
    if (staging.length >= STAGING_CHUNK_BYTES) staging = this.staging = stagingChunk();
    const start = staging.length;
    if (form.message !== undefined) staging.raw(MESSAGE_ARG).arg(raw ?? form.message).raw(CONTEXT_ARG).arg(form.encoded);
    else staging.raw(RECORD_ARG).arg(form.encoded);
    return { direction, stream, withMessage: form.message !== undefined, staged: staging.buffer, start, end: staging.length, facts };
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

  private dispatch(items: Item[]): void {
    let bytes = 0;
    /** The streams this batch writes, each with its first ID. */
    const firstIds = new Map<number, string>();
    for (const item of items) {
      const id = this.nextId(item.stream);
      item.id = id;
      if (!firstIds.has(item.stream)) firstIds.set(item.stream, id);
      bytes += item.end - item.start + 64;
    }
    const ops = this.buildIndex(items);
    const w = new RespWriter(bytes + (ops === undefined ? 0 : ops.keys.length * 64) + 256);
    w.command(1).arg('MULTI');
    let queued = items.length;
    if (ops !== undefined) {
      const keys = [...this.streams, ...ops.keys];
      w.command(6 + keys.length).arg('EVALSHA').arg(GUARDED_INDEX_SHA).arg(String(keys.length));
      for (const key of keys) w.arg(key);
      const written = [...firstIds].map(([stream, id]) => `${STREAM_INDEX_ARG[stream]}:${id}`);
      w.arg(this.streamCountArg).arg(written.join(',')).arg(ops.encode());
      queued++;
    }
    for (const item of items) {
      const xadd = this.xaddHeads[item.stream] as XaddHeads;
      w.raw(item.withMessage ? xadd.message : xadd.whole)
        .arg(item.id as string)
        .raw(item.staged, item.start, item.end);
    }
    if (this.maxLen !== undefined) {
      for (const stream of firstIds.keys()) {
        w.command(5).arg('XTRIM').arg(this.streams[stream] as string).arg('MAXLEN').arg('~').arg(this.maxLen);
        queued++;
      }
    }
    w.command(1).arg('EXEC');
    const batch: Batch = { seq: this.batchSeq++, items };
    this.inFlight.set(batch.seq, batch);
    const endTimer = this.writeSeconds.startTimer();
    // Replies: MULTI's OK, one per queued command, then EXEC's array of their results (or its error).
    this.resp.send(w.bytes(), queued + 2).then(
      (replies) => this.settle(batch, replies[replies.length - 1], ops !== undefined, endTimer),
      (err: unknown) => this.settle(batch, err instanceof Error ? err : new Error(String(err)), ops !== undefined, endTimer),
    );
  }

  private buildIndex(items: readonly Item[]): IndexOps | undefined {
    if (this.indexer === undefined) return undefined;
    const entries: IndexEntry[] = [];
    for (const item of items) if (item.facts !== NO_FACTS) entries.push({ facts: item.facts, stream: this.streams[item.stream] as string, id: item.id as string });
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
    const ops = this.buildIndex(items);
    if (ops === undefined) return;
    const pipeline = this.redis.pipeline();
    (pipeline as unknown as Record<string, ScriptCommand>)[INDEX_COMMAND]!.call(pipeline, ops.keys.length, ...ops.keys, ops.encode());
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
        if (CONFLICT_RE.test(err.message)) this.seeded = false;
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
    if (answer instanceof Error && /NOSCRIPT/.test(answer.message)) void this.resp.send(SCRIPT_LOAD, 1).catch(() => undefined);
    const notStoredSet = new Set(notStored);
    const stored = items.filter((item) => !notStoredSet.has(item));
    if (stored.length > 0) this.indexApart(stored);
  }

  private stored(item: Item): void {
    this.counts.stored[item.direction]++;
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
    for (const item of items) if (item.uncertain) this.uncertainCount++;
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

  private async seed(): Promise<void> {
    const pipeline = this.redis.pipeline();
    for (const stream of this.streams) pipeline.xinfo('STREAM', stream);
    const results = (await pipeline.exec()) ?? [];
    this.streams.forEach((stream, i) => {
      const [err, info] = results[i] ?? [new Error('no reply'), undefined];
      if (err) {
        if (/no such key/i.test(err.message)) return;
        throw err;
      }
      const last = parseId(lastGeneratedId(info));
      if (!last) throw new Error(`XINFO STREAM ${stream}: no last-generated-id`);
      const mine = this.lastIds[i] as [number, number];
      if (compareIds(last, mine) > 0) this.lastIds[i] = last;
    });
    if (!this.closed) this.seeded = true;
  }

  /** Asks Redis, for each record sent without an answer, whether it holds it. */
  private async resolveUncertain(): Promise<void> {
    const pending = this.queue.filter((item) => item.uncertain === true);
    const pipeline = this.redis.pipeline();
    for (const item of pending) pipeline.xrange(this.streams[item.stream] as string, item.id as string, item.id as string);
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
      const spooled = spooledRecord(frame);
      if (spooled === undefined) {
        bad++;
        continue;
      }
      const item: Item = { ...this.itemOf(spooled.record, spooled.message, spooled.raw), ticket };
      if (spooled.id !== undefined) {
        item.id = spooled.id;
        item.uncertain = true;
        this.uncertainCount++;
      }
      ticket.pending++;
      this.queue.push(item);
    }
    this.counts.replayed += ticket.pending;
    this.counts.dropped['spool-torn'] += bad;
    if (ticket.pending === 0) this.spool.release(read.segment);
    this.logger.info({ records: ticket.pending, unreadable: bad, spoolBytes: this.spool.bytes }, 'replaying spooled records');
  }

  private nextId(stream: number): string {
    const last = this.lastIds[stream] as [number, number];
    const now = this.now();
    // The clock may step back (NTP) or the stream may hold later IDs: stay on the last millisecond then.
    if (now > last[0]) {
      last[0] = now;
      last[1] = 0;
    } else last[1]++;
    return `${last[0]}-${last[1]}`;
  }

  private async trim(): Promise<void> {
    if (!this.redisUp || this.closing) return;
    const minTimeMs = this.now() - this.retentionMs;
    const pipeline = this.redis.pipeline();
    for (const stream of this.streams) pipeline.xtrim(stream, 'MINID', '~', `${minTimeMs}-0`);
    this.indexer?.trim?.(pipeline, minTimeMs);
    try {
      const results = (await pipeline.exec()) ?? [];
      const err = results.find(([e]) => e)?.[0];
      if (err) this.logger.warn({ err }, 'retention trim failed in part');
    } catch (err) {
      this.logger.warn({ err }, 'retention trim failed');
    }
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
    const lines = left.map(stagedSpoolFrame);
    try {
      this.spool.writeHead(lines);
      this.counts.spooled += lines.length;
      if (lines.length > 0) this.logger.warn({ records: lines.length }, 'Redis did not take everything before the deadline; the rest is in the spool');
    } catch (err) {
      this.counts.dropped['spool-write-failed'] += lines.length;
      throw err;
    } finally {
      this.spool.close();
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
