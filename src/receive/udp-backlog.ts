import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The UDP receive thread's FIFO of datagram chunks waiting for the ingest thread: in memory up to `memoryMaxBytes`,
 * then on disk (segment files `<16-digit seq>.udp`, each a run of `[u32 length][chunk]`) up to `diskMaxBytes`, then
 * refused (the caller counts the datagrams as dropped). Order is kept: once anything is on disk, new chunks go behind
 * it. What is left at close is written to disk ahead of the rest and read back first at the next start.
 *
 * Synchronous file I/O on purpose: it runs on the receive thread, whose only other work is reading the socket, and a
 * burst that reaches the disk is one the kernel buffer alone could not have held.
 */
export interface ChunkBacklogOptions {
  memoryMaxBytes: number;
  /** Where chunks beyond memory go; undefined: nowhere (refused once memory is full). */
  dir: string | undefined;
  diskMaxBytes: number;
  /** Size at which the segment being written is closed. */
  segmentBytes?: number;
  /** Memory for a chunk read back from disk, at least `bytes` long (default: a new buffer). */
  allocate?: (bytes: number) => Buffer;
  /** Called with a chunk once it is written to disk: its memory is free again. */
  release?: (chunk: Buffer) => void;
}

export const DEFAULT_SEGMENT_BYTES = 1024 * 1024;

const SEGMENT_RE = /^(\d{16})\.udp$/;
/** Segment numbers start high so that a close can write what it holds in memory ahead of older segments. */
const FIRST_SEQ = 5e14;
const segmentName = (seq: number): string => `${String(seq).padStart(16, '0')}.udp`;

export class ChunkBacklog {
  private readonly memory: Buffer[] = [];
  private memoryBytes = 0;
  /** Closed segments waiting to be read, oldest first; the one being written is `writing`. */
  private readonly segments: Array<{ seq: number; bytes: number }> = [];
  private writing: { seq: number; fd: number; bytes: number } | undefined;
  private nextSeq = FIRST_SEQ;
  private diskBytes = 0;
  private readonly segmentBytes: number;
  /** A chunk's length prefix, written and read one at a time. */
  private readonly header = Buffer.alloc(4);

  constructor(private readonly opts: ChunkBacklogOptions) {
    this.segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    if (opts.dir === undefined) return;
    mkdirSync(opts.dir, { recursive: true });
    const found: Array<{ seq: number; bytes: number }> = [];
    for (const name of readdirSync(opts.dir)) {
      const m = SEGMENT_RE.exec(name);
      if (m) found.push({ seq: Number(m[1]), bytes: statSync(join(opts.dir, name)).size });
    }
    found.sort((a, b) => a.seq - b.seq);
    for (const s of found) {
      this.segments.push(s);
      this.diskBytes += s.bytes;
    }
    if (found.length > 0) this.nextSeq = (found[found.length - 1] as { seq: number }).seq + 1;
  }

  /** Bytes held in memory and on disk. */
  get bytes(): number {
    return this.memoryBytes + this.diskBytes;
  }

  get empty(): boolean {
    return this.memory.length === 0 && this.diskBytes === 0;
  }

  /** Bytes found on disk at start-up (left by a previous run). */
  get onDisk(): number {
    return this.diskBytes;
  }

  /** Takes the chunk, or returns false when memory and disk are full. */
  push(chunk: Buffer): boolean {
    if (this.diskBytes === 0 && this.memoryBytes + chunk.length <= this.opts.memoryMaxBytes) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.length;
      return true;
    }
    if (this.opts.dir === undefined || this.diskBytes + chunk.length + 4 > this.opts.diskMaxBytes) return false;
    this.append(chunk);
    return true;
  }

  /** The oldest chunk, or undefined. */
  shift(): Buffer | undefined {
    if (this.memory.length === 0 && this.diskBytes > 0) this.load();
    const chunk = this.memory.shift();
    if (chunk !== undefined) this.memoryBytes -= chunk.length;
    return chunk;
  }

  /** Writes what memory holds to disk, ahead of the segments already there, and closes the segment being written. */
  persist(): void {
    this.closeWriting();
    if (this.memory.length === 0 || this.opts.dir === undefined) return;
    const first = this.segments[0]?.seq ?? this.nextSeq;
    const seq = first - 1;
    const fd = openSync(join(this.opts.dir, segmentName(seq)), 'w');
    let bytes = 0;
    try {
      for (const chunk of this.memory) bytes += this.writeChunk(fd, chunk);
    } finally {
      closeSync(fd);
    }
    this.segments.unshift({ seq, bytes });
    this.diskBytes += bytes;
    this.memory.length = 0;
    this.memoryBytes = 0;
  }

  private append(chunk: Buffer): void {
    const dir = this.opts.dir as string;
    if (this.writing === undefined) {
      const seq = this.nextSeq++;
      this.writing = { seq, fd: openSync(join(dir, segmentName(seq)), 'w'), bytes: 0 };
    }
    const n = this.writeChunk(this.writing.fd, chunk);
    this.opts.release?.(chunk);
    this.writing.bytes += n;
    this.diskBytes += n;
    if (this.writing.bytes >= this.segmentBytes) this.closeWriting();
  }

  private writeChunk(fd: number, chunk: Buffer): number {
    this.header.writeUInt32LE(chunk.length, 0);
    writeSync(fd, this.header);
    writeSync(fd, chunk);
    return chunk.length + 4;
  }

  private closeWriting(): void {
    if (this.writing === undefined) return;
    closeSync(this.writing.fd);
    this.segments.push({ seq: this.writing.seq, bytes: this.writing.bytes });
    this.writing = undefined;
  }

  /**
   * Moves the oldest segment into memory, each chunk read into memory of its own from `allocate` rather than the
   * whole file into one buffer (the thread's allocations stay chunk-sized and reusable). A torn tail, from a crash
   * mid-write, is skipped.
   */
  private load(): void {
    if (this.segments.length === 0) this.closeWriting();
    const segment = this.segments.shift();
    if (segment === undefined) return;
    const path = join(this.opts.dir as string, segmentName(segment.seq));
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      for (let at = 0; at + 4 <= size; ) {
        readSync(fd, this.header, 0, 4, at);
        const length = this.header.readUInt32LE(0);
        if (at + 4 + length > size) break;
        const memory = this.opts.allocate?.(length) ?? Buffer.allocUnsafeSlow(length);
        readSync(fd, memory, 0, length, at + 4);
        this.memory.push(memory.subarray(0, length));
        this.memoryBytes += length;
        at += 4 + length;
      }
    } finally {
      closeSync(fd);
    }
    unlinkSync(path);
    this.diskBytes -= segment.bytes;
  }
}
