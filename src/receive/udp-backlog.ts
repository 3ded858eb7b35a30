import { SegmentQueue, type SegmentQueueDeps } from '../disk/segment-queue.js';

/**
 * The UDP receive thread's FIFO of datagram chunks waiting for the ingest thread: in memory up to `memoryMaxBytes`,
 * then on disk (a SegmentQueue of `.udp` segments, one frame per chunk) up to `diskMaxBytes`, then refused (the caller
 * counts the datagrams as dropped). Order is kept: once anything is on disk, new chunks go behind it. What is left at
 * close is written to disk ahead of the rest and read back first at the next start.
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
  /** Called with a chunk once it is written to disk, or lost: its memory is free again. */
  release?: (chunk: Buffer) => void;
  /** A disk failure that lost nothing by itself (fsync, unlink), and why a write failed. */
  onError?: (what: string, err: unknown) => void;
  /** A segment read back ended in a torn chunk (a crash mid-write): its datagrams are lost. */
  onTorn?: (bytes: number) => void;
  /** The write system call (tests). */
  writev?: SegmentQueueDeps['writev'];
}

/** Where `push` put the chunk: kept (memory or disk), or not, and why. */
export type BacklogPush = 'kept' | 'full' | 'write-failed';

export const DEFAULT_SEGMENT_BYTES = 1024 * 1024;

export class ChunkBacklog {
  private readonly memory: Buffer[] = [];
  private memoryBytes = 0;
  private readonly disk: SegmentQueue | undefined;
  /** Set by the queue's `onLost` during an append. */
  private writeFailed = false;
  private readonly foundOnDisk: number;

  constructor(private readonly opts: ChunkBacklogOptions) {
    if (opts.dir === undefined) {
      this.foundOnDisk = 0;
      return;
    }
    this.disk = new SegmentQueue(
      {
        dir: opts.dir,
        extension: '.udp',
        maxBytes: opts.diskMaxBytes,
        segmentBytes: opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES,
        // Chunks are ~64 KiB: each is written as it comes, and its memory given back at once.
        flushBytes: 0,
        flushIntervalMs: 1000,
        fsyncIntervalMs: 0,
      },
      {
        onLost: (_reason, _frames, err) => {
          this.writeFailed = true;
          opts.onError?.('write', err);
        },
        onError: opts.onError,
        allocate: opts.allocate ?? ((bytes) => Buffer.allocUnsafeSlow(bytes)),
        writev: opts.writev,
      },
    );
    this.disk.open();
    this.foundOnDisk = this.disk.onDisk;
  }

  /** Bytes held in memory and on disk (frame headers included). */
  get bytes(): number {
    return this.memoryBytes + (this.disk?.bytes ?? 0);
  }

  get empty(): boolean {
    return this.memory.length === 0 && !(this.disk?.hasUnread() ?? false);
  }

  /** Bytes found on disk at start-up (left by a previous run). */
  get onDisk(): number {
    return this.foundOnDisk;
  }

  /** Keeps the chunk in memory or on disk, or says why not. */
  push(chunk: Buffer): BacklogPush {
    const disk = this.disk;
    if ((disk === undefined || !disk.hasUnread()) && this.memoryBytes + chunk.length <= this.opts.memoryMaxBytes) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.length;
      return 'kept';
    }
    if (disk === undefined || !disk.append(chunk)) return 'full';
    this.opts.release?.(chunk);
    if (!this.writeFailed) return 'kept';
    this.writeFailed = false;
    return 'write-failed';
  }

  /** The oldest chunk, or undefined. */
  shift(): Buffer | undefined {
    if (this.memory.length === 0 && this.disk?.hasUnread()) this.load();
    const chunk = this.memory.shift();
    if (chunk !== undefined) this.memoryBytes -= chunk.length;
    return chunk;
  }

  /** Writes what memory holds to disk, ahead of the segments already there, and closes the segment being written. */
  persist(): void {
    const disk = this.disk;
    if (disk === undefined) return;
    disk.flush();
    if (this.memory.length > 0) {
      disk.writeHead(this.memory);
      this.memory.length = 0;
      this.memoryBytes = 0;
    }
    disk.close();
  }

  /** Moves the oldest segment into memory (each chunk in memory from `allocate`) and deletes it. */
  private load(): void {
    const disk = this.disk as SegmentQueue;
    const read = disk.readNext();
    if (read === undefined) return;
    for (const chunk of read.frames) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.length;
    }
    if (read.tornBytes > 0) this.opts.onTorn?.(read.tornBytes);
    disk.release(read.segment);
  }
}
