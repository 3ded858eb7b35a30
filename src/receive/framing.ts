/** Why the decoder threw bytes away. `bad-octet-count` also means the stream is lost and the connection must close. */
export type FrameDropReason = 'oversize' | 'bad-octet-count';

export interface FrameListener {
  /**
   * One complete message without its terminator or trailing LF/CRLF, as text, and its exact bytes when the text is
   * not (see `exactBytes`). Called on the hot path.
   */
  frame(message: string, raw: Buffer | undefined): void;
  drop(reason: FrameDropReason): void;
}

export type Framing = 'undetected' | 'octet-counting' | 'lf';

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const ZERO = 0x30;
const NINE = 0x39;

/**
 * RFC 6587 puts no bound on MSG-LEN. Eight digits (just under 100 MB) is far beyond any syslog message, so a longer
 * count means the peer is not speaking octet counting and skipping "to the end" of the frame would be meaningless.
 */
const MAX_OCTET_COUNT_DIGITS = 8;

// Octet-counting states (plain numbers: const enums do not survive per-file transpilation).
const READ_LENGTH = 0;
const READ_BODY = 1;
const SKIP_BODY = 2;

/**
 * End of the message content in `buf[start, end)`: a trailing LF, then a CR, are not part of the message. rsyslog
 * puts the RFC 5424 line's LF inside the octet count and inside UDP datagrams; CRLF senders leave the CR in LF framing.
 */
export function contentEnd(buf: Buffer, start: number, end: number): number {
  if (end > start && buf[end - 1] === LF) end--;
  if (end > start && buf[end - 1] === CR) end--;
  return end;
}

/**
 * The bytes `buf[start, end)` when `text` (their UTF-8 decoding) does not give them back: invalid UTF-8, which the
 * decoder turned into U+FFFD. A copy, since the caller's memory is reused. Undefined otherwise: the text is exact.
 * Messages are stored as their bytes arrived; this keeps the common case (valid UTF-8, mostly ASCII, for which V8's
 * search for a character outside Latin-1 returns at once) free of any copy.
 */
export function exactBytes(text: string, buf: Buffer, start: number, end: number): Buffer | undefined {
  return text.indexOf('\uFFFD') === -1 ? undefined : Buffer.from(buf.subarray(start, end));
}

/**
 * Splits one TCP connection's byte stream into syslog messages. The framing is chosen from the connection's first
 * byte (a digit means RFC 6587 octet counting, anything else LF/CRLF-terminated lines), as rsyslog and syslog-ng
 * senders never mix them on one connection. Every other byte, NUL included, is message content: a message is kept
 * as its bytes arrived and never split inside.
 *
 * Chunks are kept by reference while a frame spans them (no copy per chunk); one `Buffer.concat` happens only when
 * a frame completes across chunks, so frames may be split anywhere, including inside a UTF-8 character. At most
 * `maxMessageBytes` (plus a CRLF) are ever held: a longer frame is skipped to its end and reported once.
 * Callers must not reuse a chunk's memory after pushing it (net sockets allocate a fresh Buffer per read).
 */
export class FrameDecoder {
  private mode: Framing = 'undetected';
  private failed = false;
  /** Pieces of a frame that spans chunks, and their total size. */
  private parts: Buffer[] = [];
  private partBytes = 0;
  /** LF framing: skipping the rest of an oversize line. */
  private discarding = false;
  private state = READ_LENGTH;
  private octetCount = 0;
  private digits = 0;
  /** Octet counting: bytes of the current frame still to read (READ_BODY) or to skip (SKIP_BODY). */
  private remaining = 0;

  /**
   * `framing` fixes the framing instead of choosing it from the first byte: for captures whose format was told
   * from more than one byte (`dockflow parse`, where a kern.log line may start with a digit).
   */
  constructor(
    private readonly maxMessageBytes: number,
    private readonly listener: FrameListener,
    framing: Framing = 'undetected',
  ) {
    this.mode = framing;
  }

  get framing(): Framing {
    return this.mode;
  }

  /** True when bytes of a frame not yet complete (and not already counted as oversize) are held. */
  get hasPartial(): boolean {
    if (this.failed) return false;
    if (this.mode === 'octet-counting') return this.state === READ_BODY || this.digits > 0;
    return this.partBytes > 0;
  }

  /** Feeds one chunk. Returns false once the stream cannot be resynchronised (bad octet count): close the connection. */
  push(chunk: Buffer): boolean {
    if (this.failed) return false;
    if (chunk.length === 0) return true;
    if (this.mode === 'undetected') {
      const first = chunk[0]!;
      this.mode = first >= ZERO && first <= NINE ? 'octet-counting' : 'lf';
    }
    return this.mode === 'lf' ? this.pushLf(chunk) : this.pushOctet(chunk);
  }

  /**
   * The peer closed cleanly: an unterminated last line is still a message. Returns false when an incomplete
   * octet-counted frame had to be dropped (the caller counts it as a partial frame).
   */
  end(): boolean {
    if (this.mode === 'lf') {
      if (this.discarding) this.discarding = false;
      else if (this.partBytes > 0) this.completeLine(Buffer.alloc(0), 0, 0);
      return true;
    }
    const lost = this.hasPartial;
    this.parts = [];
    this.partBytes = 0;
    this.state = READ_LENGTH;
    this.digits = 0;
    return !lost;
  }

  private pushLf(chunk: Buffer): boolean {
    const n = chunk.length;
    let pos = 0;
    while (pos < n) {
      const lf = chunk.indexOf(LF, pos);
      if (lf === -1) {
        this.holdLine(chunk, pos);
        return true;
      }
      this.completeLine(chunk, pos, lf);
      pos = lf + 1;
    }
    return true;
  }

  private holdLine(chunk: Buffer, start: number): void {
    if (this.discarding) return;
    const len = chunk.length - start;
    // +1: the line may still turn out to end in a CR that is not content.
    if (this.partBytes + len > this.maxMessageBytes + 1) {
      this.parts = [];
      this.partBytes = 0;
      this.discarding = true;
      this.listener.drop('oversize');
      return;
    }
    this.parts.push(start === 0 ? chunk : chunk.subarray(start));
    this.partBytes += len;
  }

  private completeLine(chunk: Buffer, start: number, end: number): void {
    if (this.discarding) {
      this.discarding = false;
      return;
    }
    if (this.partBytes === 0) {
      this.deliver(chunk, start, end);
      return;
    }
    const whole = this.joinParts(chunk.subarray(start, end));
    this.deliver(whole, 0, whole.length);
  }

  private pushOctet(chunk: Buffer): boolean {
    const n = chunk.length;
    let pos = 0;
    while (pos < n) {
      if (this.state === READ_LENGTH) {
        const c = chunk[pos]!;
        pos++;
        if (c >= ZERO && c <= NINE && (c !== ZERO || this.digits > 0) && this.digits < MAX_OCTET_COUNT_DIGITS) {
          this.octetCount = this.octetCount * 10 + (c - ZERO);
          this.digits++;
        } else if (c === SP && this.digits > 0) {
          this.startBody();
        } else {
          this.failed = true;
          this.parts = [];
          this.partBytes = 0;
          this.listener.drop('bad-octet-count');
          return false;
        }
      } else if (this.state === READ_BODY) {
        const avail = n - pos;
        if (avail < this.remaining) {
          this.parts.push(pos === 0 ? chunk : chunk.subarray(pos));
          this.partBytes += avail;
          this.remaining -= avail;
          return true;
        }
        const end = pos + this.remaining;
        if (this.partBytes === 0) {
          this.deliver(chunk, pos, end);
        } else {
          const whole = this.joinParts(chunk.subarray(pos, end));
          this.deliver(whole, 0, whole.length);
        }
        pos = end;
        this.state = READ_LENGTH;
      } else {
        const take = Math.min(this.remaining, n - pos);
        pos += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = READ_LENGTH;
      }
    }
    return true;
  }

  private startBody(): void {
    this.remaining = this.octetCount;
    this.octetCount = 0;
    this.digits = 0;
    // +2: a trailing CRLF inside the count is not content. Longer frames are skipped without being buffered.
    if (this.remaining > this.maxMessageBytes + 2) {
      this.state = SKIP_BODY;
      this.listener.drop('oversize');
    } else {
      this.state = READ_BODY;
    }
  }

  private joinParts(tail: Buffer): Buffer {
    this.parts.push(tail);
    const whole = Buffer.concat(this.parts, this.partBytes + tail.length);
    this.parts = [];
    this.partBytes = 0;
    return whole;
  }

  /** Empty lines are framing noise (blank keep-alives), not messages. */
  private deliver(buf: Buffer, start: number, end: number): void {
    end = contentEnd(buf, start, end);
    if (end === start) return;
    if (end - start > this.maxMessageBytes) {
      this.listener.drop('oversize');
      return;
    }
    const text = buf.toString('utf8', start, end);
    this.listener.frame(text, exactBytes(text, buf, start, end));
  }
}
