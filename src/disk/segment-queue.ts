import { closeSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writevSync } from 'node:fs';
import { join } from 'node:path';
import { DockflowError, ErrorCode } from '../errors.js';

/**
 * An append-only on-disk FIFO of binary frames, in segment files `<16-digit seq><extension>` under `dir`, each a run
 * of `[u32 LE length][payload]`, read back oldest first, one whole segment at a time. The one disk queue of dockflow:
 * the store's spool for Redis outages and the UDP receive thread's backlog both use it.
 *
 * A segment never goes out of frame: every write is checked and repeated until complete, and a write that fails
 * (ENOSPC, EIO) or makes no progress is rolled back by truncating the segment to the end of its last whole frame; the
 * frames not written are handed to `onLost` with the reason, for the owner to count. A crash mid-write leaves at most
 * a torn last frame, which the reader skips and counts (`torn`).
 *
 * Durability: appends wait in memory until `flushBytes` (0: written at once, synchronously) or `flushIntervalMs`; the
 * segment is fsynced every `fsyncIntervalMs`, when sealed and at `close()`.
 */
export interface SegmentQueueOptions {
  dir: string;
  /** File name ending of the segments, e.g. `.spool`. */
  extension: string;
  /** Appends are refused beyond this many bytes (frames with their headers) on disk plus waiting in memory. */
  maxBytes: number;
  /** A new segment is started past this size; readers take and release whole segments. */
  segmentBytes: number;
  /** 0: each append is written before `append` returns. */
  flushBytes: number;
  flushIntervalMs: number;
  /** 0: never fsync (the UDP backlog: a crash loses its memory part anyway, and an fsync would stall its thread). */
  fsyncIntervalMs: number;
}

export type SegmentLossReason = 'write-failed';

export interface SegmentQueueDeps {
  /** Frames taken by `append` that could not be written: counted by the owner. Called synchronously from the write. */
  onLost(reason: SegmentLossReason, frames: readonly Buffer[], err: unknown): void;
  /** A failure that lost nothing by itself (fsync, unlink): the owner logs it, rate-limited. */
  onError?(what: string, err: unknown): void;
  /** The write system call (tests inject short writes and ENOSPC). */
  writev?: (fd: number, buffers: readonly NodeJS.ArrayBufferView[], position: number) => number;
  /** Memory for a frame read back (default: a view of the segment read whole). */
  allocate?: (bytes: number) => Buffer;
}

export interface Segment {
  readonly seq: number;
  readonly path: string;
  readonly bytes: number;
}

export interface SegmentRead {
  segment: Segment;
  /** The frames' payloads, in order. */
  frames: Buffer[];
  /** Bytes at the end that are not a whole frame (a crash mid-write); 0 normally. */
  tornBytes: number;
}

export const FRAME_HEADER_BYTES = 4;
/** First sequence number of an empty queue: leaves room below for segments written ahead of it (`writeHead`). */
const FIRST_SEQ = 1_000_000_000_000;

interface ActiveSegment {
  seq: number;
  path: string;
  fd: number;
  /** Bytes of whole frames written: where the next write goes. */
  bytes: number;
  dirty: boolean;
}

/** Writes every byte of `buffers` at `position`, repeating short writes. Returns bytes written; throws on failure. */
function writeFully(
  writev: NonNullable<SegmentQueueDeps['writev']>,
  fd: number,
  buffers: Buffer[],
  position: number,
): void {
  let rest = buffers;
  let at = position;
  while (rest.length > 0) {
    const n = writev(fd, rest, at);
    if (n <= 0) throw Object.assign(new Error(`write made no progress at offset ${at}`), { code: 'EIO', written: at - position });
    at += n;
    let skip = n;
    let i = 0;
    while (i < rest.length && skip >= rest[i]!.length) skip -= rest[i++]!.length;
    rest = rest.slice(i);
    if (skip > 0) rest[0] = rest[0]!.subarray(skip);
  }
}

const defaultWritev = (fd: number, buffers: readonly NodeJS.ArrayBufferView[], position: number): number => writevSync(fd, buffers, position);

export class SegmentQueue {
  private readonly segmentRe: RegExp;
  private readonly writev: NonNullable<SegmentQueueDeps['writev']>;
  /** Sealed segments not yet handed out by `readNext`, oldest first. */
  private unread: Segment[] = [];
  /** Segments handed out and not yet released, by seq. */
  private readonly reading = new Map<number, Segment>();
  private active: ActiveSegment | undefined;
  private nextSeq = FIRST_SEQ;
  /** Frames waiting to be written: headers and payloads, and the payloads alone (for `onLost`). */
  private pending: Buffer[] = [];
  private pendingFrames: Buffer[] = [];
  private pendingBytes = 0;
  private diskBytes = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private fsyncTimer: NodeJS.Timeout | undefined;
  private opened = false;

  constructor(
    private readonly opts: SegmentQueueOptions,
    private readonly deps: SegmentQueueDeps,
  ) {
    this.segmentRe = new RegExp(`^(\\d{16})${opts.extension.replace(/[.]/g, '\\.')}$`);
    this.writev = deps.writev ?? defaultWritev;
  }

  /** Finds the segments a previous run left (removing `.tmp` files from an interrupted `writeHead`). */
  open(): void {
    if (this.opened) return;
    try {
      mkdirSync(this.opts.dir, { recursive: true });
      const segments: Segment[] = [];
      for (const name of readdirSync(this.opts.dir)) {
        const path = join(this.opts.dir, name);
        if (name.endsWith(`${this.opts.extension}.tmp`)) {
          unlinkSync(path);
          continue;
        }
        const m = this.segmentRe.exec(name);
        if (m) segments.push({ seq: Number(m[1]), path, bytes: statSync(path).size });
      }
      segments.sort((a, b) => a.seq - b.seq);
      this.unread = segments;
      this.diskBytes = segments.reduce((sum, s) => sum + s.bytes, 0);
      const last = segments[segments.length - 1];
      this.nextSeq = last ? last.seq + 1 : FIRST_SEQ;
    } catch (err) {
      throw new DockflowError(ErrorCode.SPOOL_FAILED, `cannot open the queue directory ${this.opts.dir}: ${(err as Error).message}`, { cause: err });
    }
    this.opened = true;
    if (this.opts.fsyncIntervalMs > 0) this.fsyncTimer = setInterval(() => this.syncActive(), this.opts.fsyncIntervalMs).unref();
  }

  /** Bytes on disk plus waiting in memory, frame headers included. */
  get bytes(): number {
    return this.diskBytes + this.pendingBytes;
  }

  /** Bytes found on disk at `open` or since: what a reader can still take. */
  get onDisk(): number {
    return this.diskBytes;
  }

  /** Whether anything is waiting to be read (sealed segments, the active one, or frames not yet written). */
  hasUnread(): boolean {
    return this.unread.length > 0 || this.pendingBytes > 0 || (this.active !== undefined && this.active.bytes > 0);
  }

  /**
   * Takes one frame (the queue keeps a reference until it is written: the caller must not reuse its memory before
   * then, or at all with `flushBytes` > 0). `false` when the queue is full or closed: not taken, the caller counts it.
   */
  append(payload: Buffer): boolean {
    const size = payload.length + FRAME_HEADER_BYTES;
    if (!this.opened || this.bytes + size > this.opts.maxBytes) return false;
    const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
    header.writeUInt32LE(payload.length, 0);
    this.pending.push(header, payload);
    this.pendingFrames.push(payload);
    this.pendingBytes += size;
    if (this.pendingBytes >= this.opts.flushBytes) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), this.opts.flushIntervalMs).unref();
    return true;
  }

  /** Writes the waiting frames to the active segment, starting a new segment when the active one is full. */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pendingBytes === 0) return;
    const buffers = this.pending;
    const frames = this.pendingFrames;
    const size = this.pendingBytes;
    this.pending = [];
    this.pendingFrames = [];
    this.pendingBytes = 0;
    let active: ActiveSegment;
    try {
      if (this.active && this.active.bytes > 0 && this.active.bytes + size > this.opts.segmentBytes) this.seal();
      active = this.active ??= this.createSegment(this.nextSeq++);
    } catch (err) {
      this.deps.onLost('write-failed', frames, err);
      return;
    }
    try {
      writeFully(this.writev, active.fd, buffers, active.bytes);
    } catch (err) {
      this.rollBack(active, frames, err);
      return;
    }
    active.bytes += size;
    active.dirty = true;
    this.diskBytes += size;
  }

  /**
   * A write failed part-way: whole frames it wrote are kept, the segment is truncated after the last of them, and the
   * rest is lost. If even the truncation fails the segment is sealed at its last whole frame and never written again,
   * so the bytes past it are a torn tail the reader skips.
   */
  private rollBack(active: ActiveSegment, frames: readonly Buffer[], err: unknown): void {
    let size = active.bytes;
    try {
      size = statSync(active.path).size;
    } catch {
      // Unknown: keep nothing of this write.
    }
    let end = active.bytes;
    let kept = 0;
    for (const f of frames) {
      if (end + FRAME_HEADER_BYTES + f.length > size) break;
      end += FRAME_HEADER_BYTES + f.length;
      kept++;
    }
    let truncated = true;
    try {
      ftruncateSync(active.fd, end);
    } catch (truncateErr) {
      truncated = false;
      this.deps.onError?.('truncate', truncateErr);
    }
    this.diskBytes += end - active.bytes;
    active.bytes = end;
    active.dirty = true;
    if (!truncated) this.seal();
    this.deps.onLost('write-failed', frames.slice(kept), err);
  }

  /**
   * Hands out the oldest segment, its frames read back. The segment stays on disk (and counted in `bytes`) until
   * `release`, so its frames are not lost if the caller cannot finish with them. Undefined when nothing is left.
   */
  readNext(): SegmentRead | undefined {
    if (this.unread.length === 0) {
      this.flush();
      if (!this.active || this.active.bytes === 0) return undefined;
      this.seal();
    }
    const segment = this.unread.shift();
    if (!segment) return undefined;
    this.reading.set(segment.seq, segment);
    try {
      return { segment, ...this.readFrames(segment) };
    } catch (err) {
      this.deps.onError?.('read', err);
      return { segment, frames: [], tornBytes: segment.bytes };
    }
  }

  private readFrames(segment: Segment): { frames: Buffer[]; tornBytes: number } {
    const frames: Buffer[] = [];
    const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
    const allocate = this.deps.allocate;
    if (allocate === undefined) {
      const whole = readFileSync(segment.path).subarray(0, segment.bytes);
      let at = 0;
      while (at + FRAME_HEADER_BYTES <= whole.length) {
        const length = whole.readUInt32LE(at);
        if (at + FRAME_HEADER_BYTES + length > whole.length) break;
        frames.push(whole.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length));
        at += FRAME_HEADER_BYTES + length;
      }
      return { frames, tornBytes: whole.length - at };
    }
    // Frame by frame into memory of the caller's, rather than the whole file into one buffer.
    const fd = openSync(segment.path, 'r');
    try {
      const size = segment.bytes;
      let at = 0;
      while (at + FRAME_HEADER_BYTES <= size) {
        readSync(fd, header, 0, FRAME_HEADER_BYTES, at);
        const length = header.readUInt32LE(0);
        if (at + FRAME_HEADER_BYTES + length > size) break;
        const memory = allocate(length);
        readSync(fd, memory, 0, length, at + FRAME_HEADER_BYTES);
        frames.push(memory.subarray(0, length));
        at += FRAME_HEADER_BYTES + length;
      }
      return { frames, tornBytes: size - at };
    } finally {
      closeSync(fd);
    }
  }

  /** Deletes a segment once everything read from it is safely elsewhere. */
  release(segment: Segment): void {
    if (!this.reading.delete(segment.seq)) return;
    this.unlink(segment);
  }

  /**
   * Writes `payloads` as a segment read back before every unread one (they are older), replacing the segments handed
   * out by `readNext` and not released (the caller's unfinished frames from them are among `payloads`). Used at close
   * for what the owner still holds in memory. All or nothing (a temporary file renamed): throws when it cannot be
   * written, everything left as it was. A crash between the write and the deletions replays some frames twice.
   */
  writeHead(payloads: readonly Buffer[]): void {
    const replacing = [...this.reading.values()];
    if (payloads.length > 0) {
      this.flush();
      const firstUnread = this.unread[0]?.seq ?? (this.active && this.active.bytes > 0 ? this.active.seq : undefined);
      const seq = firstUnread !== undefined ? firstUnread - 1 : this.nextSeq++;
      const path = join(this.opts.dir, this.segmentName(seq));
      const buffers: Buffer[] = [];
      let bytes = 0;
      for (const p of payloads) {
        const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
        header.writeUInt32LE(p.length, 0);
        buffers.push(header, p);
        bytes += FRAME_HEADER_BYTES + p.length;
      }
      try {
        const fd = openSync(path + '.tmp', 'w');
        try {
          writeFully(this.writev, fd, buffers, 0);
          if (this.opts.fsyncIntervalMs > 0) fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        // Atomic: when `seq` is the newest segment being read, the rename replaces it in one step.
        renameSync(path + '.tmp', path);
        this.syncDir();
      } catch (err) {
        try {
          unlinkSync(path + '.tmp');
        } catch {
          // Not there, or the next open removes it.
        }
        throw new DockflowError(ErrorCode.SPOOL_FAILED, `cannot write ${payloads.length} frames to ${path}: ${(err as Error).message}`, { cause: err });
      }
      const replaced = this.reading.get(seq);
      if (replaced) {
        this.reading.delete(seq);
        this.diskBytes -= replaced.bytes;
      }
      this.diskBytes += bytes;
      this.unread.unshift({ seq, path, bytes });
    }
    for (const s of replacing) this.release(s);
  }

  /** Writes what waits, seals and fsyncs; the queue takes no more appends. */
  close(): void {
    if (!this.opened) return;
    this.flush();
    this.seal();
    if (this.fsyncTimer) clearInterval(this.fsyncTimer);
    this.opened = false;
  }

  private segmentName(seq: number): string {
    return `${String(seq).padStart(16, '0')}${this.opts.extension}`;
  }

  private createSegment(seq: number): ActiveSegment {
    const path = join(this.opts.dir, this.segmentName(seq));
    const fd = openSync(path, 'w');
    this.syncDir();
    return { seq, path, fd, bytes: 0, dirty: false };
  }

  private seal(): void {
    const active = this.active;
    if (!active) return;
    this.active = undefined;
    this.syncActive(active);
    try {
      closeSync(active.fd);
    } catch (err) {
      this.deps.onError?.('close', err);
    }
    if (active.bytes > 0) this.unread.push({ seq: active.seq, path: active.path, bytes: active.bytes });
    else this.unlink({ seq: active.seq, path: active.path, bytes: 0 });
  }

  private syncActive(active = this.active): void {
    if (!active?.dirty || this.opts.fsyncIntervalMs === 0) return;
    try {
      fsyncSync(active.fd);
      active.dirty = false;
    } catch (err) {
      this.deps.onError?.('fsync', err);
    }
  }

  private syncDir(): void {
    if (this.opts.fsyncIntervalMs === 0) return;
    try {
      const fd = openSync(this.opts.dir, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      this.deps.onError?.('fsync', err);
    }
  }

  private unlink(segment: Segment): void {
    try {
      unlinkSync(segment.path);
    } catch (err) {
      this.deps.onError?.('unlink', err);
    }
    this.diskBytes -= segment.bytes;
  }
}
