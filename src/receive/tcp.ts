import net from 'node:net';
import { once } from 'node:events';
import { unmapIPv4 } from './allowlist.js';
import { FrameDecoder, type FrameDropReason, type FrameListener } from './framing.js';
import { familyOf, listenFailed, type BoundAddress, type ListenAddress, type ReceiverContext } from './listen.js';
import type { MessageMeta } from './types.js';

export interface TcpReceiverOptions {
  listen: readonly ListenAddress[];
  /** Connections beyond this many (over all listeners) are closed as soon as accepted, and counted. */
  maxConnections: number;
  /** A connection silent this long is closed (half-open peers never say goodbye). Suspended while paused. */
  idleTimeoutMs: number;
}

/** One peer connection: frames its bytes and hands each message to the sink. */
class Connection implements FrameListener {
  readonly decoder: FrameDecoder;
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
    this.meta = { transport: 'tcp', remoteAddress, receivedAtMs: 0 };
  }

  data(chunk: Buffer): void {
    this.ctx.metrics.tcp.bytes += chunk.length;
    this.meta = { transport: 'tcp', remoteAddress: this.meta.remoteAddress, receivedAtMs: Date.now() };
    // After a bad octet count nothing later in the stream can be trusted to start a frame.
    if (!this.decoder.push(chunk)) this.socket.destroy();
  }

  frame(message: string, raw: Buffer | undefined): void {
    this.ctx.metrics.tcp.messages++;
    if (!this.ctx.sink.accept(message, this.meta, raw)) this.receiver.pause();
  }

  drop(reason: FrameDropReason): void {
    this.ctx.metrics.tcp.dropped[reason]++;
  }

  end(): void {
    this.ended = true;
    if (!this.decoder.end()) this.ctx.metrics.tcp.dropped['partial-frame']++;
  }

  /** Reset, timeout, close(): whatever was not yet a whole frame is lost, and counted. */
  closed(): void {
    if (!this.ended && this.decoder.hasPartial) this.ctx.metrics.tcp.dropped['partial-frame']++;
  }
}

/**
 * Syslog over TCP on `node:net`, LF or octet-counted framing per connection. Back-pressure: when the sink refuses,
 * every socket stops reading (the kernel then closes the peers' TCP windows) until the sink drains.
 */
export class TcpReceiver {
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private paused = false;
  private closing = false;

  constructor(
    private readonly opts: TcpReceiverOptions,
    private readonly ctx: ReceiverContext,
  ) {
    ctx.sink.onDrain(() => this.resume());
  }

  async listen(): Promise<void> {
    for (const at of this.opts.listen) {
      const server = net.createServer((socket) => this.onConnection(socket));
      server.listen({ host: at.host, port: at.port });
      try {
        await once(server, 'listening');
      } catch (err) {
        throw listenFailed('tcp', at, err);
      }
      server.on('error', (err) => this.ctx.logger.error({ err, listen: at }, 'syslog TCP listener error'));
      this.servers.push(server);
      this.ctx.logger.info({ listen: server.address() }, 'syslog TCP listening');
    }
  }

  addresses(): BoundAddress[] {
    return this.servers.map((server) => {
      const a = server.address() as net.AddressInfo;
      return { transport: 'tcp', address: a.address, family: familyOf(a.family), port: a.port };
    });
  }

  get isPaused(): boolean {
    return this.paused;
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    for (const conn of this.connections) this.pauseSocket(conn.socket);
  }

  private resume(): void {
    if (!this.paused || this.closing) return;
    this.paused = false;
    for (const conn of this.connections) {
      conn.socket.setTimeout(this.opts.idleTimeoutMs);
      conn.socket.resume();
    }
  }

  /** Silence on a socket we stopped reading is ours, not the peer's: no idle timeout while paused. */
  private pauseSocket(socket: net.Socket): void {
    socket.pause();
    socket.setTimeout(0);
  }

  private onConnection(socket: net.Socket): void {
    const counts = this.ctx.metrics.tcp;
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
    if (this.connections.size >= this.opts.maxConnections) {
      counts.dropped['max-connections']++;
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, this, this.ctx, remoteAddress);
    this.connections.add(conn);
    this.ctx.metrics.openConnections = this.connections.size;
    socket.on('error', (err) => this.ctx.logger.debug({ err, remoteAddress }, 'syslog TCP connection error'));
    socket.on('timeout', () => {
      this.ctx.metrics.idleTimeouts++;
      socket.destroy();
    });
    socket.on('end', () => conn.end());
    socket.on('close', () => {
      conn.closed();
      this.connections.delete(conn);
      this.ctx.metrics.openConnections = this.connections.size;
    });
    // Pausing before the data listener is attached keeps a new connection from flowing while the sink is full.
    if (this.paused) this.pauseSocket(socket);
    else socket.setTimeout(this.opts.idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => conn.data(chunk));
  }

  /**
   * Stops accepting, hands on what Node has already read (even from paused sockets), then closes every
   * connection; a frame still incomplete at that point is counted as `partial-frame`.
   */
  async close(): Promise<void> {
    this.closing = true;
    const closed = this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    for (const conn of this.connections) {
      // read() emits 'data' for what it returns, so the chunk goes through the usual path.
      while (!conn.socket.destroyed && conn.socket.read() !== null);
      conn.socket.destroy();
    }
    await Promise.all(closed);
  }
}
