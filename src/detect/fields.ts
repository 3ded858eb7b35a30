import type { ContainerRef, Direction, Endpoint, FlowRecord } from '../record.js';

/**
 * The record fields a rule can name, each with a precompiled accessor. ECS names as stored, plus `remote.*` (the side
 * that is not the container's: the destination of egress, the source of ingress) and a few derived fields.
 */
export type FieldType = 'string' | 'number' | 'ip' | 'bool';

export interface Field {
  type: FieldType;
  get(r: FlowRecord): string | number | boolean | undefined;
}

export const COMPOSE_SERVICE_LABEL = 'com.docker.compose.service';

/** Directions whose container is the source; for the rest the container is the destination. */
const CONTAINER_IS_SOURCE: Readonly<Record<Direction, boolean>> = {
  egress: true,
  'container-to-host': true,
  internal: true,
  ingress: false,
  'host-to-container': false,
  other: true,
};

export function remoteEndpoint(r: FlowRecord): Endpoint {
  return CONTAINER_IS_SOURCE[r.network.direction] ? r.destination : r.source;
}

export function localEndpoint(r: FlowRecord): Endpoint {
  return CONTAINER_IS_SOURCE[r.network.direction] ? r.source : r.destination;
}

/** An attributed container, or undefined (none, or attribution failed). */
export function containerOf(r: FlowRecord): ContainerRef | undefined {
  const c = r.container;
  return c === undefined || c.unattributed === true ? undefined : c;
}

export function composeServiceOf(r: FlowRecord): string | undefined {
  return containerOf(r)?.labels?.[COMPOSE_SERVICE_LABEL];
}

/** `80/tcp`: the container-side port as Docker names published ports. */
export function containerPortKey(r: FlowRecord): string | undefined {
  const port = localEndpoint(r).port;
  const t = r.network.transport;
  return port === undefined || t === undefined ? undefined : `${port}/${t}`;
}

const endpointFields = (prefix: string, side: (r: FlowRecord) => Endpoint): Record<string, Field> => ({
  [`${prefix}.ip`]: { type: 'ip', get: (r) => side(r).ip },
  [`${prefix}.port`]: { type: 'number', get: (r) => side(r).port },
  [`${prefix}.mac`]: { type: 'string', get: (r) => side(r).mac },
  [`${prefix}.geo.country_iso_code`]: { type: 'string', get: (r) => side(r).geo?.country_iso_code },
  [`${prefix}.geo.continent_code`]: { type: 'string', get: (r) => side(r).geo?.continent_code },
  [`${prefix}.as.number`]: { type: 'number', get: (r) => side(r).as?.number },
  [`${prefix}.as.organization.name`]: { type: 'string', get: (r) => side(r).as?.organization?.name },
  [`${prefix}.address_class`]: { type: 'string', get: (r) => side(r).address_class },
});

export const FIELDS: Readonly<Record<string, Field>> = {
  'network.direction': { type: 'string', get: (r) => r.network.direction },
  'network.transport': { type: 'string', get: (r) => r.network.transport },
  'network.type': { type: 'string', get: (r) => r.network.type },
  /**
   * Whether the record opens a connection: for TCP a SYN without ACK; for other transports true (each logged packet
   * counts, as with the `--ctstate NEW` LOG rules dockflow installs). Keeps rules quiet on LOG rules that log every
   * packet.
   */
  'network.new_connection': {
    type: 'bool',
    get: (r) => {
      if (r.network.transport !== 'tcp') return true;
      const f = r.iptables.tcp?.flags;
      if (f === undefined) return false;
      let syn = false;
      for (let i = 0; i < f.length; i++) {
        const x = f[i];
        if (x === 'ACK') return false;
        if (x === 'SYN') syn = true;
      }
      return syn;
    },
  },
  ...endpointFields('source', (r) => r.source),
  ...endpointFields('destination', (r) => r.destination),
  ...endpointFields('remote', remoteEndpoint),
  ...endpointFields('local', localEndpoint),
  'container.id': { type: 'string', get: (r) => containerOf(r)?.id },
  'container.name': { type: 'string', get: (r) => containerOf(r)?.name },
  'container.image.name': { type: 'string', get: (r) => containerOf(r)?.image?.name },
  'container.service': { type: 'string', get: composeServiceOf },
  'container.attributed': { type: 'bool', get: (r) => containerOf(r) !== undefined },
  /** Whether the container-side port/transport is one the container publishes (Docker's inspect `Ports`). */
  'container.port_published': {
    type: 'bool',
    get: (r) => {
      const c = containerOf(r);
      if (c === undefined) return undefined;
      const key = containerPortKey(r);
      return key !== undefined && c.ports !== undefined && c.ports.includes(key);
    },
  },
  'peer_container.name': { type: 'string', get: (r) => (r.peer_container?.unattributed === true ? undefined : r.peer_container?.name) },
  'log.prefix': { type: 'string', get: (r) => r.log?.prefix },
  'host.name': { type: 'string', get: (r) => r.host?.name },
  'iptables.length': { type: 'number', get: (r) => r.iptables.length },
  'iptables.ttl': { type: 'number', get: (r) => r.iptables.ttl },
};

export const LABEL_PREFIX = 'container.labels.';

/** The field a rule names, or undefined. `container.labels.<key>` reads one label (the key may contain dots). */
export function lookupField(name: string): Field | undefined {
  const f = FIELDS[name];
  if (f !== undefined) return f;
  if (name.startsWith(LABEL_PREFIX) && name.length > LABEL_PREFIX.length) {
    const key = name.slice(LABEL_PREFIX.length);
    return { type: 'string', get: (r) => containerOf(r)?.labels?.[key] };
  }
  return undefined;
}
