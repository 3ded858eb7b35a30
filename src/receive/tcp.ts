import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { once } from 'node:events';
import { unmapIPv4 } from '../net/ip.js';
import { FrameDecoder, type FrameDropReason, type FrameListener } from './framing.js';
import { familyOf, listenFailed, type BoundAddress, type ListenAddress, type ReceiverContext } from './listen.js';
import type { TransportCounts } from './metrics.js';
import type { TlsCredentials } from './tls.js';
import type { MessageMeta, Transport } from './types.js';

export interface TcpReceiverOptions {
  /** What the listener speaks: syslog over TCP (`tcp`), syslog over TLS (`tls`, RFC 5425), or RELP (`relp`). */
  transport?: StreamTransport;
  listen: readonly ListenAddress[];
  /** Connections beyond this many (over this receiver's listeners) are closed as soon as accepted, and counted. */
  maxConnections: number;
  /** Connections from one source address beyond this many are refused likewise: one sender cannot take every slot. */
  maxConnectionsPerSource: number;
  /** A connection silent this long is closed (half-open peers never say goodbye). Suspended while paused. */
  idleTimeoutMs: number;
  /**
   * A connection that has sent bytes and completed no frame for this long is closed (slowloris: a byte now and then
   * would otherwise keep the idle timer from firing, and the slot, forever). Suspended while paused.
   */
  frameTimeoutMs: number;
  /** TLS: the listeners are TLS servers with these credentials, and each peer is admitted by them. */
  tls?: TlsCredentials;
  /** What handles each connection's bytes; syslog framing (RFC 6587 / RFC 5425) when not given. */
  connection?: ConnectionFactory;
  /** At close, the longest wait for connections that answer their peers (RELP) to settle what they hold. */
  closeWaitMs?: number;
}

export type StreamTransport = Exclude<Transport, 'udp'>;

/** One accepted connection, as the receiver drives it. */
export interface StreamConnection {
  readonly socket: net.Socket;
  data(chunk: Buffer): void;
  /** The peer closed its side cleanly. */
  end(): void;
  /** The socket is gone (reset, timeout, close()). */
  closed(): void;
  /** False while the connection itself keeps its socket paused (RELP: window full); the receiver resumes only the others. */
  readonly reading?: boolean;
  /**
   * Since when a started frame has been waiting to complete (0: none): the receiver closes the connection once it
   * is older than `frameTimeoutMs` (slowloris). Reset by the receiver when it resumes reading.
   */
  pendingSinceMs: number;
  /** At close: settle what the connection holds within `deadlineMs`, tell the peer, and end (RELP). */
  shutdown?(deadlineMs: number): Promise<void>;
}

export type ConnectionFactory = (socket: net.Socket, receiver: TcpReceiver, ctx: ReceiverContext, remoteAddress: string) => StreamConnection;

/** How long a refused connection is read, to count the lines it had sent, before it is closed. */
const REFUSED_READ_MS = 200;
/** Refused connections read at once; beyond this they are closed at once (their lines uncounted, the refusal counted). */
const MAX_REFUSED_READING = 64;

/** One peer connection: frames its bytes and hands each message to the sink. */
class SyslogConnection implements StreamConnection {
  readonly decoder: FrameDecoder;
  private readonly counts: TransportCounts;
  /** Shared by the frames of one chunk (they arrived together); a new object per chunk, never mutated. */
  private meta: MessageMeta;
  /** The peer closed cleanly and the decoder was flushed. */
  ended = false;
  /** Frames completed (delivered or dropped): progress, for the frame deadline. */
  private completed = 0;
  /** Since when bytes have arrived without a frame completing; 0: none pending. */
  pendingSinceMs = 0;

  constructor(
    readonly socket: net.Socket,
    private readonly receiver: TcpReceiver,
    private readonly ctx: ReceiverContext,
    remoteAddress: string,
  ) {
    this.decoder = new FrameDecoder(ctx.maxMessageBytes, this);
    this.counts = ctx.metrics[receiver.transport];
    this.meta = { transport: receiver.transport, remoteAddress, receivedAtMs: 0 };
  }

  data(chunk: Buffer): void {
    this.counts.bytes += chunk.length;
    const now = Date.now();
    this.meta = { transport: this.meta.transport, remoteAddress: this.meta.remoteAddress, receivedAtMs: now };
    const completed = this.completed;
    // After a bad octet count nothing later in the stream can be trusted to start a frame.
    if (!this.decoder.push(chunk)) this.socket.destroy();
    if (this.completed !== completed) this.pendingSinceMs = this.decoder.hasPartial ? now : 0;
    else if (this.pendingSinceMs === 0) this.pendingSinceMs = now;
  }

  frame(message: string, raw: Buffer | undefined): void {
    this.completed++;
    this.counts.messages++;
    if (!this.ctx.sink.accept(message, this.meta, raw)) this.receiver.pause();
  }

  drop(reason: FrameDropReason): void {
    this.completed++;
    this.counts.dropped[reason]++;
  }

  end(): void {
    this.ended = true;
    if (!this.decoder.end()) this.counts.dropped['partial-frame']++;
  }

  /** Reset, timeout, close(): whatever was not yet a whole frame is lost, and counted. */
  closed(): void {
    if (!this.ended && this.decoder.hasPartial) this.counts.dropped['partial-frame']++;
  }
}

const syslogConnection: ConnectionFactory = (socket, receiver, ctx, remoteAddress) => new SyslogConnection(socket, receiver, ctx, remoteAddress);

/**
 * Stream listeners on `node:net` (or `node:tls`): syslog with LF or octet-counted framing per connection, or what
 * the connection factory speaks (RELP). Back-pressure: when the sink refuses, every socket stops reading (the kernel
 * then closes the peers' TCP windows) until the sink drains.
 */
export class TcpReceiver {
  readonly transport: StreamTransport;
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<StreamConnection>();
  private readonly makeConnection: ConnectionFactory;
  /** Open connections per source address. */
  private readonly perSource = new Map<string, number>();
  private refusedReading = 0;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private paused = false;
  private closing = false;

  constructor(
    private readonly opts: TcpReceiverOptions,
    private readonly ctx: ReceiverContext,
  ) {
    this.transport = opts.transport ?? 'tcp';
    this.makeConnection = opts.connection ?? syslogConnection;
    ctx.sink.onDrain(() => this.resume());
  }

  async listen(): Promise<void> {
    const tlsCredentials = this.opts.tls;
    if (this.opts.listen.length > 0) {
      // One sweep over the connections rather than a timer per connection; a quarter of the deadline keeps it close.
      const every = Math.max(10, Math.floor(this.opts.frameTimeoutMs / 4));
      this.deadlineTimer = setInterval(() => this.enforceFrameDeadline(), every).unref();
    }
    for (const at of this.opts.listen) {
      const server =
        tlsCredentials !== undefined
          ? tlsCredentials.createServer((socket) => this.onConnection(socket))
          : net.createServer((socket) => this.onConnection(socket));
      server.listen({ host: at.host, port: at.port });
      try {
        await once(server, 'listening');
      } catch (err) {
        throw listenFailed(this.transport, at, err);
      }
      server.on('error', (err) => this.ctx.logger.error({ err, listen: at }, `syslog ${this.transport} listener error`));
      this.servers.push(server);
      this.ctx.logger.info({ listen: server.address() }, `syslog ${this.transport.toUpperCase()} listening`);
    }
  }

  addresses(): BoundAddress[] {
    return this.servers.map((server) => {
      const a = server.address() as net.AddressInfo;
      return { transport: this.transport, address: a.address, family: familyOf(a.family), port: a.port };
    });
  }

  get isPaused(): boolean {
    return this.paused;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    for (const conn of this.connections) this.pauseSocket(conn.socket);
  }

  private resume(): void {
    if (!this.paused || this.closing) return;
    this.paused = false;
    const now = Date.now();
    for (const conn of this.connections) {
      // The time spent paused was ours: the frame deadline starts again.
      if (conn.pendingSinceMs !== 0) conn.pendingSinceMs = now;
      this.resumeSocket(conn);
    }
  }

  /** Resumes one connection's socket unless the receiver or the connection itself holds it. */
  resumeSocket(conn: StreamConnection): void {
    if (this.paused || this.closing || conn.reading === false) return;
    conn.socket.setTimeout(this.opts.idleTimeoutMs);
    conn.socket.resume();
  }

  /** Closes connections whose started frame is overdue; their partial frame is counted as lost when they close. */
  private enforceFrameDeadline(): void {
    if (this.paused) return;
    const overdue = Date.now() - this.opts.frameTimeoutMs;
    for (const conn of this.connections) {
      if (conn.pendingSinceMs === 0 || conn.pendingSinceMs > overdue || conn.socket.destroyed) continue;
      this.ctx.metrics[this.transport].dropped['frame-timeout']++;
      conn.socket.destroy();
    }
  }

  /**
   * A connection refused by a cap is read for a moment before it is closed, so that the lines it had already sent
   * are counted (`refused-lines`) rather than lost unseen; at most MAX_REFUSED_READING at once, each bounded in time
   * and memory (the decoder holds at most one frame).
   */
  private refuse(socket: net.Socket): void {
    if (this.refusedReading >= MAX_REFUSED_READING) {
      socket.destroy();
      return;
    }
    // RELP: its frames are not syslog lines, and the sender resends what was not answered; closed at once.
    if (this.transport === 'relp') {
      socket.destroy();
      return;
    }
    this.refusedReading++;
    const counts = this.ctx.metrics[this.transport];
    const decoder = new FrameDecoder(this.ctx.maxMessageBytes, {
      frame: () => counts.dropped['refused-lines']++,
      drop: () => counts.dropped['refused-lines']++,
    });
    const timer = setTimeout(() => socket.destroy(), REFUSED_READ_MS);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      counts.bytes += chunk.length;
      if (!decoder.push(chunk)) socket.destroy();
    });
    socket.on('end', () => {
      decoder.end();
      socket.destroy();
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (decoder.hasPartial) counts.dropped['refused-lines']++;
      this.refusedReading--;
    });
  }

  /** Silence on a socket we stopped reading is ours, not the peer's: no idle timeout while paused. */
  pauseSocket(socket: net.Socket): void {
    socket.pause();
    socket.setTimeout(0);
  }

  private onConnection(socket: net.Socket): void {
    const counts = this.ctx.metrics[this.transport];
    if (this.closing || socket.remoteAddress === undefined) {
      socket.destroy();
      return;
    }
    const remoteAddress = unmapIPv4(socket.remoteAddress);
    if (!this.ctx.allowlist.allows(remoteAddress)) {
      counts.dropped['not-allowed']++;
      socket.destroy();
      return;
    }
    if (this.opts.tls !== undefined && !this.opts.tls.admit(socket as TLSSocket, remoteAddress)) {
      counts.dropped['subject-not-allowed']++;
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.opts.maxConnections) {
      counts.dropped['max-connections']++;
      this.refuse(socket);
      return;
    }
    const fromSource = this.perSource.get(remoteAddress) ?? 0;
    if (fromSource >= this.opts.maxConnectionsPerSource) {
      counts.dropped['max-connections-per-source']++;
      this.refuse(socket);
      return;
    }
    this.perSource.set(remoteAddress, fromSource + 1);
    const conn = this.makeConnection(socket, this, this.ctx, remoteAddress);
    this.connections.add(conn);
    this.ctx.metrics.connections[this.transport] = this.connections.size;
    socket.on('error', (err) => this.ctx.logger.debug({ err, remoteAddress }, `syslog ${this.transport} connection error`));
    socket.on('timeout', () => {
      this.ctx.metrics.idleTimeouts++;
      socket.destroy();
    });
    socket.on('end', () => conn.end());
    socket.on('close', () => {
      conn.closed();
      const left = (this.perSource.get(remoteAddress) ?? 1) - 1;
      if (left > 0) this.perSource.set(remoteAddress, left);
      else this.perSource.delete(remoteAddress);
      this.connections.delete(conn);
      this.ctx.metrics.connections[this.transport] = this.connections.size;
    });
    // Pausing before the data listener is attached keeps a new connection from flowing while the sink is full.
    if (this.paused) this.pauseSocket(socket);
    else socket.setTimeout(this.opts.idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => conn.data(chunk));
  }

  /**
   * Stops accepting, hands on what Node has already read (even from paused sockets), lets connections that answer
   * their peers settle (RELP, within `closeWaitMs`), then closes every connection; a frame still incomplete at that
   * point is counted as `partial-frame`.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.opts.tls?.close();
    if (this.deadlineTimer) clearInterval(this.deadlineTimer);
    const closed = this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    const settling: Array<Promise<void>> = [];
    for (const conn of this.connections) {
      // read() emits 'data' for what it returns, so the chunk goes through the usual path.
      while (!conn.socket.destroyed && conn.socket.read() !== null);
      if (conn.shutdown !== undefined) settling.push(conn.shutdown(this.opts.closeWaitMs ?? 0).finally(() => conn.socket.destroy()));
      else conn.socket.destroy();
    }
    await Promise.all([...settling, ...closed]);
  }
}
