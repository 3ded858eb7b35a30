import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { Allowlist } from './allowlist.js';
import type { BoundAddress, ListenAddress } from './listen.js';
import { ReceiveMetrics } from './metrics.js';
import { RecentHashes, relpConnection } from './relp.js';
import { TcpReceiver } from './tcp.js';
import { TlsCredentials, type TlsListenerOptions } from './tls.js';
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
  /** Syslog over TLS (RFC 5425), octet-counted like TCP, with the TCP connection caps. */
  tls?: { listen: readonly ListenAddress[]; credentials: TlsListenerOptions } | undefined;
  /** RELP: each `syslog` frame answered once its record is durable (see relp.ts). */
  relp?: RelpListenerOptions | undefined;
}

export interface RelpListenerOptions {
  listen: readonly ListenAddress[];
  /** Unanswered `syslog` frames per connection before it stops reading. */
  windowFrames: number;
  /** Message hashes remembered for duplicate detection. */
  recentHashes: number;
  /** Hashes of the RELP records stored last (the streams' tails), loaded before listening. */
  seedHashes?: () => Promise<Iterable<string>>;
  /** At close, the longest wait for unanswered frames to become durable before `serverclose`. */
  closeWaitMs: number;
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
  readonly relpPaused: boolean;
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
  let tls: TcpReceiver | undefined;
  let relp: TcpReceiver | undefined;
  const close = async (): Promise<void> => {
    await Promise.all([tcp.close(), udp.close(), tls?.close(), relp?.close()]);
  };
  try {
    await tcp.listen();
    await udp.listen();
    if (opts.tls !== undefined && opts.tls.listen.length > 0) {
      const credentials = new TlsCredentials(opts.tls.credentials, deps.logger, metrics.tlsCounts);
      credentials.onHandshakeFailed = () => metrics.tls.dropped['tls-handshake']++;
      tls = new TcpReceiver({ transport: 'tls', listen: opts.tls.listen, maxConnections: opts.maxConnections, maxConnectionsPerSource: opts.maxConnectionsPerSource, idleTimeoutMs: opts.idleTimeoutMs, frameTimeoutMs: opts.frameTimeoutMs, tls: credentials }, ctx);
      await tls.listen();
    }
    if (opts.relp !== undefined && opts.relp.listen.length > 0) {
      if (sink.acceptDurable === undefined) throw new Error('the RELP listener needs a sink that reports durability');
      const recent = new RecentHashes(opts.relp.recentHashes);
      if (opts.relp.seedHashes !== undefined) for (const hash of await opts.relp.seedHashes()) recent.add(hash);
      relp = new TcpReceiver(
        {
          transport: 'relp',
          listen: opts.relp.listen,
          maxConnections: opts.maxConnections,
          maxConnectionsPerSource: opts.maxConnectionsPerSource,
          idleTimeoutMs: opts.idleTimeoutMs,
          frameTimeoutMs: opts.frameTimeoutMs,
          connection: relpConnection({ windowFrames: opts.relp.windowFrames, recent }),
          closeWaitMs: opts.relp.closeWaitMs,
        },
        ctx,
      );
      await relp.listen();
    }
  } catch (err) {
    await close();
    throw err;
  }
  return {
    addresses: () => [...tcp.addresses(), ...udp.addresses(), ...(tls?.addresses() ?? []), ...(relp?.addresses() ?? [])],
    metrics,
    get tcpPaused() {
      return tcp.isPaused;
    },
    get relpPaused() {
      return relp?.isPaused ?? false;
    },
    get udpRunning() {
      return udp.running;
    },
    close,
  };
}
