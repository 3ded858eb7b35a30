import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DockflowError, ErrorCode } from '../errors.js';

/**
 * An append-only on-disk FIFO of NDJSON lines, in segment files `<16-digit seq>.ndjson` under `dir`, read back oldest
 * first, one whole segment at a time.
 *
 * Durability (fsync policy): appends are buffered in memory and written to the active segment when the buffer
 * reaches `flushBytes` or every `flushIntervalMs`; the file is fsynced every `fsyncIntervalMs`, when a segment is
 * sealed and at `close()`. So a crash of the process loses at most the unwritten buffer (≤ `flushIntervalMs` of
 * lines), a power loss at most `fsyncIntervalMs`. A write syscall per line would cost more than the UDP path can
 * afford while Redis is down. A line cut by a crash is detected at read time and counted (`torn`), never fatal.
 */
export interface SpoolOptions {
  dir: string;
  /** Appends are refused (the caller drops and counts) beyond this many bytes on disk plus in the buffer. */
  maxBytes: number;
  /** A new segment is started past this size; replay reads and deletes whole segments. Default 1 MiB. */
  segmentBytes?: number;
  /** Default 64 KiB. */
  flushBytes?: number;
  /** Default 100 ms. */
  flushIntervalMs?: number;
  /** Default 1000 ms. */
  fsyncIntervalMs?: number;
}

export interface SpoolSegment {
  readonly seq: number;
  readonly path: string;
  readonly bytes: number;
}

export interface SpoolRead {
  segment: SpoolSegment;
  /** The parsed lines, in order. */
  entries: unknown[];
  /** Lines that were not JSON: a last line cut by a crash, or corruption. */
  torn: number;
}

const SEGMENT_RE = /^(\d{16})\.ndjson$/;
/** First sequence number of an empty spool: leaves room below for segments written ahead of it at close. */
const FIRST_SEQ = 1_000_000_000_000;

interface ActiveSegment {
  seq: number;
  path: string;
  fd: number;
  bytes: number;
  dirty: boolean;
}

export class Spool {
  private readonly dir: string;
  private readonly maxBytes: number;
  private readonly segmentBytes: number;
  private readonly flushBytes: number;
  private readonly flushIntervalMs: number;
  private readonly fsyncIntervalMs: number;
  private readonly logger: Logger;
  private readonly onLost: (lines: number) => void;

  /** Sealed segments not yet handed out by `readNext`, oldest first. */
  private unread: SpoolSegment[] = [];
  /** Segments handed out and not yet released, by seq. */
  private readonly reading = new Map<number, SpoolSegment>();
  private active: ActiveSegment | undefined;
  private nextSeq = FIRST_SEQ;
  private buffer: string[] = [];
  private bufferBytes = 0;
  private diskBytes = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private fsyncTimer: NodeJS.Timeout | undefined;
  private opened = false;

  constructor(opts: SpoolOptions, deps: { logger: Logger; onLost?: (lines: number) => void }) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes;
    this.segmentBytes = opts.segmentBytes ?? 1024 * 1024;
    this.flushBytes = opts.flushBytes ?? 64 * 1024;
    this.flushIntervalMs = opts.flushIntervalMs ?? 100;
    this.fsyncIntervalMs = opts.fsyncIntervalMs ?? 1000;
    this.logger = deps.logger;
    this.onLost = deps.onLost ?? (() => {});
  }

  /** Finds the segments a previous run left (removing half-written `.tmp` files from an interrupted close). */
  open(): void {
    try {
      mkdirSync(this.dir, { recursive: true });
      const segments: SpoolSegment[] = [];
      for (const name of readdirSync(this.dir)) {
        const path = join(this.dir, name);
        if (name.endsWith('.tmp')) {
          unlinkSync(path);
          continue;
        }
        const m = SEGMENT_RE.exec(name);
        if (m) segments.push({ seq: Number(m[1]), path, bytes: statSync(path).size });
      }
      segments.sort((a, b) => a.seq - b.seq);
      this.unread = segments;
      this.diskBytes = segments.reduce((sum, s) => sum + s.bytes, 0);
      const last = segments[segments.length - 1];
      this.nextSeq = last ? last.seq + 1 : FIRST_SEQ;
    } catch (err) {
      throw new DockflowError(ErrorCode.SPOOL_FAILED, `cannot open the spool directory ${this.dir}: ${(err as Error).message}`, { cause: err });
    }
    this.opened = true;
    this.fsyncTimer = setInterval(() => this.syncActive(), this.fsyncIntervalMs).unref();
    if (this.unread.length > 0) this.logger.info({ dir: this.dir, segments: this.unread.length, bytes: this.diskBytes }, 'spool holds records from a previous run');
  }

  /** Bytes on disk plus buffered. */
  get bytes(): number {
    return this.diskBytes + this.bufferBytes;
  }

  /** Whether anything is waiting to be read (sealed segments, the active one, or the buffer). */
  hasUnread(): boolean {
    return this.unread.length > 0 || this.bufferBytes > 0 || (this.active !== undefined && this.active.bytes > 0);
  }

  /** Queues one line (without its newline). `false` when the spool is full: the line is not taken. */
  append(line: string): boolean {
    const size = Buffer.byteLength(line) + 1;
    if (!this.opened || this.bytes + size > this.maxBytes) return false;
    this.buffer.push(line);
    this.bufferBytes += size;
    if (this.bufferBytes >= this.flushBytes) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), this.flushIntervalMs).unref();
    return true;
  }

  /** Writes the buffer to the active segment, starting a new segment when the active one is full. */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.buffer.length === 0) return;
    const lines = this.buffer;
    const size = this.bufferBytes;
    this.buffer = [];
    this.bufferBytes = 0;
    try {
      if (this.active && this.active.bytes + size > this.segmentBytes && this.active.bytes > 0) this.seal();
      const active = (this.active ??= this.createSegment(this.nextSeq++));
      writeSync(active.fd, lines.join('\n') + '\n');
      active.bytes += size;
      active.dirty = true;
      this.diskBytes += size;
    } catch (err) {
      // The disk refused (ENOSPC, EIO): these lines are lost. Counted by the owner, and the spool keeps going.
      this.logger.error({ err, dir: this.dir, lines: lines.length }, 'spool write failed; records lost');
      this.onLost(lines.length);
    }
  }

  /**
   * Hands out the oldest unread segment, parsed. The segment stays on disk (and counted in `bytes`) until
   * `release`, so records are not lost if they never reach Redis.
   */
  readNext(): SpoolRead | undefined {
    if (this.unread.length === 0) {
      this.flush();
      if (!this.active || this.active.bytes === 0) return undefined;
      this.seal();
    }
    const segment = this.unread.shift();
    if (!segment) return undefined;
    this.reading.set(segment.seq, segment);
    let text: string;
    try {
      text = readFileSync(segment.path, 'utf8');
    } catch (err) {
      this.logger.error({ err, path: segment.path }, 'spool segment unreadable; skipped');
      return { segment, entries: [], torn: 0 };
    }
    const entries: unknown[] = [];
    let torn = 0;
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      if (line.length === 0) continue;
      try {
        entries.push(JSON.parse(line));
      } catch {
        torn++;
      }
    }
    if (torn > 0) this.logger.warn({ path: segment.path, torn }, 'spool segment had unreadable lines (cut by a crash?); counted and skipped');
    return { segment, entries, torn };
  }

  /** Deletes a segment once everything read from it is safely elsewhere (in Redis). */
  release(segment: SpoolSegment): void {
    if (!this.reading.delete(segment.seq)) return;
    this.unlink(segment);
  }

  /**
   * Writes `lines` as a segment read back before every unread one (they are older), replacing the segments handed
   * out by `readNext` and not released (the caller's unfinished records from them are among `lines`). Used at close
   * for what could not reach Redis. A crash between the write and the deletions replays some lines twice; none is
   * lost.
   */
  writeHead(lines: readonly string[]): void {
    const replacing = [...this.reading.values()];
    if (lines.length > 0) {
      this.flush();
      const firstUnread = this.unread[0]?.seq ?? (this.active && this.active.bytes > 0 ? this.active.seq : undefined);
      const seq = firstUnread !== undefined ? firstUnread - 1 : this.nextSeq++;
      const path = join(this.dir, segmentName(seq));
      const text = lines.join('\n') + '\n';
      try {
        const fd = openSync(path + '.tmp', 'w');
        try {
          writeSync(fd, text);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        // Atomic: when `seq` is the newest segment being read, the rename replaces it in one step.
        renameSync(path + '.tmp', path);
        this.syncDir();
      } catch (err) {
        throw new DockflowError(ErrorCode.SPOOL_FAILED, `cannot write ${lines.length} records to the spool ${path}: ${(err as Error).message}`, { cause: err });
      }
      const bytes = Buffer.byteLength(text);
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

  /** Flushes and fsyncs; the spool takes no more appends. */
  close(): void {
    if (!this.opened) return;
    this.flush();
    this.syncActive();
    if (this.active) closeSync(this.active.fd);
    this.active = undefined;
    if (this.fsyncTimer) clearInterval(this.fsyncTimer);
    this.opened = false;
  }

  private createSegment(seq: number): ActiveSegment {
    const path = join(this.dir, segmentName(seq));
    const fd = openSync(path, 'a');
    this.syncDir();
    return { seq, path, fd, bytes: 0, dirty: false };
  }

  private seal(): void {
    const active = this.active;
    if (!active) return;
    this.active = undefined;
    this.syncActive(active);
    closeSync(active.fd);
    this.unread.push({ seq: active.seq, path: active.path, bytes: active.bytes });
  }

  private syncActive(active = this.active): void {
    if (!active?.dirty) return;
    try {
      fsyncSync(active.fd);
      active.dirty = false;
    } catch (err) {
      this.logger.warn({ err, path: active.path }, 'spool fsync failed');
    }
  }

  private syncDir(): void {
    const fd = openSync(this.dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  private unlink(segment: SpoolSegment): void {
    try {
      unlinkSync(segment.path);
    } catch (err) {
      this.logger.warn({ err, path: segment.path }, 'cannot delete a replayed spool segment');
    }
    this.diskBytes -= segment.bytes;
  }
}

function segmentName(seq: number): string {
  return `${String(seq).padStart(16, '0')}.ndjson`;
}
