/**
 * The one canonical record: a netfilter LOG line as nested ECS JSON, with the field names of Elastic's iptables
 * integration (`source.*`, `destination.*`, `network.*`, `observer.*`, `iptables.*`) and dockflow's own additions in
 * the same style. Absent values are `undefined`, so `JSON.stringify` drops them and every record keeps one shape.
 */

/** Where the packet went relative to containers. Stream names are `dockflow:flows:<direction>`. */
export type Direction =
  | 'egress' // container bridge in, non-bridge out (container → outside)
  | 'ingress' // non-bridge in, container bridge out (outside → container)
  | 'internal' // bridge in and bridge out (container ↔ container)
  | 'container-to-host' // INPUT chain from a bridge (container → the Docker host itself)
  | 'host-to-container' // OUTPUT chain to a bridge (the Docker host → a container)
  | 'other'; // no container bridge involved

export const DIRECTIONS: readonly Direction[] = [
  'egress',
  'ingress',
  'internal',
  'container-to-host',
  'host-to-container',
  'other',
];

export interface Endpoint {
  ip?: string;
  port?: number;
  /** ECS form: upper-case hex pairs joined by hyphens (`02-42-AC-11-00-02`). */
  mac?: string;
  geo?: Geo;
  as?: AutonomousSystem;
  /** Set by GeoIP enrichment when the address is in a special-purpose range and was not looked up. */
  address_class?: string;
}

export interface Geo {
  country_iso_code?: string;
  country_name?: string;
  city_name?: string;
  continent_code?: string;
  location?: { lat: number; lon: number };
}

export interface AutonomousSystem {
  number?: number;
  organization?: { name?: string };
}

export interface ContainerRef {
  id?: string;
  name?: string;
  image?: { name?: string };
  labels?: Record<string, string>;
  /** Container ports the container publishes on the host, as Docker names them (`80/tcp`), from inspect (dockflow). */
  ports?: readonly string[];
  /** How attribution was made: `ip`, `ip+mac`, `ip+physdev`, … (dockflow). */
  match?: string;
  /** `true` when the container side could not be attributed (the record is still stored). */
  unattributed?: boolean;
}

export interface TcpInfo {
  flags?: string[];
  window?: number;
  reserved_bits?: number;
  urgent_pointer?: number;
  seq?: number;
  ack?: number;
  /** Hex of the TCP options (`OPT (...)`, `--log-tcp-options`). */
  options?: string;
}

export interface IcmpInfo {
  type?: number;
  code?: number;
  id?: number;
  seq?: number;
  /** Parameter problem pointer (`PARAMETER=`). */
  parameter?: number;
  /** Redirect gateway (`GATEWAY=`). */
  redirect?: string;
  /** Fragmentation-needed / packet-too-big MTU (`MTU=`). */
  mtu?: number;
}

/**
 * The packet quoted inside an ICMP error (`[SRC=… DST=… …]`), kept apart so its fields never leak into the outer
 * record.
 */
export interface EmbeddedPacket {
  source?: { ip?: string; port?: number };
  destination?: { ip?: string; port?: number };
  network?: { transport?: string; iana_number?: string };
  iptables?: IptablesInfo;
  /**
   * The quote is partial: the kernel printed TRUNCATED/INCOMPLETE inside it, an address is missing, the line was cut
   * inside it, or its `LEN=` (the original packet's) is more than the outer packet could carry.
   */
  incomplete?: boolean;
}

export interface IptablesInfo {
  /** `IN=` and `OUT=` as printed, `""` when empty (Elastic's form; ECS: `observer.ingress/egress.interface.name`). */
  input_device?: string;
  output_device?: string;
  ttl?: number;
  id?: number;
  length?: number;
  tos?: number;
  precedence_bits?: number;
  fragment_flags?: string[];
  fragment_offset?: number;
  flow_label?: number;
  /** Hex of IPv4 options (`OPT (...)` before `PROTO=`, `--log-ip-options`). */
  ip_options?: string;
  ether_type?: number;
  /** 802.1Q VLAN ID (`VID=`, nftables `log flags ether`). */
  vlan_id?: number;
  tcp?: TcpInfo;
  udp?: { length?: number };
  icmp?: IcmpInfo;
  ah?: { spi?: number; length?: number };
  esp?: { spi?: number };
  /** Bridge ports (br_netfilter): host-side veth names. */
  physin?: string;
  physout?: string;
  uid?: number;
  gid?: number;
  mark?: number;
  /** `INCOMPLETE [N bytes]`: the kernel could not read the whole header. */
  incomplete_bytes?: number;
  /** Quoted packet of an ICMP/ICMPv6 error. */
  embedded?: EmbeddedPacket;
  /** ARP payload (`ARP HTYPE=…`, `--log-macdecode` / nft `log flags ether`); MACs in ECS form. */
  arp?: { htype?: number; ptype?: number; opcode?: number; sender_mac?: string; sender_ip?: string; target_mac?: string; target_ip?: string };
  /** Ubiquiti (EdgeOS/UniFi) rule label `[<rule_set>-<rule_number>-<A|D|R>]` right before `IN=`. */
  ubiquiti?: { rule_set?: string; rule_number?: string; input_zone?: string; output_zone?: string };
}

export interface SyslogInfo {
  priority?: number;
  facility?: { code: number; name: string };
  severity?: { code: number; name: string };
  hostname?: string;
  appname?: string;
  procid?: string;
  msgid?: string;
  version?: number;
  structured_data?: Record<string, Record<string, string>>;
}

export interface FlowRecord {
  '@timestamp': string;
  ecs?: { version: string };
  event?: {
    /** Rule action from the log prefix as Elastic's integration reads it (`drop`, `accept`, `drop_input`, …). */
    action?: string;
    /** Where the record is stored, `<direction>/<stream entry ID>`: set on records the API returns (dockflow). */
    id?: string;
    /** When dockflow received or read the line (ISO 8601). */
    ingested?: string;
    /** The syslog message as received, when the store keeps it (`store.keepOriginal`). */
    original?: string;
    /** RELP: hash of the sender address and the message bytes, the same for a message received twice (dockflow). */
    hash?: string;
    kind?: 'event';
    category?: string[];
    type?: string[];
  };
  log?: {
    /** The LOG rule's `--log-prefix`, trimmed. */
    prefix?: string;
    syslog?: SyslogInfo;
    /** Kernel uptime stamp `[ 1253.212740 ]` in seconds, when the line carried one. */
    kernel_uptime?: number;
    /** Which envelope the line came in: rfc3164, rfc5424, kmsg, dmesg, journal, bare. */
    format?: string;
  };
  host?: { name?: string };
  observer?: {
    /** The syslog header's hostname: the machine whose kernel logged the packet. */
    name?: string;
    ingress?: { interface?: { name?: string }; zone?: string };
    egress?: { interface?: { name?: string }; zone?: string };
  };
  /** Ubiquiti rule labels: `rule.name` is the rule set, `rule.id` the rule number. */
  rule?: { id?: string; name?: string };
  /** Socket owner (`UID=`/`GID=`, `--log-uid`), as ECS keywords. */
  user?: { id?: string };
  group?: { id?: string };
  related?: { ip?: string[] };
  source: Endpoint;
  destination: Endpoint;
  network: {
    type?: 'ipv4' | 'ipv6' | 'arp';
    transport?: string;
    /** ECS keyword: the IANA protocol number as a decimal string. */
    iana_number?: string;
    /** 802.1Q VLAN ID (`VID=`) as an ECS keyword. */
    vlan?: { id?: string };
    direction: Direction;
    community_id?: string;
    bytes?: number;
  };
  iptables: IptablesInfo;
  /** The container side (source for egress/container-to-host, destination for ingress/host-to-container). */
  container?: ContainerRef;
  /** For internal traffic, the other container (dockflow). */
  peer_container?: ContainerRef;
  dockflow?: {
    /** mmdb build epochs that answered GeoIP/ASN lookups. */
    geo_build_epoch?: Record<string, number>;
    /** In answers to a container filter: which side of the flow the container is on. */
    container_role?: 'source' | 'destination' | 'both';
  };
}

/** Why a line produced no record. Counted per reason; never thrown. */
export type SkipReason =
  | 'empty'
  | 'not-netfilter' // a syslog/kernel line, but not a LOG line
  | 'bad-envelope' // the syslog header itself is malformed
  | 'truncated' // a LOG line cut before SRC/DST
  | 'bad-address' // SRC/DST present but not an IP address
  | 'oversize'; // longer than the configured limit

export const SKIP_REASONS: readonly SkipReason[] = ['empty', 'not-netfilter', 'bad-envelope', 'truncated', 'bad-address', 'oversize'];

export function isRecord(r: FlowRecord | SkipReason): r is FlowRecord {
  return typeof r !== 'string';
}
