import net from 'node:net';
import tls from 'node:tls';
import type { RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import RedisParser from 'redis-parser';
import { DEFAULTS } from '../config/index.js';
import { reconnectDelayMs } from './connect.js';
import { ByteWriter, utf8Write } from './byte-writer.js';

/*
 * A connection of the writer's own, beside ioredis, for the one thing ioredis does slowly: a transaction of hundreds
 * of commands. Through ioredis each command is an object with its own argument handling and promise (its cost is
 * in docs/design.md); here a batch is RESP bytes written straight into one buffer and its replies are
 * counted off one parser. Everything else (seeding, lookups after an outage, trims, reads) stays on ioredis.
 */

/** Where to connect: the subset of ioredis' options that say so, so both connections go to the same server. */
export type RespTarget = Pick<RedisOptions, 'host' | 'port' | 'path' | 'username' | 'password' | 'db' | 'tls' | 'connectTimeout'>;

/**
 * RESP commands written into one buffer. The hot path (a batch's XADDs) writes each argument with one native call: a
 * string's length header is written for its UTF-16 length, right for ASCII, and corrected after the write when the
 * byte count says otherwise (utf8Write returns it; any other character takes more than one byte per unit). Constant
 * parts of commands are written as pre-encoded bytes (`encodeArgs`).
 */
export class RespWriter extends ByteWriter {
  /** Starts a command of `argc` arguments (its name included); the arguments follow with `arg` or `raw`. */
  command(argc: number): this {
    this.ensure(16);
    this.len = this.header(42 /* * */, argc, this.len);
    return this;
  }

  arg(value: string | Buffer): this {
    if (typeof value !== 'string') {
      this.ensure(value.length + 16);
      this.len = this.header(36 /* $ */, value.length, this.len);
      this.len += value.copy(this.buf, this.len);
      this.crlf();
      return this;
    }
    const units = value.length;
    this.ensure(units * 3 + 16);
    const start = this.len;
    let at = this.header(36, units, start);
    const bytes = utf8Write.call(this.buf, value, at);
    if (bytes !== units) {
      // Move the payload first: a longer header would overwrite its first bytes.
      const payload = at;
      at = start + headerBytes(bytes);
      if (at !== payload) this.buf.copyWithin(at, payload, payload + bytes);
      this.header(36, bytes, start);
    }
    this.len = at + bytes;
    this.crlf();
    return this;
  }

  /** Bytes already in RESP (see `encodeArgs`), or the part `start`..`end` of them. */
  raw(bytes: Buffer, start = 0, end = bytes.length): this {
    this.ensure(end - start);
    this.len += bytes.copy(this.buf, this.len, start, end);
    return this;
  }


  /** Writes `<type><n>\r\n` at `at`; returns the position after it. */
  private header(type: number, n: number, at: number): number {
    const buf = this.buf;
    buf[at++] = type;
    const digits = headerBytes(n) - 3;
    for (let i = digits - 1, v = n; i >= 0; i--, v = Math.floor(v / 10)) buf[at + i] = 48 + (v % 10);
    at += digits;
    buf[at++] = 13;
    buf[at++] = 10;
    return at;
  }

  private crlf(): void {
    this.buf[this.len++] = 13;
    this.buf[this.len++] = 10;
  }

}

/** The length of `$<n>\r\n`. */
function headerBytes(n: number): number {
  let digits = 1;
  for (let v = n; v >= 10; v = Math.floor(v / 10)) digits++;
  return digits + 3;
}

/**
 * The bulk strings of `bytes` from `start`, decoded, in order (`$<n>\r\n<n bytes>\r\n` each). For reading back
 * arguments a RespWriter wrote; anything else is not expected here.
 */
export function readBulks(bytes: Buffer, start: number, end: number, asBytes = -1): Array<string | Buffer> {
  const out: Array<string | Buffer> = [];
  let at = start;
  while (at < end) {
    const eol = bytes.indexOf(13, at);
    const n = Number(bytes.toString('latin1', at + 1, eol));
    // `asBytes`: the index of the one bulk wanted as its bytes (a copy: staging memory is reused).
    out.push(out.length === asBytes ? Buffer.from(bytes.subarray(eol + 2, eol + 2 + n)) : bytes.toString('utf8', eol + 2, eol + 2 + n));
    at = eol + 2 + n + 2;
  }
  return out;
}

/** Arguments as RESP bytes, for the constant parts of commands sent over and over (`RespWriter.raw`). */
export function encodeArgs(...args: string[]): Buffer {
  const w = new RespWriter(64);
  for (const a of args) w.arg(a);
  return Buffer.from(w.bytes());
}


/** The connection was lost (or never made) before every reply came: the server may have run none, some or all. */
export class RespConnectionError extends Error {
  override name = 'RespConnectionError';
}

interface Pending {
  expected: number;
  replies: unknown[];
  resolve: (replies: unknown[]) => void;
  reject: (err: Error) => void;
}

export interface RespConnectionHooks {
  logger: Logger;
  /** Connected and through the handshake (AUTH, SELECT, the setup commands). */
  onReady: () => void;
  /** Commands sent right after every (re)connection, before `onReady` (SCRIPT LOAD): their error replies fail it. */
  setup?: () => { payload: Buffer; replies: number };
  /**
   * With sends waiting, the longest wait for the next one to be fully answered before the connection is dropped
   * (its sends then fail as lost, which the writer treats as uncertain). Default: the config schema's.
   */
  replyTimeoutMs?: number | undefined;
  /** The connection closed unasked (the server died, or a cluster node stopped serving): see slot-connections.ts. */
  onLost?: () => void;
}

/**
 * One socket to Redis that sends RESP bytes and hands back a fixed number of replies per send, in order. Reconnects
 * forever with the same backoff as ioredis (`reconnectDelayMs`) until closed. Sends while not ready fail at once: the
 * caller (the writer) keeps its own queue, as with ioredis' offline queue turned off.
 */
export class RespConnection {
  private socket: net.Socket | undefined;
  private readonly pending: Pending[] = [];
  private ready = false;
  private closed = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private lastError = '';
  /** Armed while sends wait for replies; pushed back each time one is fully answered (see `replyTimeoutMs`). */
  private replyTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly target: RespTarget,
    private readonly hooks: RespConnectionHooks,
  ) {}

  get isReady(): boolean {
    return this.ready;
  }

  connect(): void {
    if (this.closed || this.socket !== undefined) return;
    const t = this.target;
    const socket =
      t.path !== undefined && t.path !== null
        ? net.connect({ path: t.path })
        : t.tls
          ? tls.connect({ host: t.host ?? 'localhost', port: t.port ?? 6379, ...(net.isIP(t.host ?? '') ? {} : { servername: t.host ?? 'localhost' }), ...t.tls })
          : net.connect({ host: t.host ?? 'localhost', port: t.port ?? 6379 });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(t.connectTimeout ?? 5000, () => socket.destroy(new Error('connect timeout')));
    const parser = new RedisParser({
      returnReply: (reply: unknown) => this.onReply(reply),
      // An error reply answers one command; it is that command's reply, not a failure of the connection.
      returnError: (err: Error) => this.onReply(err),
      returnFatalError: (err: Error) => socket.destroy(err),
    });
    socket.on('data', (chunk: Buffer) => parser.execute(chunk));
    socket.on('error', (err: Error) => {
      if (err.message !== this.lastError) this.hooks.logger.warn({ err: err.message }, 'Redis writer connection error');
      this.lastError = err.message;
    });
    socket.on('close', () => this.onClose(socket));
    socket.once(t.tls && t.path == null ? 'secureConnect' : 'connect', () => {
      socket.setTimeout(0);
      void this.handshake();
    });
  }

  /** Sends `payload` (RESP commands) and resolves with its `replies` replies; error replies are `Error` values. */
  send(payload: Buffer, replies: number): Promise<unknown[]> {
    if (!this.ready || this.socket === undefined) return Promise.reject(new RespConnectionError('Redis writer connection not ready'));
    return this.write(this.socket, payload, replies);
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.socket?.destroy();
  }

  private write(socket: net.Socket, payload: Buffer, replies: number): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) this.awaitReplies();
      this.pending.push({ expected: replies, replies: [], resolve, reject });
      socket.write(payload);
    });
  }

  /*
   * A server that accepts and never answers (stopped with SIGSTOP, a wedged proxy, a half-open connection with no
   * RST) would otherwise hold the writer's batches, and so its queue and the TCP senders behind it, until the kernel
   * gives up on the socket, which can take many minutes.
   */
  private awaitReplies(): void {
    const ms = this.hooks.replyTimeoutMs ?? DEFAULTS.store.replyTimeoutMs;
    if (this.replyTimer !== undefined) this.replyTimer.refresh();
    else this.replyTimer = setTimeout(() => this.onReplyTimeout(ms), ms);
  }

  private stopAwaitingReplies(): void {
    clearTimeout(this.replyTimer);
    this.replyTimer = undefined;
  }

  private onReplyTimeout(ms: number): void {
    this.replyTimer = undefined;
    if (this.pending.length === 0 || this.socket === undefined) return;
    this.hooks.logger.warn({ replyTimeoutMs: ms, waiting: this.pending.length }, 'Redis writer connection: no reply in time, reconnecting');
    this.socket.destroy();
  }

  private async handshake(): Promise<void> {
    const socket = this.socket;
    if (socket === undefined) return;
    const { payload, replies } = this.handshakeCommands();
    try {
      const answers = await this.write(socket, payload, replies);
      const failed = answers.find((a): a is Error => a instanceof Error);
      if (failed) throw failed;
    } catch (err) {
      this.hooks.logger.warn({ err: (err as Error).message }, 'Redis writer connection: handshake failed');
      socket.destroy();
      return;
    }
    if (socket !== this.socket || this.closed) return;
    this.ready = true;
    this.attempt = 0;
    this.lastError = '';
    this.hooks.onReady();
  }

  private handshakeCommands(): { payload: Buffer; replies: number } {
    const t = this.target;
    const w = new RespWriter(256);
    let replies = 1;
    if (t.password) {
      if (t.username) w.command(3).arg('AUTH').arg(t.username).arg(t.password);
      else w.command(2).arg('AUTH').arg(t.password);
      replies++;
    }
    if (t.db) {
      w.command(2).arg('SELECT').arg(String(t.db));
      replies++;
    }
    w.command(3).arg('CLIENT').arg('SETNAME').arg('dockflow-writer');
    const setup = this.hooks.setup?.();
    if (setup === undefined) return { payload: w.bytes(), replies };
    return { payload: Buffer.concat([w.bytes(), setup.payload]), replies: replies + setup.replies };
  }

  private onReply(reply: unknown): void {
    const head = this.pending[0];
    if (head === undefined) return;
    head.replies.push(reply);
    if (head.replies.length < head.expected) return;
    this.pending.shift();
    if (this.pending.length > 0) this.awaitReplies();
    else this.stopAwaitingReplies();
    head.resolve(head.replies);
  }

  private onClose(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.ready = false;
    this.stopAwaitingReplies();
    const lost = this.pending.splice(0);
    for (const p of lost) p.reject(new RespConnectionError('Redis writer connection lost before the reply'));
    if (this.closed) return;
    this.hooks.onLost?.();
    this.attempt++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, reconnectDelayMs(this.attempt));
  }
}
