import type { Direction, FlowRecord } from './types.js';

/** UTC, to the millisecond, as the records are stamped: `2026-11-27 06:43:29.895`. */
export function fmtTime(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return '';
  const t = Date.parse(iso);
  return Number.isFinite(t) ? new Date(t).toISOString().replace('T', ' ').replace('Z', '') : iso;
}

export const fmtCount = (n: number | undefined): string => (n === undefined ? '' : n.toLocaleString('en-US'));

export function endpoint(ip: string | undefined, port: number | undefined): string {
  if (ip === undefined) return '';
  if (port === undefined) return ip;
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Directions where the container is the source (the remote side is the destination). */
const OUTWARD: ReadonlySet<Direction> = new Set<Direction>(['egress', 'container-to-host', 'internal', 'other']);

/** The side of a record that is not the container: where egress went, where ingress came from. */
export function remoteOf(r: FlowRecord): FlowRecord['source'] {
  return OUTWARD.has(r.network.direction) ? r.destination : r.source;
}

/**
 * How a connection reads from the container's side: the remote service it reached (`198.51.100.2:25`), or for
 * connections made to it, the remote address and the container's own port (`198.51.100.2 → :80`), never the
 * remote's ephemeral port.
 */
export function connectionLabel(direction: Direction, source: { ip?: string; port?: number }, destination: { ip?: string; port?: number }): string {
  if (OUTWARD.has(direction)) return endpoint(destination.ip, destination.port);
  return destination.port === undefined ? (source.ip ?? '') : `${source.ip ?? ''} → :${destination.port}`;
}
