import dgram from 'node:dgram';
import { once } from 'node:events';
import { readlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { loadUdpBatch, type ChosenUdpReader, type UdpBatch } from './udp-batch.js';
import { RateLimitedLog } from '../rate-limited-log.js';
import { ChunkBacklog, DEFAULT_SEGMENT_BYTES } from './udp-backlog.js';
import { BACKLOG_STATS, writeDatagram, type UdpThreadData, type ToUdpThread, type FromUdpThread } from './udp-wire.js';

/*
 * The UDP receive thread: reads the sockets and nothing else, so that the kernel's buffer is drained while the ingest
 * thread parses and stores. Datagrams are packed into chunks (see udp-wire.ts) handed to the ingest thread a few at a
 * time; when it falls behind, chunks wait in a bounded backlog, in memory then on disk, and only beyond that are
 * datagrams dropped, and counted.
 */

const data = workerData as UdpThreadData;
const port = parentPort!;
const stats = new Float64Array(data.stats);
/** A chunk is sealed once it holds this much, so a chunk costs the ingest thread a few milliseconds at most. */
const SEAL_AT = 64 * 1024;
/** Room for one more datagram of any size (UDP carries at most 65,507 bytes) past SEAL_AT, with its header. */
const CHUNK_BYTES = SEAL_AT + 65_536 + 512;
const FLUSH_MS = 2;

/**
 * Chunk buffers to fill again: given back by the ingest thread with its acknowledgements, or free once their chunk
 * is written to the backlog's disk. Reused rather than allocated, because 130 KB buffers allocated and freed at the
 * rate datagrams arrive leave this thread's malloc arena mostly free space (docs/design.md). Only chunk buffers are
 * CHUNK_BYTES long: a chunk copied to its size is shorter.
 */
const spare: Buffer[] = [];
/** Enough for a segment read back from disk, the chunks the ingest thread may hold, and the one being filled. */
const MAX_SPARES = Math.ceil(DEFAULT_SEGMENT_BYTES / SEAL_AT) + data.maxChunksInFlight + 1;
const newChunk = (): Buffer => spare.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);

function recycle(memory: Buffer | ArrayBuffer): void {
  const whole = memory instanceof ArrayBuffer ? memory : memory.buffer;
  if (whole.byteLength === CHUNK_BYTES && spare.length < MAX_SPARES) spare.push(Buffer.from(whole));
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Disk errors go to the ingest thread's log at most once a second per kind, with how many there were. */
const BACKLOG_ERROR_INTERVAL_MS = 1000;
const backlogErrors = new RateLimitedLog<string>(BACKLOG_ERROR_INTERVAL_MS, (what, count, message) =>
  port.postMessage({ type: 'backlog-error', what, message, count } satisfies FromUdpThread),
);

const backlog = new ChunkBacklog({
  memoryMaxBytes: data.backlogMemoryBytes,
  dir: data.backlogDir,
  diskMaxBytes: data.backlogDiskBytes,
  allocate: (bytes) => (bytes <= CHUNK_BYTES ? newChunk() : Buffer.allocUnsafeSlow(bytes)),
  release: recycle,
  onError: (what, err) => backlogErrors.report(what, errorText(err)),
  onTorn: (bytes) => {
    stats[BACKLOG_STATS.tornChunks] = (stats[BACKLOG_STATS.tornChunks] ?? 0) + 1;
    backlogErrors.report('torn', `a backlog segment ended in ${bytes} bytes that are not a whole chunk (a crash mid-write)`);
  },
});
stats[BACKLOG_STATS.replayedBytes] = backlog.onDisk;

let chunk = newChunk();
let used = 0;
let datagrams = 0;
let flushTimer: NodeJS.Timeout | undefined;
let inFlight = 0;
let closing = false;

/*
 * Reads in batches. Woken for every datagram or two, as it is while it keeps up, this thread spends its time in
 * context switches, and at its raised priority it preempts the sender after nearly every datagram (docs/design.md).
 * So once a pass finds the sockets dry, it sleeps READ_PAUSE_MS and then reads what gathered meanwhile (about a
 * hundred datagrams at 100,000/s, where the kernel buffer holds thousands). An idle thread stops pacing and waits in
 * the kernel for the next datagram.
 */
const READ_PAUSE_MS = 1;
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
const pause = (): void => void Atomics.wait(sleepCell, 0, 0, READ_PAUSE_MS);

type BoundSockets = Extract<FromUdpThread, { type: 'listening' }>['sockets'];

/** Reads the sockets into `chunk`, sealing chunks as they fill. */
interface Reader {
  /** Binds every listen address; throws, with the index of the one that failed, having closed the others. */
  listen(): Promise<BoundSockets>;
  /** Stops reading; every datagram read so far is in a chunk when it resolves. */
  close(): Promise<void>;
}

class ListenError extends Error {
  constructor(
    readonly index: number,
    cause: unknown,
  ) {
    super(errorText(cause));
  }
}

/**
 * node:dgram: a Buffer and an address object per datagram, read by libuv at most READS_PER_PASS per socket per pass
 * of the event loop, so fewer than that in a pass means the sockets ran dry.
 */
class DgramReader implements Reader {
  private static readonly READS_PER_PASS = 32;
  private readonly sockets: dgram.Socket[] = [];
  private readSinceCheck = 0;
  private pacing = false;

  async listen(): Promise<BoundSockets> {
    const bound: BoundSockets = [];
    try {
      for (const at of data.listen) {
        const socket = dgram.createSocket({ type: isIP(at.host) === 6 ? 'udp6' : 'udp4' });
        this.sockets.push(socket);
        socket.on('message', (msg, rinfo) => this.receive(msg, rinfo.address));
        socket.bind({ address: at.host, port: at.port });
        await once(socket, 'listening');
        let bufferError: string | undefined;
        try {
          socket.setRecvBufferSize(data.receiveBufferBytes);
        } catch (err) {
          bufferError = errorText(err);
        }
        const a = socket.address();
        bound.push({ address: a.address, family: a.family, port: a.port, receiveBufferBytes: socket.getRecvBufferSize(), bufferError });
        socket.on('error', (err) => port.postMessage({ type: 'socket-error', message: err.message } satisfies FromUdpThread));
      }
    } catch (err) {
      for (const s of this.sockets) s.close();
      throw new ListenError(bound.length, err);
    }
    return bound;
  }

  private receive(msg: Buffer, from: string): void {
    used = writeDatagram(chunk, used, msg, from, Date.now());
    datagrams++;
    if (used >= SEAL_AT) seal();
    else flushTimer ??= setTimeout(seal, FLUSH_MS);
    this.readSinceCheck++;
    if (!this.pacing) {
      this.pacing = true;
      setImmediate(this.pace);
    }
  }

  private readonly pace = (): void => {
    if (this.readSinceCheck === 0 || closing) {
      this.pacing = false;
      return;
    }
    if (this.readSinceCheck < DgramReader.READS_PER_PASS) pause();
    this.readSinceCheck = 0;
    setImmediate(this.pace);
  };

  async close(): Promise<void> {
    await Promise.all(this.sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/**
 * recvmmsg(2) through the addon (udp-batch.ts): 64 datagrams per system call, written straight into the chunk with
 * the kernel's receive time of each. A third to a half of node:dgram's CPU per datagram at 100,000/s (1.85 against
 * 6.2 s per million for a bare counter; 2.9–3.2 against 6.8–7.3 s for this thread in dockflow). The event loop turns between passes, for acknowledgements and timers; an idle pass waits in poll(2) for
 * at most IDLE_WAIT_MS, or 1 ms while the backlog has chunks to hand on.
 */
class BatchReader implements Reader {
  private static readonly IDLE_WAIT_MS = 50;
  private readonly fds: number[] = [];
  private fdArray = new Int32Array(0);
  private readonly result = new Float64Array(3);
  private waitMs = 0;
  private lastErrorAtMs = 0;

  constructor(private readonly batch: UdpBatch) {}

  async listen(): Promise<BoundSockets> {
    const bound: BoundSockets = [];
    try {
      for (const at of data.listen) {
        const family = isIP(at.host) === 6 ? 6 : 4;
        const [fd, address, boundPort, receiveBufferBytes, bufferError] = this.batch.open(at.host, at.port, family, data.receiveBufferBytes);
        this.fds.push(fd);
        bound.push({ address, family: family === 6 ? 'IPv6' : 'IPv4', port: boundPort, receiveBufferBytes, bufferError });
      }
    } catch (err) {
      for (const fd of this.fds) this.batch.close(fd);
      throw new ListenError(bound.length, err);
    }
    this.fdArray = Int32Array.from(this.fds);
    setImmediate(this.pass);
    return bound;
  }

  private readonly pass = (): void => {
    if (closing) return;
    const result = this.result;
    used = this.batch.receive(this.fdArray, this.waitMs, chunk, used, SEAL_AT, result);
    const read = result[0] as number;
    datagrams += read;
    if (result[2] !== 0) this.readFailed(result[2] as number);
    if (result[1] === 1) {
      seal();
      this.waitMs = 0;
    } else if (read === 0) {
      seal();
      this.waitMs = backlog.empty ? BatchReader.IDLE_WAIT_MS : 1;
    } else {
      flushTimer ??= setTimeout(seal, FLUSH_MS);
      this.waitMs = 0;
      pause();
    }
    setImmediate(this.pass);
  };

  /** A read error (none is expected on a bound UDP socket) is reported at most once a second. */
  private readFailed(errno: number): void {
    const now = Date.now();
    if (now - this.lastErrorAtMs < 1000) return;
    this.lastErrorAtMs = now;
    port.postMessage({ type: 'socket-error', message: `recvmmsg failed: errno ${errno}` } satisfies FromUdpThread);
  }

  async close(): Promise<void> {
    for (const fd of this.fds) this.batch.close(fd);
    // Datagrams read that did not fit the last chunk are still in the addon.
    const none = new Int32Array(0);
    for (;;) {
      used = this.batch.receive(none, 0, chunk, used, SEAL_AT, this.result);
      datagrams += this.result[0] as number;
      if (this.result[1] !== 1) break;
      seal();
    }
  }
}

/** The reader asked for, and why the batched one is not used when it is not. */
function chooseReader(): { reader: Reader; name: ChosenUdpReader; batchError: string | undefined } {
  if (data.reader === 'dgram') return { reader: new DgramReader(), name: 'dgram', batchError: undefined };
  const loaded = loadUdpBatch();
  if ('batch' in loaded) return { reader: new BatchReader(loaded.batch), name: 'batch', batchError: undefined };
  return { reader: new DgramReader(), name: 'dgram', batchError: loaded.error };
}

/** Closes the chunk being filled and sends it on, or queues it. */
function seal(): void {
  if (flushTimer !== undefined) {
    clearTimeout(flushTimer);
    flushTimer = undefined;
  }
  if (used === 0) return;
  const n = datagrams;
  const sendNow = inFlight < data.maxChunksInFlight && backlog.empty;
  let sealed: Buffer;
  if (sendNow || used >= CHUNK_BYTES / 2) {
    sealed = chunk.subarray(0, used);
    chunk = newChunk();
  } else {
    // A partly filled chunk that must wait (the ingest thread is behind) is copied to its size, so that a backlog of
    // them holds no empty space.
    sealed = Buffer.allocUnsafeSlow(used);
    chunk.copy(sealed, 0, 0, used);
  }
  used = 0;
  datagrams = 0;
  if (sendNow) send(sealed);
  else {
    // The thread keeps reading whatever happens to the chunk; what is not kept is counted by why.
    const kept = backlog.push(sealed);
    if (kept === 'full') stats[BACKLOG_STATS.droppedDatagrams] = (stats[BACKLOG_STATS.droppedDatagrams] ?? 0) + n;
    else if (kept === 'write-failed') stats[BACKLOG_STATS.writeFailedDatagrams] = (stats[BACKLOG_STATS.writeFailedDatagrams] ?? 0) + n;
  }
  stats[BACKLOG_STATS.bytes] = backlog.bytes;
}

/**
 * Transfers the chunk's memory to the ingest thread. Every chunk starts at the beginning of memory it alone uses (a
 * chunk buffer, or one of its own size), so the whole buffer goes, with the chunk's length.
 */
function send(c: Buffer): void {
  inFlight++;
  const message: FromUdpThread = { type: 'chunk', buffer: c.buffer as ArrayBuffer, length: c.length };
  port.postMessage(message, [c.buffer as ArrayBuffer]);
}

function pump(): void {
  while (inFlight < data.maxChunksInFlight) {
    const next = backlog.shift();
    if (next === undefined) break;
    send(next);
  }
  stats[BACKLOG_STATS.bytes] = backlog.bytes;
}

/**
 * This thread needs little CPU but needs it at once: a sender at 100,000 datagrams/s fills the kernel buffer in a
 * fraction of a second, and the busy ingest thread and Redis compete for the same cores. It asks Linux for a higher
 * priority (a lower nice value for this thread only), which root or CAP_SYS_NICE may grant. Returns why not, if not.
 */
function raisePriority(): string | undefined {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    setPriority(tid, THREAD_NICE);
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}
const THREAD_NICE = -10;

let reader: Reader | undefined;

async function listen(): Promise<void> {
  const chosen = chooseReader();
  if (data.reader === 'batch' && chosen.batchError !== undefined) {
    port.postMessage({ type: 'listen-failed', index: 0, message: `the batched UDP reader cannot load: ${chosen.batchError}` } satisfies FromUdpThread);
    return;
  }
  let sockets: BoundSockets;
  try {
    sockets = await chosen.reader.listen();
  } catch (err) {
    port.postMessage({ type: 'listen-failed', index: err instanceof ListenError ? err.index : 0, message: errorText(err) } satisfies FromUdpThread);
    return;
  }
  reader = chosen.reader;
  port.postMessage({ type: 'listening', sockets, reader: chosen.name, batchError: chosen.batchError, priorityError: raisePriority() } satisfies FromUdpThread);
  pump();
}

async function close(): Promise<void> {
  if (closing) return;
  closing = true;
  await reader?.close();
  seal();
  // What the ingest thread has not been given stays on disk for the next start; with no disk (or a failing one) it is
  // given all of it now (the chunks arrive before the 'closed' answer).
  let persisted = false;
  if (data.backlogDir !== undefined) {
    try {
      backlog.persist();
      persisted = true;
    } catch (err) {
      backlogErrors.report('persist', errorText(err));
    }
  }
  if (!persisted) for (let c = backlog.shift(); c !== undefined; c = backlog.shift()) send(c);
  stats[BACKLOG_STATS.bytes] = backlog.bytes;
  backlogErrors.flush();
  port.postMessage({ type: 'closed', leftBytes: backlog.bytes } satisfies FromUdpThread);
}

port.on('message', (m: ToUdpThread) => {
  if (m.type === 'ack') {
    inFlight -= m.buffers.length;
    for (const b of m.buffers) recycle(b);
    if (!closing) pump();
  } else if (m.type === 'close') void close();
});

void listen();
