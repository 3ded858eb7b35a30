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
  | 'backlog-torn'
  | 'tls-handshake'
  | 'subject-not-allowed'
  | 'relp-protocol'
  | 'relp-not-stored';

const STREAM_DROP_REASONS: readonly ReceiveDropReason[] = ['oversize', 'not-allowed', 'partial-frame', 'bad-octet-count', 'max-connections', 'max-connections-per-source', 'frame-timeout', 'refused-lines'];
const DROP_REASONS: Record<Transport, readonly ReceiveDropReason[]> = {
  tcp: STREAM_DROP_REASONS,
  udp: ['oversize', 'not-allowed', 'backlog-full', 'backlog-write-failed', 'backlog-torn'],
  tls: [...STREAM_DROP_REASONS, 'tls-handshake', 'subject-not-allowed'],
  relp: ['oversize', 'not-allowed', 'partial-frame', 'max-connections', 'max-connections-per-source', 'frame-timeout', 'relp-protocol', 'relp-not-stored'],
};
const TRANSPORTS: readonly Transport[] = ['tcp', 'udp', 'tls', 'relp'];

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
    'tls-handshake': 0,
    'subject-not-allowed': 0,
    'relp-protocol': 0,
    'relp-not-stored': 0,
  };
}

/** RELP's own counts (relp.ts). */
export class RelpCounts {
  /** `syslog` frames answered `200 OK`, and answered `500` (the sender keeps them and resends). */
  acknowledged = 0;
  refused = 0;
  /** Frames whose transaction number did not increase within a session (the peer sent it again). */
  repeatedTxnr = 0;
  /** Messages whose hash (sender and bytes) matches one stored recently: resent after a lost acknowledgement. */
  duplicates = 0;
  /** Sessions opened with `open` and ended with `close`. */
  sessionsOpened = 0;
  sessionsClosed = 0;
  /** Times a connection stopped reading because its window of unanswered frames was full. */
  windowFull = 0;
  /** `syslog` frames read and not yet answered, over all connections. */
  unanswered = 0;
}

/** The TLS listener's credential reloads. */
export class TlsCounts {
  reloads = 0;
  reloadFailures = 0;
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
  readonly tls = new TransportCounts();
  readonly relp = new TransportCounts();
  readonly relpCounts = new RelpCounts();
  readonly tlsCounts = new TlsCounts();
  /** Open connections of each stream listener. */
  readonly connections: Record<Transport, number> = { tcp: 0, udp: 0, tls: 0, relp: 0 };
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
    const transports = TRANSPORTS;
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
    exportGauge(
      registry,
      { name: 'dockflow_receive_connections', help: 'Open connections of the stream listeners, by transport (tcp, tls, relp)', labelNames: ['transport'] },
      () => (['tcp', 'tls', 'relp'] as const).map((transport) => [{ transport }, this.connections[transport]] as const),
    );
    const relpCounter = (name: string, help: string, value: (c: RelpCounts) => number): void => {
      exportCounter(registry, { name, help }, () => value(this.relpCounts));
    };
    relpCounter('dockflow_relp_acknowledged_total', 'RELP syslog frames answered 200 OK (record durable, or no record to keep)', (c) => c.acknowledged);
    relpCounter('dockflow_relp_refused_total', 'RELP syslog frames answered 500 (not stored; the sender resends them)', (c) => c.refused);
    relpCounter('dockflow_relp_duplicates_total', 'RELP messages whose hash (sender and bytes) matches one stored recently', (c) => c.duplicates);
    relpCounter('dockflow_relp_repeated_txnr_total', 'RELP frames whose transaction number did not increase within a session', (c) => c.repeatedTxnr);
    relpCounter('dockflow_relp_sessions_total', 'RELP sessions opened', (c) => c.sessionsOpened);
    relpCounter('dockflow_relp_window_full_total', 'Times a RELP connection stopped reading with its window of unanswered frames full', (c) => c.windowFull);
    exportGauge(
      registry,
      { name: 'dockflow_relp_unanswered_frames', help: 'RELP syslog frames read and not yet answered (waiting for their record to be durable)' },
      () => this.relpCounts.unanswered,
    );
    exportCounter(registry, { name: 'dockflow_tls_reloads_total', help: 'TLS certificate and key reloads, by result', labelNames: ['result'] }, () => [
      [{ result: 'ok' }, this.tlsCounts.reloads],
      [{ result: 'failed' }, this.tlsCounts.reloadFailures],
    ]);
  }

  /** Open syslog TCP connections (plain TCP listener). */
  get openConnections(): number {
    return this.connections.tcp;
  }

  /** Drops on every transport, keyed `receive-<reason>` to tell them from parse and store drops in loss reports. */
  droppedByReason(): Record<string, number> {
    this.syncUdpBacklog();
    const out: Record<string, number> = {};
    for (const transport of TRANSPORTS) {
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
