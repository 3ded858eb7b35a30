/** The API's answers as the dashboard reads them (see src/api/*.ts for the schemas). */
import type { LossReport } from '../api/app.js';
import type { Direction, FlowRecord } from '../record.js';

export type { Direction, FlowRecord, LossReport };

export interface Range {
  since: string | null;
  until: string | null;
}

export interface FlowList {
  range: Range;
  order: string;
  index: string;
  count: number;
  items: FlowRecord[];
  next_cursor: string | null;
  examined: number;
  loss: LossReport;
}

export interface TopEntry {
  value: string;
  count: number;
  name?: string;
  service?: string;
}

export interface TopAnswer {
  by: string;
  range: Range;
  covered: Range;
  distinct?: number;
  top: TopEntry[];
  loss: LossReport;
}

export interface Destination {
  direction: Direction;
  ip: string;
  transport: string;
  /** Absent for transports without ports (ICMP). */
  port?: number;
  first_seen: string;
  last_seen: string;
}

export interface InventoryAnswer {
  new_since: string | null;
  containers: { id: string; name?: string; service?: string; total: number; destinations: Destination[] }[];
  range: Range;
  loss: LossReport;
}

export interface Connection {
  first_seen: string;
  last_seen: string;
  direction: Direction;
  transport: string;
  source: { ip?: string; port?: number };
  destination: { ip?: string; port?: number };
  packets: number;
  bytes: number;
  tcp_flags?: string[];
  log_prefix?: string;
  container?: { id?: string; name?: string };
}

export interface ConnectionsAnswer {
  range: Range;
  count: number;
  connections: Connection[];
  packets: number;
  truncated: boolean;
  loss: LossReport;
}

/** `/api/containers`, served only when attribution is on. */
export interface ContainersAnswer {
  hosts: {
    host: string;
    containers: { id: string; name: string; image: string; labels: Record<string, string>; addresses: { ip: string; network?: string; from: string; to?: string }[] }[];
  }[];
}
