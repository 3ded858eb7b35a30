import type { ListenAddress } from './listen.js';
import type { ChosenUdpReader, UdpReader } from './udp-batch.js';

/**
 * What the ingest thread and the UDP receive thread (udp-thread.ts) exchange. A chunk is a run of datagrams, each
 * `[u32 LE length][u8 address length][address, latin1][f64 LE received-at ms][datagram]`, its memory transferred,
 * not copied. Chunks are acknowledged once the ingest thread has handed their datagrams on and gone round its event
 * loop; the receive thread sends at most `maxChunksInFlight` unacknowledged.
 */
export interface UdpThreadData {
  listen: readonly ListenAddress[];
  reader: UdpReader;
  receiveBufferBytes: number;
  maxChunksInFlight: number;
  backlogMemoryBytes: number;
  backlogDir: string | undefined;
  backlogDiskBytes: number;
  /** A SharedArrayBuffer of Float64 counters, indexed by BACKLOG_STATS. */
  stats: SharedArrayBuffer;
}

export const BACKLOG_STATS = {
  /** Bytes waiting in the backlog (memory and disk). */
  bytes: 0,
  /** Datagrams dropped because the backlog was full. */
  droppedDatagrams: 1,
  /** Bytes a previous run left on disk, found at start. */
  replayedBytes: 2,
  /** Datagrams dropped because the backlog's disk refused their chunk (ENOSPC, EIO). */
  writeFailedDatagrams: 3,
  /** Chunks read back from disk torn (a crash mid-write): their datagrams, at least one each, are lost. */
  tornChunks: 4,
} as const;
export const BACKLOG_STATS_LENGTH = 5;

export type FromUdpThread =
  | {
      type: 'listening';
      sockets: Array<{ address: string; family: string; port: number; receiveBufferBytes: number; bufferError: string | undefined }>;
      /** Which reader reads the sockets, and why not the batched one when `auto` fell back. */
      reader: ChosenUdpReader;
      batchError: string | undefined;
      /** Why the thread runs at normal priority, when it asked for more and was refused. */
      priorityError: string | undefined;
    }
  | { type: 'listen-failed'; index: number; message: string }
  | { type: 'socket-error'; message: string }
  /** Rate-limited: `count` failures of this kind since the last report. */
  | { type: 'backlog-error'; what: string; message: string; count: number }
  | { type: 'chunk'; buffer: ArrayBuffer; length: number }
  | { type: 'closed'; leftBytes: number };

/** An acknowledgement gives the chunks' memory back (transferred), for the receive thread to fill again. */
export type ToUdpThread = { type: 'ack'; buffers: ArrayBuffer[] } | { type: 'close' };

/** Bytes before the address: length (4) and address length (1); after it: received-at (8). */
const FIXED_HEADER_BYTES = 13;

/**
 * Writes one datagram at `at`, which must leave room for it and its header; returns where the next one goes. The
 * address (an IP address as Node prints it: ASCII) is copied a character at a time and the datagram with `set`: both
 * half the time of a native `write`/`copy` call at ~300 bytes, and this runs once per datagram on the receive thread.
 */
export function writeDatagram(chunk: Buffer, at: number, datagram: Buffer, from: string, receivedAtMs: number): number {
  const addressLength = from.length;
  for (let i = 0; i < addressLength; i++) chunk[at + 5 + i] = from.charCodeAt(i);
  chunk.writeUInt32LE(datagram.length, at);
  chunk[at + 4] = addressLength;
  chunk.writeDoubleLE(receivedAtMs, at + 5 + addressLength);
  const start = at + FIXED_HEADER_BYTES + addressLength;
  chunk.set(datagram, start);
  return start + datagram.length;
}

/**
 * Calls `each` for every datagram of a chunk: the datagram is `chunk[start, end)`. A run of datagrams from one
 * sender (the usual case: one relay) shares one address string, made once.
 */
export function forEachDatagram(chunk: Buffer, each: (start: number, end: number, from: string, receivedAtMs: number) => void): void {
  let from = '';
  let fromAt = -1;
  let fromLength = 0;
  for (let at = 0; at + FIXED_HEADER_BYTES <= chunk.length; ) {
    const length = chunk.readUInt32LE(at);
    const addressLength = chunk[at + 4] as number;
    let same = fromAt >= 0 && addressLength === fromLength;
    for (let i = 0; same && i < addressLength; i++) same = chunk[at + 5 + i] === chunk[fromAt + i];
    if (!same) from = chunk.toString('latin1', at + 5, at + 5 + addressLength);
    fromAt = at + 5;
    fromLength = addressLength;
    const receivedAtMs = chunk.readDoubleLE(at + 5 + addressLength);
    const start = at + FIXED_HEADER_BYTES + addressLength;
    // Chunks are written whole by this code; a length past the end is a bug, never read beyond the chunk.
    if (start + length > chunk.length) return;
    each(start, start + length, from, receivedAtMs);
    at = start + length;
  }
}
