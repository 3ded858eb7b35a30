import dgram from 'node:dgram';
import { once } from 'node:events';
import { isIP } from 'node:net';
import { unmapIPv4 } from './allowlist.js';
import { contentEnd } from './framing.js';
import { familyOf, listenFailed, type BoundAddress, type ListenAddress, type ReceiverContext } from './listen.js';
import type { UdpSocketId } from './proc-net-udp.js';

export interface UdpReceiverOptions {
  listen: readonly ListenAddress[];
  /**
   * SO_RCVBUF asked for each socket: bursts larger than this are dropped by the kernel. Linux caps it at
   * `net.core.rmem_max` and reports twice what it granted; the granted value is logged and exported.
   */
  receiveBufferBytes: number;
}

/** Syslog over UDP on `node:dgram`: one datagram is one message. UDP cannot push back, so the sink's answer is ignored. */
export class UdpReceiver {
  private readonly sockets: dgram.Socket[] = [];
  private readonly ids: UdpSocketId[] = [];

  constructor(
    private readonly opts: UdpReceiverOptions,
    private readonly ctx: ReceiverContext,
  ) {}

  async listen(): Promise<void> {
    for (const at of this.opts.listen) {
      const socket = dgram.createSocket({ type: isIP(at.host) === 6 ? 'udp6' : 'udp4' });
      socket.on('message', (msg, rinfo) => this.receive(msg, rinfo.address));
      socket.bind({ address: at.host, port: at.port });
      try {
        await once(socket, 'listening');
      } catch (err) {
        socket.close();
        throw listenFailed('udp', at, err);
      }
      socket.on('error', (err) => this.ctx.logger.error({ err, listen: at }, 'syslog UDP socket error'));
      this.sockets.push(socket);
      this.ids.push(this.tuneBuffer(socket));
    }
  }

  /** Node can only size the buffer of a bound socket; the kernel may grant less than asked, so read it back. */
  private tuneBuffer(socket: dgram.Socket): UdpSocketId {
    const a = socket.address();
    const id: UdpSocketId = { family: familyOf(a.family), address: a.address, port: a.port };
    const requested = this.opts.receiveBufferBytes;
    try {
      socket.setRecvBufferSize(requested);
    } catch (err) {
      this.ctx.logger.warn({ err, requested }, 'cannot set the syslog UDP receive buffer');
    }
    const granted = socket.getRecvBufferSize();
    this.ctx.metrics.addUdpSocket(id, granted);
    const log = { listen: a, receiveBufferBytes: granted, requested };
    if (granted < requested) this.ctx.logger.warn(log, 'syslog UDP receive buffer smaller than asked: raise net.core.rmem_max');
    else this.ctx.logger.info(log, 'syslog UDP listening');
    return id;
  }

  addresses(): BoundAddress[] {
    return this.ids.map((id) => ({ transport: 'udp', ...id }));
  }

  private receive(msg: Buffer, from: string): void {
    const counts = this.ctx.metrics.udp;
    counts.bytes += msg.length;
    const remoteAddress = unmapIPv4(from);
    if (!this.ctx.allowlist.allows(remoteAddress)) {
      counts.dropped['not-allowed']++;
      return;
    }
    const end = contentEnd(msg, 0, msg.length);
    if (end === 0) return;
    if (end > this.ctx.maxMessageBytes) {
      counts.dropped.oversize++;
      return;
    }
    counts.messages++;
    this.ctx.sink.accept(msg.toString('utf8', 0, end), { transport: 'udp', remoteAddress, receivedAtMs: Date.now() });
  }

  async close(): Promise<void> {
    for (const id of this.ids) this.ctx.metrics.removeUdpSocket(id);
    await Promise.all(this.sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
    this.sockets.length = 0;
    this.ids.length = 0;
  }
}
