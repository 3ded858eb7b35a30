import dgram from 'node:dgram';
import { once } from 'node:events';
import { readlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
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
 * rate datagrams arrive left this thread's malloc arena mostly free space (glibc's malloc_stats: 77 MB held, 6 MB in
 * use, after two minutes of a backlog on disk). Only chunk buffers are CHUNK_BYTES long: a chunk copied to its size
 * is shorter.
 */
const spare: Buffer[] = [];
/** Enough for a segment read back from disk, the chunks the ingest thread may hold, and the one being filled. */
const MAX_SPARES = Math.ceil(DEFAULT_SEGMENT_BYTES / SEAL_AT) + data.maxChunksInFlight + 1;
const newChunk = (): Buffer => spare.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);

function recycle(memory: Buffer | ArrayBuffer): void {
  const whole = memory instanceof ArrayBuffer ? memory : memory.buffer;
  if (whole.byteLength === CHUNK_BYTES && spare.length < MAX_SPARES) spare.push(Buffer.from(whole));
}

const backlog = new ChunkBacklog({
  memoryMaxBytes: data.backlogMemoryBytes,
  dir: data.backlogDir,
  diskMaxBytes: data.backlogDiskBytes,
  allocate: (bytes) => (bytes <= CHUNK_BYTES ? newChunk() : Buffer.allocUnsafeSlow(bytes)),
  release: recycle,
});
stats[BACKLOG_STATS.replayedBytes] = backlog.onDisk;

let chunk = newChunk();
let used = 0;
let datagrams = 0;
let flushTimer: NodeJS.Timeout | undefined;
let inFlight = 0;
let closing = false;
const sockets: dgram.Socket[] = [];

/*
 * Reads in batches. Woken for every datagram or two, as it is while it keeps up, this thread cost ~14 µs per
 * datagram at 100,000/s on two busy cores, mostly context switches, and at its raised priority it preempted the
 * sender after nearly every datagram. So once a pass of the event loop finds the sockets dry, it sleeps
 * READ_PAUSE_MS and then reads what gathered meanwhile (~100 datagrams at 100,000/s, where the kernel buffer holds
 * thousands). libuv reads at most READS_PER_PASS datagrams from a socket per pass, so fewer means they ran dry. An
 * idle thread stops pacing and blocks in the kernel until the next datagram.
 */
const READ_PAUSE_MS = 1;
const READS_PER_PASS = 32;
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
let readSinceCheck = 0;
let pacing = false;

function pace(): void {
  if (readSinceCheck === 0 || closing) {
    pacing = false;
    return;
  }
  if (readSinceCheck < READS_PER_PASS) Atomics.wait(sleepCell, 0, 0, READ_PAUSE_MS);
  readSinceCheck = 0;
  setImmediate(pace);
}

function receive(msg: Buffer, from: string, receivedAtMs: number): void {
  used = writeDatagram(chunk, used, msg, from, receivedAtMs);
  datagrams++;
  if (used >= SEAL_AT) seal();
  else flushTimer ??= setTimeout(seal, FLUSH_MS);
  readSinceCheck++;
  if (!pacing) {
    pacing = true;
    setImmediate(pace);
  }
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
  else if (!keep(sealed)) stats[BACKLOG_STATS.droppedDatagrams] = (stats[BACKLOG_STATS.droppedDatagrams] ?? 0) + n;
  stats[BACKLOG_STATS.bytes] = backlog.bytes;
}

/** Into the backlog; false when it is full or its disk fails (the thread must keep reading either way). */
function keep(sealed: Buffer): boolean {
  try {
    return backlog.push(sealed);
  } catch (err) {
    port.postMessage({ type: 'backlog-error', message: err instanceof Error ? err.message : String(err) } satisfies FromUdpThread);
    return false;
  }
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

async function listen(): Promise<void> {
  const bound: Extract<FromUdpThread, { type: 'listening' }>['sockets'] = [];
  try {
    for (const at of data.listen) {
      const socket = dgram.createSocket({ type: isIP(at.host) === 6 ? 'udp6' : 'udp4' });
      sockets.push(socket);
      socket.on('message', (msg, rinfo) => receive(msg, rinfo.address, Date.now()));
      socket.bind({ address: at.host, port: at.port });
      await once(socket, 'listening');
      let bufferError: string | undefined;
      try {
        socket.setRecvBufferSize(data.receiveBufferBytes);
      } catch (err) {
        bufferError = err instanceof Error ? err.message : String(err);
      }
      const a = socket.address();
      bound.push({ address: a.address, family: a.family, port: a.port, receiveBufferBytes: socket.getRecvBufferSize(), bufferError });
      socket.on('error', (err) => port.postMessage({ type: 'socket-error', message: err.message } satisfies FromUdpThread));
    }
  } catch (err) {
    for (const s of sockets) s.close();
    port.postMessage({ type: 'listen-failed', index: bound.length, message: err instanceof Error ? err.message : String(err) } satisfies FromUdpThread);
    return;
  }
  port.postMessage({ type: 'listening', sockets: bound, priorityError: raisePriority() } satisfies FromUdpThread);
  pump();
}

async function close(): Promise<void> {
  if (closing) return;
  closing = true;
  await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  seal();
  // What the ingest thread has not been given stays on disk for the next start; with no disk (or a failing one) it is
  // given all of it now (the chunks arrive before the 'closed' answer).
  let persisted = false;
  if (data.backlogDir !== undefined) {
    try {
      backlog.persist();
      persisted = true;
    } catch (err) {
      port.postMessage({ type: 'backlog-error', message: err instanceof Error ? err.message : String(err) } satisfies FromUdpThread);
    }
  }
  if (!persisted) for (let c = backlog.shift(); c !== undefined; c = backlog.shift()) send(c);
  stats[BACKLOG_STATS.bytes] = backlog.bytes;
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
