import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { once } from 'node:events';
import { unmapIPv4 } from './allowlist.js';
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
  /** A connection silent this long is closed (half-open peers never say goodbye). Suspended while paused. */
  idleTimeoutMs: number;
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
  /** At close: settle what the connection holds within `deadlineMs`, tell the peer, and end (RELP). */
  shutdown?(deadlineMs: number): Promise<void>;
}

export type ConnectionFactory = (socket: net.Socket, receiver: TcpReceiver, ctx: ReceiverContext, remoteAddress: string) => StreamConnection;

/** One peer connection: frames its bytes and hands each message to the sink. */
class SyslogConnection implements StreamConnection {
  readonly decoder: FrameDecoder;
  private readonly counts: TransportCounts;
  /** Shared by the frames of one chunk (they arrived together); a new object per chunk, never mutated. */
  private meta: MessageMeta;
  /** The peer closed cleanly and the decoder was flushed. */
  ended = false;

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
    this.meta = { transport: this.meta.transport, remoteAddress: this.meta.remoteAddress, receivedAtMs: Date.now() };
    // After a bad octet count nothing later in the stream can be trusted to start a frame.
    if (!this.decoder.push(chunk)) this.socket.destroy();
  }

  frame(message: string): void {
    this.counts.messages++;
    if (!this.ctx.sink.accept(message, this.meta)) this.receiver.pause();
  }

  drop(reason: FrameDropReason): void {
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
    for (const conn of this.connections) this.resumeSocket(conn);
  }

  /** Resumes one connection's socket unless the receiver or the connection itself holds it. */
  resumeSocket(conn: StreamConnection): void {
    if (this.paused || this.closing || conn.reading === false) return;
    conn.socket.setTimeout(this.opts.idleTimeoutMs);
    conn.socket.resume();
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
      socket.destroy();
      return;
    }
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
