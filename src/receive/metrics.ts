import type { Registry } from 'prom-client';
import { exportCounter, exportGauge, type Labels, type Series } from '../metrics.js';
import { readUdpDrops, type UdpSocketId } from './proc-net-udp.js';
import type { Transport } from './types.js';
import { BACKLOG_STATS } from './udp-wire.js';

export type ReceiveDropReason =
  | 'oversize'
  | 'not-allowed'
  | 'partial-frame'
  | 'bad-octet-count'
  | 'max-connections'
  | 'max-connections-per-source'
  | 'frame-timeout'
  | 'refused-lines'
  | 'backlog-full'
  | 'backlog-write-failed'
  | 'backlog-torn';

const DROP_REASONS: Record<Transport, readonly ReceiveDropReason[]> = {
  tcp: ['oversize', 'not-allowed', 'partial-frame', 'bad-octet-count', 'max-connections', 'max-connections-per-source', 'frame-timeout', 'refused-lines'],
  udp: ['oversize', 'not-allowed', 'backlog-full', 'backlog-write-failed', 'backlog-torn'],
};

/** Plain numbers bumped on the hot path; prom-client reads them only when scraped. */
export class TransportCounts {
  /** Messages handed to the sink. */
  messages = 0;
  /** Bytes read from the network, framing included, whether or not they became messages. */
  bytes = 0;
  readonly dropped: Record<ReceiveDropReason, number> = {
    oversize: 0,
    'not-allowed': 0,
    'partial-frame': 0,
    'bad-octet-count': 0,
    /** Connections refused (not lines): over the total cap, or over the cap for their source address. */
    'max-connections': 0,
    'max-connections-per-source': 0,
    /** Connections closed for a started frame not completed within the frame deadline (their partial line: partial-frame). */
    'frame-timeout': 0,
    /** Lines read from refused connections, counted and not kept. */
    'refused-lines': 0,
    'backlog-full': 0,
    'backlog-write-failed': 0,
    /** Torn chunks (one or more datagrams each) read back from the backlog's disk after a crash. */
    'backlog-torn': 0,
  };
}

interface UdpSocketState extends UdpSocketId {
  /** `host:port` label, IPv6 in brackets. */
  label: string;
  receiveBufferBytes: number;
}

export const listenLabel = (address: string, port: number): string =>
  address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;

/** The receivers' counters and gauges, registered on the injected registry. */
export class ReceiveMetrics {
  readonly tcp = new TransportCounts();
  readonly udp = new TransportCounts();
  openConnections = 0;
  idleTimeouts = 0;
  /** UDP receive threads that stopped unasked and were replaced. */
  udpThreadRestarts = 0;
  private readonly udpSockets: UdpSocketState[] = [];
  /** The UDP receive thread's counters (udp-wire.ts BACKLOG_STATS), shared memory it writes. */
  private udpBacklog: Float64Array | undefined;

  constructor(
    registry: Registry,
    private readonly procNetDir = '/proc/net',
  ) {
    const transports: readonly Transport[] = ['tcp', 'udp'];
    const perTransport = (read: (counts: TransportCounts) => number): Series =>
      transports.map((transport) => [{ transport }, read(this[transport])] as const);
    exportCounter(registry, { name: 'dockflow_receive_messages_total', help: 'Syslog messages received and handed on, by transport', labelNames: ['transport'] }, () =>
      perTransport((c) => c.messages),
    );
    exportCounter(registry, { name: 'dockflow_receive_bytes_total', help: 'Bytes read from syslog sockets (framing included), by transport', labelNames: ['transport'] }, () =>
      perTransport((c) => c.bytes),
    );
    exportCounter(
      registry,
      { name: 'dockflow_receive_dropped_total', help: 'Syslog messages or connections dropped before parsing, by transport and reason', labelNames: ['transport', 'reason'] },
      () => {
        this.syncUdpBacklog();
        return transports.flatMap((transport) => DROP_REASONS[transport].map((reason) => [{ transport, reason }, this[transport].dropped[reason]] as const));
      },
    );
    exportGauge(registry, { name: 'dockflow_receive_tcp_connections', help: 'Open syslog TCP connections' }, () => this.openConnections);
    exportCounter(
      registry,
      { name: 'dockflow_receive_tcp_idle_timeouts_total', help: 'Syslog TCP connections closed for being silent longer than the idle timeout' },
      () => this.idleTimeouts,
    );
    exportCounter(
      registry,
      {
        name: 'dockflow_receive_udp_thread_restarts_total',
        help: 'UDP receive threads that stopped unasked and were replaced (datagrams in their memory backlog were lost)',
      },
      () => this.udpThreadRestarts,
    );
    exportGauge(
      registry,
      { name: 'dockflow_receive_udp_buffer_bytes', help: 'Effective kernel receive buffer of each syslog UDP socket (as the kernel granted it)', labelNames: ['listen'] },
      () => this.udpSockets.map((s) => [{ listen: s.label }, s.receiveBufferBytes] as const),
    );
    exportGauge(
      registry,
      { name: 'dockflow_receive_udp_backlog_bytes', help: 'Datagrams read from the UDP sockets and waiting for the ingest thread (in memory, then on disk)' },
      () => this.udpBacklog?.[BACKLOG_STATS.bytes] ?? 0,
    );
    exportGauge(
      registry,
      { name: 'dockflow_receive_udp_kernel_drops', help: 'Datagrams the kernel dropped on each syslog UDP socket (drops column of /proc/net/udp, udp6)', labelNames: ['listen'] },
      async () => {
        const out: [Labels, number][] = [];
        for (const s of this.udpSockets) {
          const drops = await this.kernelDrops(s);
          if (drops !== undefined) out.push([{ listen: s.label }, drops]);
        }
        return out;
      },
    );
  }

  /** Drops on both transports, keyed `receive-<reason>` to tell them from parse and store drops in loss reports. */
  droppedByReason(): Record<string, number> {
    this.syncUdpBacklog();
    const out: Record<string, number> = {};
    for (const transport of ['tcp', 'udp'] as const) {
      for (const reason of DROP_REASONS[transport]) out[`receive-${reason}`] = (out[`receive-${reason}`] ?? 0) + this[transport].dropped[reason];
    }
    return out;
  }

  /** Sum over the UDP sockets; undefined when no socket's count can be read. */
  async udpKernelDrops(): Promise<number | undefined> {
    let total: number | undefined;
    for (const s of this.udpSockets) {
      const drops = await this.kernelDrops(s);
      if (drops !== undefined) total = (total ?? 0) + drops;
    }
    return total;
  }

  /** Counters written by the UDP receive thread, read at each scrape. */
  setUdpBacklog(stats: Float64Array): void {
    this.udpBacklog = stats;
  }

  syncUdpBacklog(): void {
    const stats = this.udpBacklog;
    if (stats === undefined) return;
    this.udp.dropped['backlog-full'] = stats[BACKLOG_STATS.droppedDatagrams] ?? 0;
    this.udp.dropped['backlog-write-failed'] = stats[BACKLOG_STATS.writeFailedDatagrams] ?? 0;
    this.udp.dropped['backlog-torn'] = stats[BACKLOG_STATS.tornChunks] ?? 0;
  }

  addUdpSocket(id: UdpSocketId, receiveBufferBytes: number): void {
    this.udpSockets.push({ ...id, label: listenLabel(id.address, id.port), receiveBufferBytes });
  }

  removeUdpSocket(id: UdpSocketId): void {
    const i = this.udpSockets.findIndex((s) => s.port === id.port && s.address === id.address);
    if (i !== -1) this.udpSockets.splice(i, 1);
  }

  /** Undefined when the count cannot be read (no /proc, another network namespace): a scrape must not fail. */
  async kernelDrops(id: UdpSocketId): Promise<number | undefined> {
    try {
      return await readUdpDrops(this.procNetDir, id);
    } catch {
      return undefined;
    }
  }
}
