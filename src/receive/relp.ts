import { createHash } from 'node:crypto';
import type net from 'node:net';
import { contentEnd, exactBytes } from './framing.js';
import type { ReceiverContext } from './listen.js';
import type { RelpCounts, TransportCounts } from './metrics.js';
import type { ConnectionFactory, StreamConnection, TcpReceiver } from './tcp.js';
import type { DurableOutcome, MessageMeta } from './types.js';

/**
 * RELP, the Reliable Event Logging Protocol of rsyslog's librelp (imrelp/omrelp). A frame is
 * `TXNR SP COMMAND SP DATALEN [SP DATA] LF`; the client sends commands (`open`, `syslog`, `close`), the server
 * answers each with `TXNR rsp DATALEN SP <code> [SP text][LF data] LF`, in the order the commands came, and may send
 * the `serverclose` hint (TXNR 0) before closing.
 */

export interface RelpFrame {
  txnr: number;
  command: string;
  /** DATA, or undefined when DATALEN is 0 or the data was skipped as oversize. */
  data: Buffer | undefined;
  /** DATALEN was above the cap: the data was skipped, not buffered. */
  oversize: boolean;
}

export interface RelpFrameListener {
  /** Returns false to stop reading after this frame: `push` then returns how far it read. */
  frame(frame: RelpFrame): boolean;
  /** The stream broke the grammar: nothing after can be trusted, the connection must close. */
  malformed(reason: string): void;
}

/** TXNR and DATALEN are at most 9 digits (librelp); a command at most 32 letters. */
const MAX_DIGITS = 9;
const MAX_COMMAND = 32;
const LF = 0x0a;
const SP = 0x20;

const IN_TXNR = 0;
const IN_COMMAND = 1;
const IN_DATALEN = 2;
const IN_DATA = 3;
const SKIP_DATA = 4;
const IN_TRAILER = 5;

/**
 * Splits a RELP byte stream into frames. Holds at most `maxDataBytes` of one frame; a longer DATA is skipped to its
 * end and the frame reported with `oversize`. Pure: bytes in, frames out, no I/O.
 */
export class RelpFrameDecoder {
  private state = IN_TXNR;
  private failed = false;
  private txnr = 0;
  private digits = 0;
  private command = '';
  private dataLen = 0;
  private remaining = 0;
  private parts: Buffer[] = [];
  private partBytes = 0;
  private oversize = false;

  constructor(
    private readonly maxDataBytes: number,
    private readonly listener: RelpFrameListener,
  ) {}

  /** Bytes of an incomplete frame are held (or being skipped). */
  get hasPartial(): boolean {
    return !this.failed && (this.state !== IN_TXNR || this.digits > 0);
  }

  /**
   * Reads frames from `chunk` until its end or until the listener asks to stop; returns the bytes read, or -1 once
   * the stream is malformed (the listener was told): close the connection.
   */
  push(chunk: Buffer): number {
    let pos = 0;
    const n = chunk.length;
    while (pos < n && !this.failed) {
      switch (this.state) {
        case IN_TXNR:
        case IN_DATALEN: {
          const c = chunk[pos++]!;
          if (c >= 0x30 && c <= 0x39) {
            if (this.digits === MAX_DIGITS) return this.fail('number longer than 9 digits');
            if (this.state === IN_TXNR) this.txnr = this.txnr * 10 + (c - 0x30);
            else this.dataLen = this.dataLen * 10 + (c - 0x30);
            this.digits++;
          } else if (this.digits === 0) {
            return this.fail(this.state === IN_TXNR ? 'frame does not start with a transaction number' : 'no data length');
          } else if (this.state === IN_TXNR) {
            if (c !== SP) return this.fail('no space after the transaction number');
            this.state = IN_COMMAND;
            this.digits = 0;
          } else if (this.dataLen === 0) {
            // No data: this octet is the trailer.
            if (c !== LF) return this.fail('no LF after a frame without data');
            if (!this.emit(undefined)) return pos;
          } else {
            if (c !== SP) return this.fail('no space after the data length');
            this.remaining = this.dataLen;
            this.oversize = this.dataLen > this.maxDataBytes;
            this.state = this.oversize ? SKIP_DATA : IN_DATA;
          }
          break;
        }
        case IN_COMMAND: {
          const c = chunk[pos++]!;
          if ((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)) {
            if (this.command.length === MAX_COMMAND) return this.fail('command longer than 32 letters');
            this.command += String.fromCharCode(c);
          } else if (c === SP && this.command.length > 0) {
            this.state = IN_DATALEN;
            this.digits = 0;
          } else return this.fail('bad command');
          break;
        }
        case IN_DATA:
        case SKIP_DATA: {
          const take = Math.min(this.remaining, n - pos);
          if (this.state === IN_DATA) {
            this.parts.push(chunk.subarray(pos, pos + take));
            this.partBytes += take;
          }
          pos += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = IN_TRAILER;
          break;
        }
        case IN_TRAILER: {
          if (chunk[pos++] !== LF) return this.fail('no LF after the data');
          const data = this.oversize ? undefined : this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.partBytes);
          if (!this.emit(data)) return pos;
          break;
        }
      }
    }
    return this.failed ? -1 : pos;
  }

  private emit(data: Buffer | undefined): boolean {
    const frame: RelpFrame = { txnr: this.txnr, command: this.command, data, oversize: this.oversize };
    this.state = IN_TXNR;
    this.txnr = 0;
    this.digits = 0;
    this.command = '';
    this.dataLen = 0;
    this.parts = [];
    this.partBytes = 0;
    this.oversize = false;
    return this.listener.frame(frame);
  }

  private fail(reason: string): -1 {
    this.failed = true;
    this.parts = [];
    this.listener.malformed(reason);
    return -1;
  }
}

/** Offers of an `open` command: `name[=value,value]` per line. */
export function parseOffers(data: Buffer | undefined): Map<string, string[]> {
  const offers = new Map<string, string[]>();
  if (data === undefined) return offers;
  for (const line of data.toString('latin1').split('\n')) {
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq === -1) offers.set(line, []);
    else offers.set(line.slice(0, eq), line.slice(eq + 1) === '' ? [] : line.slice(eq + 1).split(','));
  }
  return offers;
}

/** The answer frame to `txnr`. */
export function rspFrame(txnr: number, text: string): string {
  return `${txnr} rsp ${Buffer.byteLength(text)} ${text}\n`;
}

export const SERVERCLOSE = '0 serverclose 0\n';

/** The highest TXNR; the next after it is 1. */
const MAX_TXNR = 999_999_999;

/**
 * Hashes of RELP messages recently stored (or read back from the streams' tails at start): a message arriving with
 * one of them is counted as a duplicate. Insertion-ordered, the oldest forgotten beyond `capacity`.
 */
export class RecentHashes {
  private readonly set = new Set<string>();

  constructor(private readonly capacity: number) {}

  has(hash: string): boolean {
    return this.set.has(hash);
  }

  add(hash: string): void {
    if (this.set.has(hash)) return;
    this.set.add(hash);
    if (this.set.size > this.capacity) this.set.delete(this.set.values().next().value as string);
  }

  get size(): number {
    return this.set.size;
  }
}

/** The identity of a RELP message: SHA-256 (first 128 bits, hex) of the sender address, a NUL, and the DATA bytes. */
export function relpHash(remoteAddress: string, data: Buffer): string {
  return createHash('sha256').update(remoteAddress).update('\0').update(data).digest('hex').slice(0, 32);
}

export interface RelpOptions {
  /** `syslog` frames read and not yet answered per connection; at this many the connection stops reading. */
  windowFrames: number;
  /** The set of recent message hashes duplicates are looked up in. */
  recent: RecentHashes;
}

/** Answers waiting to be written, in the order their commands came. */
interface Pending {
  txnr: number;
  /** The answer, once known. */
  answer: string | undefined;
  /** Count it as acknowledged (200 to a syslog frame) or refused (500) when written. */
  syslog: boolean;
  hash: string | undefined;
  /** Close the connection after writing this answer (`close`). */
  closeAfter: boolean;
}

const OK = '200 OK';
/** Bytes of answers Node may buffer for a peer that does not read them before the connection stops reading. */
const MAX_UNSENT_BYTES = 256 * 1024;

class RelpConnection implements StreamConnection {
  private readonly decoder: RelpFrameDecoder;
  private readonly counts: TransportCounts;
  private readonly relp: RelpCounts;
  private state: 'new' | 'open' | 'closing' | 'closed' = 'new';
  private lastTxnr = 0;
  private readonly pending: Pending[] = [];
  private head = 0;
  private unanswered = 0;
  private windowFull = false;
  private writeBlocked = false;
  private settled: (() => void) | undefined;

  constructor(
    readonly socket: net.Socket,
    private readonly receiver: TcpReceiver,
    private readonly ctx: ReceiverContext,
    private readonly remoteAddress: string,
    private readonly opts: RelpOptions,
  ) {
    this.counts = ctx.metrics.relp;
    this.relp = ctx.metrics.relpCounts;
    // Answers are small and the sender waits for them (its window): no Nagle delay against its delayed ACKs.
    socket.setNoDelay(true);
    this.decoder = new RelpFrameDecoder(ctx.maxMessageBytes, {
      frame: (f) => {
        this.framesRead++;
        this.onFrame(f);
        return !this.windowFull;
      },
      malformed: (reason) => this.protocolError(reason),
    });
    socket.on('drain', () => {
      if (!this.writeBlocked) return;
      this.writeBlocked = false;
      this.receiver.resumeSocket(this);
    });
  }

  get reading(): boolean {
    return !this.windowFull && !this.writeBlocked && this.state !== 'closing';
  }

  /** When the frame being read was started (0: none started); the receiver closes the connection when it is overdue. */
  pendingSinceMs = 0;

  data(chunk: Buffer): void {
    this.counts.bytes += chunk.length;
    const now = Date.now();
    const frames = this.framesRead;
    this.decode(chunk);
    // The frame deadline applies to a started frame: restarted by every completed frame, off between frames, and
    // off while the window is full (the frames held unread are ours to read, not the peer's to finish).
    if (this.framesRead !== frames || this.held !== undefined) this.pendingSinceMs = this.decoder.hasPartial && this.held === undefined ? now : 0;
    else if (this.pendingSinceMs === 0 && this.decoder.hasPartial) this.pendingSinceMs = now;
  }

  /** Frames read whole from the stream. */
  private framesRead = 0;

  /** Frames past a full window wait here, unread, until answers free the window. */
  private held: Buffer | undefined;

  private decode(chunk: Buffer): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    const read = this.decoder.push(chunk);
    if (read >= 0 && read < chunk.length) this.held = chunk.subarray(read);
  }

  /** A frame cut by the end of the connection is lost (the sender resends it: it was not answered); counted once. */
  private cutCounted = false;

  end(): void {
    this.countCut();
  }

  private countCut(): void {
    if (this.cutCounted || this.state === 'closing') return;
    if (this.decoder.hasPartial || this.held !== undefined) {
      this.cutCounted = true;
      this.counts.dropped['partial-frame']++;
    }
  }

  closed(): void {
    this.countCut();
    this.state = 'closed';
    // Answers still owed are lost with the connection; the sender resends those frames.
    this.relp.unanswered -= this.unanswered;
    this.unanswered = 0;
    this.settled?.();
  }

  private onFrame(f: RelpFrame): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    if (f.txnr === 0) return; // a hint: nothing to answer
    if (f.txnr <= this.lastTxnr && !(this.lastTxnr === MAX_TXNR && f.txnr === 1)) this.relp.repeatedTxnr++;
    this.lastTxnr = f.txnr;
    if (this.state === 'new') {
      if (f.command !== 'open') return this.protocolError(`"${f.command}" before "open"`);
      return this.open(f);
    }
    switch (f.command) {
      case 'syslog':
        return this.syslog(f);
      case 'close':
        this.state = 'closing';
        this.relp.sessionsClosed++;
        this.queue({ txnr: f.txnr, answer: OK, syslog: false, hash: undefined, closeAfter: true });
        return;
      case 'open':
        this.queue({ txnr: f.txnr, answer: '500 protocol error: connection already open', syslog: false, hash: undefined, closeAfter: true });
        this.state = 'closing';
        return;
      default:
        this.queue({ txnr: f.txnr, answer: '500 command not supported', syslog: false, hash: undefined, closeAfter: false });
    }
  }

  private open(f: RelpFrame): void {
    const offers = parseOffers(f.data);
    const version = Number(offers.get('relp_version')?.[0]);
    const commands = offers.get('commands') ?? [];
    if (!Number.isInteger(version) || version < 0) {
      this.queue({ txnr: f.txnr, answer: '500 error: no relp_version offer', syslog: false, hash: undefined, closeAfter: true });
      this.state = 'closing';
      return;
    }
    if (!commands.includes('syslog')) {
      this.queue({ txnr: f.txnr, answer: '500 required command not supported by client', syslog: false, hash: undefined, closeAfter: true });
      this.state = 'closing';
      return;
    }
    this.state = 'open';
    this.relp.sessionsOpened++;
    // librelp clients refuse a version above their own; version 1 is the specification's.
    const answer = `${OK}\nrelp_version=${Math.min(version, 1)}\nrelp_software=dockflow\ncommands=syslog`;
    this.queue({ txnr: f.txnr, answer, syslog: false, hash: undefined, closeAfter: false });
  }

  private syslog(f: RelpFrame): void {
    this.counts.messages++;
    const entry: Pending = { txnr: f.txnr, answer: undefined, syslog: true, hash: undefined, closeAfter: false };
    if (f.oversize) {
      // Skipped unread: a 500 would have the sender resend it for ever, so it is answered and counted as lost.
      this.counts.dropped.oversize++;
      entry.answer = OK;
      this.queue(entry);
      return;
    }
    const data = f.data;
    const end = data === undefined ? 0 : contentEnd(data, 0, data.length);
    if (data === undefined || end === 0) {
      entry.answer = OK;
      this.queue(entry);
      return;
    }
    const hash = relpHash(this.remoteAddress, data.subarray(0, end));
    entry.hash = hash;
    if (this.opts.recent.has(hash)) {
      this.relp.duplicates++;
      this.ctx.logger.info({ remoteAddress: this.remoteAddress, txnr: f.txnr, hash }, 'RELP message received again (stored before); stored again with the same event.hash');
    }
    this.queue(entry);
    this.unanswered++;
    this.relp.unanswered++;
    const meta: MessageMeta = { transport: 'relp', remoteAddress: this.remoteAddress, receivedAtMs: Date.now(), hash };
    const message = data.toString('utf8', 0, end);
    // Byte-exact: the message's own bytes go with it when its UTF-8 decoding does not give them back.
    const more = this.ctx.sink.acceptDurable!(message, meta, (outcome) => this.settle(entry, outcome), exactBytes(message, data, 0, end));
    if (!more) this.receiver.pause();
    if (this.unanswered >= this.opts.windowFrames && !this.windowFull && this.state === 'open') {
      this.windowFull = true;
      this.relp.windowFull++;
      this.receiver.pauseSocket(this.socket);
    }
  }

  private settle(entry: Pending, outcome: DurableOutcome): void {
    // Remembered even when the connection is gone: the sender never got the answer and will send it again.
    if (outcome === 'stored' && entry.hash !== undefined) this.opts.recent.add(entry.hash);
    if (this.state === 'closed') return;
    this.unanswered--;
    this.relp.unanswered--;
    if (outcome === 'dropped') {
      this.counts.dropped['relp-not-stored']++;
      entry.answer = '500 not stored, send it again';
    } else {
      entry.answer = OK;
    }
    this.flush();
    if (this.windowFull && this.unanswered < this.opts.windowFrames) {
      this.windowFull = false;
      const held = this.held;
      this.held = undefined;
      if (held !== undefined) this.decode(held);
      this.pendingSinceMs = this.held === undefined && this.decoder.hasPartial ? Date.now() : 0;
      this.receiver.resumeSocket(this);
    }
  }

  private queue(entry: Pending): void {
    this.pending.push(entry);
    if (entry.answer !== undefined) this.flush();
  }

  /** Writes the answers known at the head of the queue: answers go out in the order their commands came. */
  private flush(): void {
    let out = '';
    let closeAfter = false;
    while (this.head < this.pending.length) {
      const p = this.pending[this.head]!;
      if (p.answer === undefined) break;
      out += rspFrame(p.txnr, p.answer);
      if (p.syslog) {
        if (p.answer === OK) this.relp.acknowledged++;
        else this.relp.refused++;
      }
      this.head++;
      if (p.closeAfter) {
        closeAfter = true;
        break;
      }
    }
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending.splice(0, this.head);
      this.head = 0;
    }
    if (out !== '' && !this.socket.destroyed) {
      this.socket.write(out);
      if (this.socket.writableLength > MAX_UNSENT_BYTES && !this.writeBlocked) {
        this.writeBlocked = true;
        this.receiver.pauseSocket(this.socket);
      }
    }
    if (closeAfter) {
      this.state = 'closing';
      this.socket.end();
    }
    if (this.head === this.pending.length) this.settled?.();
  }

  private protocolError(reason: string): void {
    this.counts.dropped['relp-protocol']++;
    this.ctx.logger.info({ remoteAddress: this.remoteAddress, reason }, 'RELP protocol error; closing the connection');
    this.state = 'closing';
    if (!this.socket.destroyed) this.socket.end(SERVERCLOSE);
    // A peer that does not close its side is not waited for.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Stops reading, answers what becomes durable within `deadlineMs`, then says `serverclose` and ends. */
  async shutdown(deadlineMs: number): Promise<void> {
    if (this.state === 'closed') return;
    this.receiver.pauseSocket(this.socket);
    if (this.head < this.pending.length && deadlineMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.settled = resolve;
        timer = setTimeout(resolve, deadlineMs);
      });
      clearTimeout(timer);
    }
    if (!this.socket.destroyed) {
      this.state = 'closing';
      // The hint is a courtesy: a peer that does not read it is not waited for long.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 500);
        this.socket.end(SERVERCLOSE, () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

export function relpConnection(opts: RelpOptions): ConnectionFactory {
  return (socket, receiver, ctx, remoteAddress) => new RelpConnection(socket, receiver, ctx, remoteAddress, opts);
}
