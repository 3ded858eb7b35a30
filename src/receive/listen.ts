import type { Logger } from 'pino';
import { DockflowError, ErrorCode } from '../errors.js';
import type { Allowlist } from './allowlist.js';
import type { ReceiveMetrics } from './metrics.js';
import type { MessageSink, Transport } from './types.js';

/** Where to listen. `host` `::` is dual-stack (IPv4 peers appear as mapped addresses, unwrapped for the sink). */
export interface ListenAddress {
  host: string;
  /** 0 picks a free port (tests); `addresses()` tells which. */
  port: number;
}

export interface BoundAddress {
  transport: Transport;
  address: string;
  family: 4 | 6;
  port: number;
}

/** What the TCP and UDP receivers share: built once by `startReceivers`. */
export interface ReceiverContext {
  sink: MessageSink;
  logger: Logger;
  metrics: ReceiveMetrics;
  allowlist: Allowlist;
  maxMessageBytes: number;
}

export const familyOf = (family: string | number): 4 | 6 => (family === 'IPv6' || family === 6 ? 6 : 4);

export function listenFailed(transport: Transport, at: ListenAddress, cause: unknown): DockflowError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new DockflowError(ErrorCode.LISTEN_FAILED, `cannot listen for syslog on ${transport} ${at.host} port ${at.port}: ${reason}`, {
    cause,
  });
}
