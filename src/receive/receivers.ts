import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { Allowlist } from './allowlist.js';
import type { BoundAddress, ListenAddress } from './listen.js';
import { ReceiveMetrics } from './metrics.js';
import { TcpReceiver } from './tcp.js';
import type { MessageSink } from './types.js';
import type { UdpReader } from './udp-batch.js';
import { UdpReceiver } from './udp.js';

export interface ReceiverOptions {
  /** Empty: no UDP. */
  udp: readonly ListenAddress[];
  /** Empty: no TCP. */
  tcp: readonly ListenAddress[];
  /** Largest message kept, without its terminator or trailing LF; longer ones are skipped to their end and counted. */
  maxMessageBytes: number;
  maxConnections: number;
  maxConnectionsPerSource: number;
  idleTimeoutMs: number;
  frameTimeoutMs: number;
  receiveBufferBytes: number;
  /** How UDP sockets are read: recvmmsg through the addon (`batch`), node:dgram, or the first that loads (`auto`). */
  udpReader: UdpReader;
  /** UDP datagrams read ahead of parsing: in memory up to this, then in `udpBacklogDir` (undefined: memory only). */
  udpBacklogMemoryBytes: number;
  udpBacklogDir: string | undefined;
  udpBacklogDiskBytes: number;
  /** Sender CIDRs (IPv4 or IPv6, bare address = one host); empty allows everyone. */
  allow: readonly string[];
}

export interface ReceiverDeps {
  logger: Logger;
  registry: Registry;
  /** Where `udp`/`udp6` are read for kernel drop counts. */
  procNetDir?: string;
}

export interface Receivers {
  /** The bound addresses (actual ports when 0 was asked). */
  addresses(): BoundAddress[];
  readonly metrics: ReceiveMetrics;
  /** True while TCP reading is suspended because the sink refused. */
  readonly tcpPaused: boolean;
  /** False while the UDP receive thread is down (it stopped unasked and its replacement is not up yet). */
  readonly udpRunning: boolean;
  /** Stops accepting and closes every socket after handing on what was already read. */
  close(): Promise<void>;
}

/** Starts every listener or none: a listener that cannot bind closes the ones already started and rejects. */
export async function startReceivers(opts: ReceiverOptions, sink: MessageSink, deps: ReceiverDeps): Promise<Receivers> {
  const metrics = new ReceiveMetrics(deps.registry, deps.procNetDir);
  const ctx = { sink, logger: deps.logger, metrics, allowlist: Allowlist.parse(opts.allow), maxMessageBytes: opts.maxMessageBytes };
  const tcp = new TcpReceiver({
      listen: opts.tcp,
      maxConnections: opts.maxConnections,
      maxConnectionsPerSource: opts.maxConnectionsPerSource,
      idleTimeoutMs: opts.idleTimeoutMs,
      frameTimeoutMs: opts.frameTimeoutMs,
    }, ctx);
  const udp = new UdpReceiver(
    {
      listen: opts.udp,
      reader: opts.udpReader,
      receiveBufferBytes: opts.receiveBufferBytes,
      backlogMemoryBytes: opts.udpBacklogMemoryBytes,
      backlogDir: opts.udpBacklogDir,
      backlogDiskBytes: opts.udpBacklogDiskBytes,
    },
    ctx,
  );
  const close = async (): Promise<void> => {
    await Promise.all([tcp.close(), udp.close()]);
  };
  try {
    await tcp.listen();
    await udp.listen();
  } catch (err) {
    await close();
    throw err;
  }
  return {
    addresses: () => [...tcp.addresses(), ...udp.addresses()],
    metrics,
    get tcpPaused() {
      return tcp.isPaused;
    },
    get udpRunning() {
      return udp.running;
    },
    close,
  };
}
