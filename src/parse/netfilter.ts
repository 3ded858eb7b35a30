/**
 * The payload of a netfilter `LOG` line (iptables/ip6tables `-j LOG`, nftables `log`), as the kernel prints it in
 * `net/netfilter/nf_log_syslog.c`:
 *
 *   <prefix>IN=<if> OUT=<if> [PHYSIN=<if>] [PHYSOUT=<if>] [MAC=<dst:src:type> | MACSRC= MACDST= [VPROTO= VID=] MACPROTO=]
 *   SRC= DST= LEN= TOS= PREC= TTL= ID= [CE] [DF] [MF] [FRAG:<off>] [OPT (<hex>)]             (IPv4)
 *   SRC= DST= LEN= TC= HOPLIMIT= FLOWLBL= [extension headers]                                (IPv6)
 *   PROTO=TCP SPT= DPT= [SEQ= ACK=] WINDOW= RES= <flags> URGP= [OPT (<hex>)]
 *   PROTO=UDP|UDPLITE SPT= DPT= LEN=
 *   PROTO=ICMP|ICMPv6 TYPE= CODE= [ID= SEQ= | PARAMETER= | POINTER= | GATEWAY=] [[<quoted packet>]] [MTU=]
 *   PROTO=AH|ESP SPI=   |   PROTO=<number>
 *   [INCOMPLETE [<n> bytes]] [UID= GID=] [MARK=0x<hex>]
 *   or, for ARP: ARP HTYPE= PTYPE= OPCODE= [MACSRC= IPSRC= MACDST= IPDST=]
 *
 * Every value is space-terminated, so the scanner walks the text once, token by token, identifying keys by their
 * first, second and last letters and length, and parsing numbers in place. It never throws: anything it does not
 * recognise is skipped, and what was parsed before a cut is kept.
 */
import type { EmbeddedPacket, FlowRecord, IptablesInfo, SkipReason } from '../record.js';
import { formatIPv6, parseIPv4, parseIPv6 } from '../net/ip.js';
import { communityId, communityIdV4 } from './community-id.js';
import type { BridgeMatcher } from './direction.js';
import { classifyDirection } from './direction.js';

export interface NetfilterOptions {
  isBridge: BridgeMatcher;
  /** Shared texts of IPv4 addresses; without one, each record gets its own. */
  ipv4Texts?: Ipv4Texts;
  /** False: no `network.community_id` (a SHA-1 per record) for a caller that never reads it. Default true. */
  communityId?: boolean;
}

/**
 * IPv4 address texts by value, in a direct-mapped table. A slice of the message would keep the whole message alive
 * wherever the address is kept as a key (the GeoIP cache holds up to 100,000), so a text made here is a copy; and
 * as most records repeat a few addresses, one string per address has its hash computed once and compares by
 * identity in such maps.
 */
export class Ipv4Texts {
  private readonly values = new Float64Array(IPV4_TEXT_SLOTS).fill(-1);
  private readonly texts = new Array<string>(IPV4_TEXT_SLOTS).fill('');
  private readonly codes: number[] = [];

  /** The text of `ip` (a u32), which `s` spells from `from` to `to`. */
  get(ip: number, s: string, from: number, to: number): string {
    const slot = (ip ^ (ip >>> 13)) & (IPV4_TEXT_SLOTS - 1);
    if (this.values[slot] === ip) return this.texts[slot] as string;
    const codes = this.codes;
    codes.length = 0;
    for (let i = from; i < to; i++) codes.push(s.charCodeAt(i));
    const text = String.fromCharCode(...codes);
    this.values[slot] = ip;
    this.texts[slot] = text;
    return text;
  }
}
const IPV4_TEXT_SLOTS = 4096;

/**
 * MAC address texts in ECS form (`02-42-AC-11-00-02`) by value, in a direct-mapped table like Ipv4Texts: a host's
 * traffic repeats a few MACs (the gateway's, its containers'), so most records reuse a text instead of building one.
 * Content-addressed, so one table serves every caller.
 */
const MAC_TEXT_SLOTS = 1024;
const macHigh = new Int32Array(MAC_TEXT_SLOTS).fill(-1);
const macLow = new Int32Array(MAC_TEXT_SLOTS).fill(-1);
const macTexts = new Array<string>(MAC_TEXT_SLOTS).fill('');

/** Value of the hex pair at `i` (char codes of `s`), or -1. */
function hexPair(s: string, i: number): number {
  let c = s.charCodeAt(i);
  let hi = c - 48;
  if (hi > 9) hi = (c | 32) - 87;
  c = s.charCodeAt(i + 1);
  let lo = c - 48;
  if (lo > 9) lo = (c | 32) - 87;
  return (hi >>> 0) > 15 || (lo >>> 0) > 15 ? -1 : (hi << 4) | lo;
}

/**
 * The MAC address `s` spells as six colon-separated hex pairs at `v` (17 characters), in ECS form; undefined when it
 * is not one.
 */
function macAt(s: string, v: number): string | undefined {
  const b0 = hexPair(s, v);
  const b1 = hexPair(s, v + 3);
  const b2 = hexPair(s, v + 6);
  const b3 = hexPair(s, v + 9);
  const b4 = hexPair(s, v + 12);
  const b5 = hexPair(s, v + 15);
  if ((b0 | b1 | b2 | b3 | b4 | b5) < 0) return undefined;
  if (s.charCodeAt(v + 2) !== 58 || s.charCodeAt(v + 5) !== 58 || s.charCodeAt(v + 8) !== 58 || s.charCodeAt(v + 11) !== 58 || s.charCodeAt(v + 14) !== 58) {
    return undefined;
  }
  const high = (b0 << 16) | (b1 << 8) | b2;
  const low = (b3 << 16) | (b4 << 8) | b5;
  const slot = (low ^ (low >>> 10) ^ (high * 31)) & (MAC_TEXT_SLOTS - 1);
  if (macLow[slot] === low && macHigh[slot] === high) return macTexts[slot];
  const text = s.slice(v, v + 17).toUpperCase().replaceAll(':', '-');
  macHigh[slot] = high;
  macLow[slot] = low;
  macTexts[slot] = text;
  return text;
}

/** Any MAC-like token in ECS form: `aa:bb:…` or `aa-bb-…` of any length, upper case, hyphens. */
export function ecsMac(text: string): string {
  return text.toUpperCase().replaceAll(':', '-');
}

const IANA_ICMP = 1;
const IANA_TCP = 6;
const IANA_UDP = 17;
const IANA_ESP = 50;
const IANA_AH = 51;
const IANA_ICMPV6 = 58;
const IANA_SCTP = 132;
const IANA_UDPLITE = 136;

/** ECS `network.transport` names (lowercase IANA keywords) of protocols the kernel logs by number. */
const TRANSPORT_BY_NUMBER: ReadonlyMap<number, string> = new Map([
  [0, 'hopopt'], [1, 'icmp'], [2, 'igmp'], [4, 'ipv4'], [6, 'tcp'], [17, 'udp'], [33, 'dccp'], [41, 'ipv6'],
  [46, 'rsvp'], [47, 'gre'], [50, 'esp'], [51, 'ah'], [58, 'ipv6-icmp'], [88, 'eigrp'], [89, 'ospf'], [94, 'ipip'],
  [103, 'pim'], [112, 'vrrp'], [115, 'l2tp'], [132, 'sctp'], [136, 'udplite'], [137, 'mpls-in-ip'],
]);

// Flag sets are shared, frozen arrays: a line's flags index one of them instead of allocating a new array.
const TCP_FLAG_NAMES = ['AE', 'CWR', 'ECE', 'URG', 'ACK', 'PSH', 'RST', 'SYN', 'FIN'];
const FRAG_FLAG_NAMES = ['CE', 'DF', 'MF'];
const TCP_FLAG_SETS = flagSets(TCP_FLAG_NAMES);
const FRAG_FLAG_SETS = flagSets(FRAG_FLAG_NAMES);
const FLAG_MF = 1;

/** Every subset of `names` (bit 0 = the last name), in the kernel's printing order. */
function flagSets(names: readonly string[]): readonly string[][] {
  const sets: string[][] = [];
  for (let mask = 0; mask < 1 << names.length; mask++) {
    sets.push(Object.freeze(names.filter((_, k) => (mask & (1 << (names.length - 1 - k))) !== 0)) as string[]);
  }
  return sets;
}

/*
 * IPv6 parse scratch. It never holds anything between calls (parsing is synchronous), so sharing it is invisible to
 * callers and saves a typed-array allocation per IPv6 address.
 */
const V6 = new Uint16Array(8);

/** What one packet header chain said: the logged packet, or the one an ICMP error quotes. */
class Packet {
  /** Shares IPv4 address texts between records when the caller keeps one (see Ipv4Texts). */
  constructor(readonly ipv4Texts: Ipv4Texts | undefined) {}

  /** Where a value reader stopped. */
  p = 0;
  family: 4 | 6 | 0 = 0;
  src: string | undefined = undefined;
  dst: string | undefined = undefined;
  /** The last IPv4 address read, as a u32, and SRC's and DST's (-1: not IPv4): community ID input without a re-parse. */
  v4 = -1;
  srcV4 = -1;
  dstV4 = -1;
  /** SRC=/DST= held something that is not an address. */
  badAddress = false;
  srcMac: string | undefined = undefined;
  dstMac: string | undefined = undefined;
  etherType: number | undefined = undefined;
  vlanId: number | undefined = undefined;
  physin: string | undefined = undefined;
  physout: string | undefined = undefined;
  length: number | undefined = undefined;
  tos: number | undefined = undefined;
  prec: number | undefined = undefined;
  ttl: number | undefined = undefined;
  id: number | undefined = undefined;
  fragFlags = 0;
  fragOffset: number | undefined = undefined;
  flowLabel: number | undefined = undefined;
  ipOptions: string | undefined = undefined;
  /** PROTO= has been seen: from here LEN= is the UDP length, ID=/SEQ= are ICMP echo fields, OPT is TCP's. */
  hasProto = false;
  transport: string | undefined = undefined;
  iana: number | undefined = undefined;
  /** Which header the next SPI= belongs to (AH or ESP; both print `SPI=`). */
  spiOwner = 0;
  spt: number | undefined = undefined;
  dpt: number | undefined = undefined;
  seq: number | undefined = undefined;
  ack: number | undefined = undefined;
  window: number | undefined = undefined;
  res: number | undefined = undefined;
  tcpFlags = 0;
  urgp: number | undefined = undefined;
  tcpOptions: string | undefined = undefined;
  udpLength: number | undefined = undefined;
  icmpType: number | undefined = undefined;
  icmpCode: number | undefined = undefined;
  icmpId: number | undefined = undefined;
  icmpSeq: number | undefined = undefined;
  icmpParameter: number | undefined = undefined;
  icmpGateway: string | undefined = undefined;
  icmpMtu: number | undefined = undefined;
  ahSpi: number | undefined = undefined;
  espSpi: number | undefined = undefined;
  uid: number | undefined = undefined;
  gid: number | undefined = undefined;
  mark: number | undefined = undefined;
  incompleteBytes: number | undefined = undefined;
  /** The kernel printed TRUNCATED / INCOMPLETE: it could not read the whole header. */
  incomplete = false;
  /** A quoted packet whose `]` never came: the line was cut inside it. */
  cut = false;
  embedded: Packet | undefined = undefined;
  isArp = false;
  arpHtype: number | undefined = undefined;
  arpPtype: number | undefined = undefined;
  arpOpcode: number | undefined = undefined;
  arpSrcMac: string | undefined = undefined;
  arpSrcIp: string | undefined = undefined;
  arpDstMac: string | undefined = undefined;
  arpDstIp: string | undefined = undefined;
}

/** Index of the space ending the token at `i`, or `end`. */
function tokenEnd(s: string, i: number, end: number): number {
  const k = s.indexOf(' ', i);
  return k < 0 || k > end ? end : k;
}

/** Decimal number at `i` (at most 10 digits, a u32 as the kernel prints it), or -1. Sets `pk.p` past it. */
function dec(pk: Packet, s: string, i: number, end: number): number {
  let v = 0;
  const start = i;
  for (; i < end; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) break;
    v = v * 10 + d;
  }
  pk.p = i;
  return i === start || i - start > 10 ? -1 : v;
}

/** Hex number at `i`, with or without `0x` (at most 8 digits), or -1. Sets `pk.p` past it. */
function hex(pk: Packet, s: string, i: number, end: number): number {
  if (s.charCodeAt(i) === 48 && (s.charCodeAt(i + 1) | 32) === 120) i += 2;
  let v = 0;
  const start = i;
  for (; i < end; i++) {
    const c = s.charCodeAt(i) | 32;
    let d = c - 48;
    if (d < 0 || d > 9) {
      d = c - 87;
      if (d < 10 || d > 15) break;
    }
    v = v * 16 + d;
  }
  pk.p = i;
  return i === start || i - start > 8 ? -1 : v;
}

/** `n` as a field value: -1 (unparsable) becomes undefined. */
function num(n: number): number | undefined {
  return n < 0 ? undefined : n;
}

/**
 * The address at `v` (ending at the next space), IPv6 normalised to RFC 5952 form, or undefined. Sets the family, and
 * `pk.v4` to the IPv4 address as a u32 (-1 otherwise). IPv4, the common case, is validated in the pass that finds its
 * end.
 */
function address(pk: Packet, s: string, v: number, end: number): string | undefined {
  let i = v;
  let parts = 0;
  let digits = 0;
  let octet = 0;
  let ip = 0;
  for (; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      octet = octet * 10 + c - 48;
      if (++digits > 3 || octet > 255) break;
    } else if (c === 46 && digits > 0 && parts < 3) {
      ip = ip * 256 + octet;
      parts++;
      digits = 0;
      octet = 0;
    } else {
      break;
    }
  }
  if ((i === end || s.charCodeAt(i) === 32) && parts === 3 && digits > 0) {
    pk.p = i;
    pk.family = 4;
    pk.v4 = ip * 256 + octet;
    return pk.ipv4Texts === undefined ? s.slice(v, i) : pk.ipv4Texts.get(pk.v4, s, v, i);
  }
  pk.v4 = -1;
  const e = tokenEnd(s, i, end);
  pk.p = e;
  if (parseIPv6(s, v, e, V6, 0)) {
    pk.family = 6;
    return formatIPv6(V6, 0);
  }
  // A value running into the end of the text was cut, not garbled: that is for the caller to call truncation.
  if (e < s.length) pk.badAddress = true;
  return undefined;
}

/** Index of the `]` closing the `[` just before `i`, honouring nesting, or `end` when the text was cut first. */
function closingBracket(s: string, i: number, end: number): number {
  let depth = 1;
  for (; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 91) depth++;
    else if (c === 93 && --depth === 0) return i;
  }
  return end;
}

/*
 * Keys are recognised from their first two letters (a 26×26 table of candidates), confirmed by their length, last
 * letter and the character after them (`=`, `:` or a space): four character reads per key, whatever its length.
 * A key's id is its position in this list plus one; `scan` switches on those ids.
 */
const KEYS: readonly string[] = [
  'IN=', 'OUT=', 'PHYSIN=', 'PHYSOUT=', 'MAC=', 'MACSRC=', 'MACDST=', 'MACPROTO=', 'VID=', 'SRC=', // 1-10
  'DST=', 'LEN=', 'TOS=', 'PREC=', 'TTL=', 'ID=', 'TC=', 'HOPLIMIT=', 'FLOWLBL=', 'PROTO=', // 11-20
  'SPT=', 'DPT=', 'SEQ=', 'ACK=', 'WINDOW=', 'RES=', 'URGP=', 'TYPE=', 'CODE=', 'PARAMETER=', // 21-30
  'GATEWAY=', 'MTU=', 'POINTER=', 'SPI=', 'UID=', 'GID=', 'MARK=', 'HTYPE=', 'PTYPE=', 'OPCODE=', // 31-40
  'IPSRC=', 'IPDST=', 'FRAG:', 'ID:', 'CE ', 'DF ', 'MF ', 'AE ', 'CWR ', 'ECE ', // 41-50
  'URG ', 'ACK ', 'PSH ', 'RST ', 'SYN ', 'FIN ', 'ARP ', 'OPT ', 'INCOMPLETE ', 'TRUNCATED ', // 51-60
  'AH ', 'ESP ', 'TUNNEL=', // 61-63
];

interface KeyTable {
  /** Per letter pair: where its candidates start in the arrays below, and how many there are. */
  first: Uint8Array;
  count: Uint8Array;
  /** Per candidate: key length, last letter, the character after the key, and the key's id. */
  length: Uint8Array;
  last: Uint8Array;
  terminator: Uint8Array;
  id: Uint8Array;
}

function keyTable(keys: readonly string[]): KeyTable {
  const byPair: number[][] = Array.from({ length: 26 * 26 }, () => []);
  keys.forEach((k, n) => byPair[(k.charCodeAt(0) - 65) * 26 + k.charCodeAt(1) - 65]?.push(n));
  const t: KeyTable = {
    first: new Uint8Array(26 * 26),
    count: new Uint8Array(26 * 26),
    length: new Uint8Array(keys.length),
    last: new Uint8Array(keys.length),
    terminator: new Uint8Array(keys.length),
    id: new Uint8Array(keys.length),
  };
  let slot = 0;
  byPair.forEach((candidates, pair) => {
    t.first[pair] = slot;
    t.count[pair] = candidates.length;
    for (const n of candidates) {
      const k = keys[n] ?? '';
      t.length[slot] = k.length - 1;
      t.last[slot] = k.charCodeAt(k.length - 2);
      t.terminator[slot] = k.charCodeAt(k.length - 1);
      t.id[slot] = n + 1;
      slot++;
    }
  });
  return t;
}

const KEY_TABLE = keyTable(KEYS);

/** Fills `pk` from the tokens in `s[i, end)`. `quoted` is true inside an ICMP error's `[...]`, which cannot nest. */
function scan(s: string, i: number, end: number, pk: Packet, quoted: boolean): void {
  const kt = KEY_TABLE;
  while (i < end) {
    const c0 = s.charCodeAt(i);
    if (c0 === 32) {
      i++;
      continue;
    }
    const l0 = c0 - 65;
    const l1 = s.charCodeAt(i + 1) - 65;
    let id = 0;
    let v = i + 1; // where the value starts, once the key is known
    if (l0 >= 0 && l0 < 26 && l1 >= 0 && l1 < 26) {
      const pair = l0 * 26 + l1;
      for (let k = kt.first[pair]!, e = k + kt.count[pair]!; k < e; k++) {
        const after = i + kt.length[k]!;
        const t = after < end ? s.charCodeAt(after) : 32;
        if (t === kt.terminator[k] && s.charCodeAt(after - 1) === kt.last[k]) {
          id = kt.id[k]!;
          v = t === 32 ? after : after + 1; // a bare word's value is nothing: stay on its space
          break;
        }
      }
    } else if (c0 === 91) {
      // `[SRC=... ]`: the packet an ICMP error quotes. Kept apart so it cannot overwrite the outer fields.
      const close = closingBracket(s, i + 1, end);
      if (!quoted && pk.embedded === undefined) {
        const inner = new Packet(pk.ipv4Texts);
        scan(s, i + 1, close, inner, true);
        inner.cut = close >= end;
        pk.embedded = inner;
      }
      i = close + 1;
      continue;
    }
    pk.p = v; // where a case that reads no value leaves the cursor
    switch (id) {
      case 10: // SRC
        pk.src = address(pk, s, v, end);
        pk.srcV4 = pk.v4;
        i = pk.p;
        continue;
      case 11: // DST
        pk.dst = address(pk, s, v, end);
        pk.dstV4 = pk.v4;
        i = pk.p;
        continue;
      case 12: // LEN: the IP length before PROTO=, the UDP length after it
        if (pk.hasProto) pk.udpLength = num(dec(pk, s, v, end));
        else pk.length = num(dec(pk, s, v, end));
        break;
      case 13: // TOS
        pk.tos = num(hex(pk, s, v, end));
        break;
      case 14: // PREC
        pk.prec = num(hex(pk, s, v, end));
        break;
      case 15: // TTL
      case 18: // HOPLIMIT
        pk.ttl = num(dec(pk, s, v, end));
        break;
      case 16: // ID: the IP ID before PROTO=, the ICMP echo identifier after it
        if (pk.hasProto) pk.icmpId = num(dec(pk, s, v, end));
        else pk.id = num(dec(pk, s, v, end));
        break;
      case 17: // TC
        pk.tos = num(dec(pk, s, v, end));
        break;
      case 19: // FLOWLBL
        pk.flowLabel = num(dec(pk, s, v, end));
        break;
      case 20: // PROTO
        protocol(pk, s, v, end);
        break;
      case 21: // SPT
        pk.spt = num(dec(pk, s, v, end));
        break;
      case 22: // DPT
        pk.dpt = num(dec(pk, s, v, end));
        break;
      case 23: // SEQ
        if (pk.iana === IANA_ICMP || pk.iana === IANA_ICMPV6) pk.icmpSeq = num(dec(pk, s, v, end));
        else pk.seq = num(dec(pk, s, v, end));
        break;
      case 24: // ACK= (the number; the flag is the bare word)
        pk.ack = num(dec(pk, s, v, end));
        break;
      case 25: // WINDOW
        pk.window = num(dec(pk, s, v, end));
        break;
      case 26: // RES
        pk.res = num(hex(pk, s, v, end));
        break;
      case 27: // URGP
        pk.urgp = num(dec(pk, s, v, end));
        break;
      case 28: // TYPE
        pk.icmpType = num(dec(pk, s, v, end));
        break;
      case 29: // CODE
        pk.icmpCode = num(dec(pk, s, v, end));
        break;
      case 30: // PARAMETER
        pk.icmpParameter = num(dec(pk, s, v, end));
        break;
      case 31: {
        // GATEWAY
        const e = tokenEnd(s, v, end);
        if (parseIPv4(s, v, e, V6, 0)) pk.icmpGateway = s.slice(v, e);
        i = e;
        continue;
      }
      case 32: // MTU
        pk.icmpMtu = num(dec(pk, s, v, end));
        break;
      case 33: // POINTER (ICMPv6 parameter problem, printed %08x)
        pk.icmpParameter = num(hex(pk, s, v, end));
        break;
      case 34: // SPI
        if (pk.spiOwner === IANA_AH) pk.ahSpi = num(hex(pk, s, v, end));
        else pk.espSpi = num(hex(pk, s, v, end));
        break;
      case 35: // UID
        pk.uid = num(dec(pk, s, v, end));
        break;
      case 36: // GID
        pk.gid = num(dec(pk, s, v, end));
        break;
      case 37: // MARK
        pk.mark = num(hex(pk, s, v, end));
        break;
      case 3: {
        // PHYSIN
        const e = tokenEnd(s, v, end);
        if (e > v) pk.physin = s.slice(v, e);
        i = e;
        continue;
      }
      case 4: {
        // PHYSOUT
        const e = tokenEnd(s, v, end);
        if (e > v) pk.physout = s.slice(v, e);
        i = e;
        continue;
      }
      case 5: {
        // MAC=dst:src:type: 14 bytes on Ethernet, 18 on VLAN devices, whatever the link type's header is elsewhere.
        const e = v + 41 < end && s.charCodeAt(v + 41) === 32 ? v + 41 : tokenEnd(s, v, end);
        if (e - v >= 41 && s.charCodeAt(v + 17) === 58 && s.charCodeAt(v + 35) === 58) {
          pk.dstMac = macAt(s, v);
          pk.srcMac = macAt(s, v + 18);
          const hi = hex(pk, s, v + 36, v + 38);
          const lo = hex(pk, s, v + 39, v + 41);
          pk.etherType = hi < 0 || lo < 0 ? undefined : hi * 256 + lo;
        }
        i = e;
        continue;
      }
      case 6: // MACSRC: the Ethernet source, or after `ARP` the sender hardware address
      case 7: {
        // MACDST
        const e = v + 17 < end && s.charCodeAt(v + 17) === 32 ? v + 17 : tokenEnd(s, v, end);
        const mac = e - v === 17 ? macAt(s, v) : e > v ? ecsMac(s.slice(v, e)) : undefined;
        if (id === 6) {
          if (pk.isArp) pk.arpSrcMac = mac;
          else pk.srcMac = mac;
        } else if (pk.isArp) pk.arpDstMac = mac;
        else pk.dstMac = mac;
        i = e;
        continue;
      }
      case 8: // MACPROTO
        pk.etherType = num(hex(pk, s, v, end));
        break;
      case 9: // VID
        pk.vlanId = num(dec(pk, s, v, end));
        break;
      case 38: // HTYPE
        pk.arpHtype = num(dec(pk, s, v, end));
        break;
      case 39: // PTYPE
        pk.arpPtype = num(hex(pk, s, v, end));
        break;
      case 40: // OPCODE
        pk.arpOpcode = num(dec(pk, s, v, end));
        break;
      case 41: // IPSRC
      case 42: {
        // IPDST
        const e = tokenEnd(s, v, end);
        const ip = parseIPv4(s, v, e, V6, 0) ? s.slice(v, e) : undefined;
        if (id === 41) pk.arpSrcIp = ip;
        else pk.arpDstIp = ip;
        i = e;
        continue;
      }
      case 43: // FRAG:<offset>
        pk.fragOffset = num(dec(pk, s, v, end));
        break;
      case 44: // ID:<hex>, the IPv6 fragment header's identification
        pk.id = num(hex(pk, s, v, end));
        break;
      case 45: // CE
        pk.fragFlags |= 4;
        break;
      case 46: // DF
        pk.fragFlags |= 2;
        break;
      case 47: // MF
        pk.fragFlags |= FLAG_MF;
        break;
      case 48: // AE
        pk.tcpFlags |= 256;
        break;
      case 49: // CWR
        pk.tcpFlags |= 128;
        break;
      case 50: // ECE
        pk.tcpFlags |= 64;
        break;
      case 51: // URG
        pk.tcpFlags |= 32;
        break;
      case 52: // ACK
        pk.tcpFlags |= 16;
        break;
      case 53: // PSH
        pk.tcpFlags |= 8;
        break;
      case 54: // RST
        pk.tcpFlags |= 4;
        break;
      case 55: // SYN
        pk.tcpFlags |= 2;
        break;
      case 56: // FIN
        pk.tcpFlags |= 1;
        break;
      case 57: // ARP
        pk.isArp = true;
        break;
      case 58: // OPT
        i = options(pk, s, v, end);
        continue;
      case 59: // INCOMPLETE
        i = incomplete(pk, s, v, end);
        continue;
      case 60: // TRUNCATED
        pk.incomplete = true;
        break;
      case 61: // AH extension header (IPv6, --log-ip-options)
        pk.spiOwner = IANA_AH;
        break;
      case 62: // ESP extension header (IPv6): nothing after it is readable
        pk.spiOwner = IANA_ESP;
        if (!pk.hasProto) setProtocol(pk, IANA_ESP);
        break;
      case 63: // TUNNEL=: a SIT device, whose MAC= was the outer IPv4 header, not Ethernet addresses
        pk.srcMac = undefined;
        pk.dstMac = undefined;
        pk.etherType = undefined;
        break;
      // Anything else (IN=/OUT= again, VPROTO=, a `)` or `]`, something unknown) holds nothing to keep.
    }
    // Values normally stop right at their space; only a garbled one needs a search for the token's end.
    i = pk.p;
    if (i < end && s.charCodeAt(i) !== 32) i = tokenEnd(s, i, end);
    i++;
  }
}

function setProtocol(pk: Packet, iana: number): void {
  pk.iana = iana;
  pk.transport = TRANSPORT_BY_NUMBER.get(iana);
}

/** PROTO=<name or number>. */
function protocol(pk: Packet, s: string, v: number, end: number): void {
  pk.hasProto = true;
  const e = tokenEnd(s, v, end);
  pk.p = e;
  const c = s.charCodeAt(v);
  let iana = -1;
  switch (e - v) {
    case 2:
      if (c === 65 && s.charCodeAt(v + 1) === 72) iana = IANA_AH;
      break;
    case 3:
      if (c === 84 && s.startsWith('TCP', v)) iana = IANA_TCP;
      else if (c === 85 && s.startsWith('UDP', v)) iana = IANA_UDP;
      else if (c === 69 && s.startsWith('ESP', v)) iana = IANA_ESP;
      break;
    case 4:
      if (s.startsWith('ICMP', v)) iana = IANA_ICMP;
      break;
    case 6:
      if (s.startsWith('ICMPv6', v)) iana = IANA_ICMPV6;
      break;
    case 7:
      if (s.startsWith('UDPLITE', v)) iana = IANA_UDPLITE;
      break;
  }
  if (iana < 0) {
    iana = dec(pk, s, v, e);
    pk.p = e;
    if (iana < 0 || iana > 255) return;
  }
  pk.spiOwner = iana;
  setProtocol(pk, iana);
}

/**
 * `OPT (<hex>)`: IPv4 options before PROTO=, TCP options after it. IPv6 prints its extension headers as
 * `OPT ( FRAG:... ) `, tokens that the main loop reads, so only the opening is consumed then.
 */
function options(pk: Packet, s: string, i: number, end: number): number {
  if (s.charCodeAt(i) !== 32 || s.charCodeAt(i + 1) !== 40) return tokenEnd(s, i, end);
  const from = i + 2;
  if (s.charCodeAt(from) === 32) return from;
  const close = s.indexOf(')', from);
  if (close < 0 || close >= end) return end;
  const text = s.slice(from, close);
  if (text === 'TRUNCATED') pk.incomplete = true;
  else if (pk.hasProto) pk.tcpOptions = text;
  else pk.ipOptions = text;
  return close + 1;
}

/** `INCOMPLETE [<n> bytes]` (header cut short), or a bare `INCOMPLETE` (IPv6 fragment with more to follow). */
function incomplete(pk: Packet, s: string, i: number, end: number): number {
  if (s.charCodeAt(i) !== 32 || s.charCodeAt(i + 1) !== 91) {
    pk.fragFlags |= FLAG_MF;
    return tokenEnd(s, i, end);
  }
  pk.incomplete = true;
  pk.incompleteBytes = num(dec(pk, s, i + 2, end));
  const close = s.indexOf(']', pk.p);
  return close < 0 || close >= end ? end : close + 1;
}

function iptablesOf(pk: Packet, inIf: string | undefined, outIf: string | undefined, prefix: PrefixInfo | undefined): IptablesInfo {
  const iana = pk.iana;
  const isTcp = iana === IANA_TCP;
  const isUdp = iana === IANA_UDP || iana === IANA_UDPLITE;
  const isIcmp = iana === IANA_ICMP || iana === IANA_ICMPV6;
  return {
    input_device: inIf,
    output_device: outIf,
    ttl: pk.ttl,
    id: pk.id,
    length: pk.length,
    tos: pk.tos,
    precedence_bits: pk.prec,
    fragment_flags: pk.fragFlags === 0 ? undefined : FRAG_FLAG_SETS[pk.fragFlags],
    fragment_offset: pk.fragOffset,
    flow_label: pk.flowLabel,
    ip_options: pk.ipOptions,
    ether_type: pk.etherType,
    vlan_id: pk.vlanId,
    tcp: isTcp
      ? {
          flags: TCP_FLAG_SETS[pk.tcpFlags],
          window: pk.window,
          reserved_bits: pk.res,
          urgent_pointer: pk.urgp,
          seq: pk.seq,
          ack: pk.ack,
          options: pk.tcpOptions,
        }
      : undefined,
    udp: isUdp ? { length: pk.udpLength } : undefined,
    icmp: isIcmp
      ? {
          type: pk.icmpType,
          code: pk.icmpCode,
          id: pk.icmpId,
          seq: pk.icmpSeq,
          parameter: pk.icmpParameter,
          redirect: pk.icmpGateway,
          mtu: pk.icmpMtu,
        }
      : undefined,
    ah: pk.ahSpi === undefined ? undefined : { spi: pk.ahSpi, length: undefined },
    esp: pk.espSpi === undefined ? undefined : { spi: pk.espSpi },
    physin: pk.physin,
    physout: pk.physout,
    uid: pk.uid,
    gid: pk.gid,
    mark: pk.mark,
    incomplete_bytes: pk.incompleteBytes,
    embedded: pk.embedded === undefined ? undefined : embeddedOf(pk.embedded, pk),
    arp: pk.isArp
      ? {
          htype: pk.arpHtype,
          ptype: pk.arpPtype,
          opcode: pk.arpOpcode,
          sender_mac: pk.arpSrcMac,
          sender_ip: pk.arpSrcIp,
          target_mac: pk.arpDstMac,
          target_ip: pk.arpDstIp,
        }
      : undefined,
    ubiquiti: prefix?.ubiquiti,
  };
}

function hasPorts(iana: number | undefined): boolean {
  return iana === IANA_TCP || iana === IANA_UDP || iana === IANA_UDPLITE || iana === IANA_SCTP;
}

/** Bytes an ICMP error spends before its quote: the smallest IPv4 or IPv6 header, and the ICMP header. */
const QUOTE_OFFSET_V4 = 20 + 8;
const QUOTE_OFFSET_V6 = 40 + 8;

/**
 * The quoted packet of `outer`. Its `LEN=` is the original packet's, so a quote longer than the room left in the
 * outer packet is partial by construction (routers quote at most 576 or 1280 bytes); so is one the line was cut in.
 */
function embeddedOf(pk: Packet, outer: Packet): EmbeddedPacket {
  const ported = hasPorts(pk.iana);
  const room = outer.length === undefined ? undefined : outer.length - (outer.family === 6 ? QUOTE_OFFSET_V6 : QUOTE_OFFSET_V4);
  return {
    source: { ip: pk.src, port: ported ? pk.spt : undefined },
    destination: { ip: pk.dst, port: ported ? pk.dpt : undefined },
    network: { transport: pk.transport, iana_number: ianaText(pk.iana) },
    iptables: iptablesOf(pk, undefined, undefined, undefined),
    incomplete:
      pk.incomplete || pk.cut || pk.src === undefined || pk.dst === undefined || (pk.length !== undefined && room !== undefined && pk.length > room),
  };
}

/** Decimal texts of protocol numbers: `network.iana_number` is an ECS keyword. */
const IANA_TEXTS: readonly string[] = Array.from({ length: 256 }, (_, n) => String(n));

function ianaText(iana: number | undefined): string | undefined {
  return iana === undefined ? undefined : IANA_TEXTS[iana];
}

/** What the log prefix says, read as Elastic's iptables integration reads it. */
interface PrefixInfo {
  action: string | undefined;
  ubiquiti: IptablesInfo['ubiquiti'];
}

/** Ubiquiti's one-letter actions; any other letter is kept lower-cased, as Elastic does. */
const UBIQUITI_ACTIONS: Readonly<Record<string, string>> = { d: 'drop', a: 'accept' };

/** `event.type` by action (Elastic's table), with `connection` when the record has both addresses. */
const DENIED = Object.freeze(['denied', 'connection']) as string[];
const ALLOWED = Object.freeze(['allowed', 'connection']) as string[];
const CONNECTION = Object.freeze(['connection']) as string[];
const DENIED_ONLY = Object.freeze(['denied']) as string[];
const ALLOWED_ONLY = Object.freeze(['allowed']) as string[];
const ACTION_TYPES: Readonly<Record<string, 'denied' | 'allowed'>> = { drop: 'denied', deny: 'denied', drop_input: 'denied', accept: 'allowed' };
const NETWORK_CATEGORY = Object.freeze(['network']) as string[];
const ECS = Object.freeze({ version: '8.16.0' });

function eventType(action: string | undefined, addressed: boolean): string[] | undefined {
  const kind = action === undefined ? undefined : ACTION_TYPES[action];
  if (kind === 'denied') return addressed ? DENIED : DENIED_ONLY;
  if (kind === 'allowed') return addressed ? ALLOWED : ALLOWED_ONLY;
  return addressed ? CONNECTION : undefined;
}

/** A word of letters, digits and `_` (grok's WORD) spanning `s[from, to)`. */
function isWord(s: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || ((c | 32) >= 97 && (c | 32) <= 122) || c === 95)) return false;
  }
  return true;
}

/**
 * Elastic's readings of the prefix `s[from, to)` (`to` is where `IN=` starts): a Ubiquiti label
 * `[<set>-<number>-<action>]` directly before `IN=`; else `iptables <WORD>:`; else, on a line with no syslog
 * hostname, `<WORD>:`. The set splits into input and output zones when it holds a `-`.
 */
function prefixInfo(s: string, from: number, to: number, hostnamed: boolean): PrefixInfo | undefined {
  if (to <= from) return undefined;
  if (s.charCodeAt(to - 1) === 93) {
    const open = s.lastIndexOf('[', to - 2);
    if (open >= from) {
      const actionDash = s.lastIndexOf('-', to - 2);
      const numberDash = actionDash > open ? s.lastIndexOf('-', actionDash - 1) : -1;
      if (numberDash > open) {
        const ruleSet = s.slice(open + 1, numberDash);
        const letter = s.slice(actionDash + 1, to - 1).toLowerCase();
        const zoneDash = ruleSet.indexOf('-');
        const outEnd = zoneDash < 0 ? -1 : ruleSet.indexOf('-', zoneDash + 1);
        return {
          action: UBIQUITI_ACTIONS[letter] ?? letter,
          ubiquiti: {
            rule_set: ruleSet,
            rule_number: s.slice(numberDash + 1, actionDash),
            input_zone: zoneDash < 0 ? undefined : ruleSet.slice(0, zoneDash),
            output_zone: zoneDash < 0 ? undefined : ruleSet.slice(zoneDash + 1, outEnd < 0 ? ruleSet.length : outEnd),
          },
        };
      }
    }
  }
  let e = to;
  while (e > from && s.charCodeAt(e - 1) === 32) e--;
  if (e <= from || s.charCodeAt(e - 1) !== 58) return undefined;
  let b = from;
  while (b < e && s.charCodeAt(b) === 32) b++;
  if (s.startsWith('iptables ', b)) {
    b += 9;
    while (b < e && s.charCodeAt(b) === 32) b++;
  } else if (hostnamed) {
    return undefined;
  }
  return isWord(s, b, e - 1) ? { action: s.slice(b, e - 1).toLowerCase(), ubiquiti: undefined } : undefined;
}

/** Trimmed `s[from, to)`, or undefined when only whitespace. */
function trimmed(s: string, from: number, to: number): string | undefined {
  while (from < to && s.charCodeAt(from) <= 32) from++;
  while (to > from && s.charCodeAt(to - 1) <= 32) to--;
  return to > from ? s.slice(from, to) : undefined;
}

/**
 * Parses the kernel LOG text starting at `start` in `text` (the prefix comes first). Never throws. `hostnamed`: the
 * syslog header named a host, which changes how Elastic's integration reads an action from the prefix.
 */
export function parseNetfilter(text: string, start: number, opts: NetfilterOptions, hostnamed = false): FlowRecord | SkipReason {
  const end = text.length;
  // The prefix is free text with no separator before IN=, so the first IN=<if> followed by OUT= starts the payload.
  let at = text.indexOf('IN=', start);
  let inEnd = 0;
  for (;;) {
    if (at < 0) return 'not-netfilter';
    inEnd = tokenEnd(text, at + 3, end);
    if (text.startsWith(' OUT=', inEnd)) break;
    // Cut within ` OUT=`: a LOG line all the same.
    if (end - inEnd < 5 && ' OUT='.startsWith(text.slice(inEnd, end))) return 'truncated';
    at = text.indexOf('IN=', at + 3);
  }
  const inIf = text.slice(at + 3, inEnd);
  const outStart = inEnd + 5;
  const outEnd = tokenEnd(text, outStart, end);
  const outIf = text.slice(outStart, outEnd);

  const pk = new Packet(opts.ipv4Texts);
  scan(text, outEnd, end, pk, false);

  let src = pk.src;
  let dst = pk.dst;
  if (pk.isArp) {
    src = pk.arpSrcIp;
    dst = pk.arpDstIp;
  } else if (src === undefined || dst === undefined) {
    return pk.badAddress ? 'bad-address' : 'truncated';
  }

  const iana = pk.iana;
  const ported = hasPorts(iana);
  const sport = ported ? pk.spt : undefined;
  const dport = ported ? pk.dpt : undefined;
  let cid: string | undefined;
  if (iana !== undefined && src !== undefined && dst !== undefined && opts.communityId !== false) {
    // An ICMP line without TYPE= (a later fragment, a cut header) hashes as type 0 code 0, as Elastic's
    // community_id processor does, so the two agree on every line.
    const icmp = iana === IANA_ICMP || iana === IANA_ICMPV6;
    const type = pk.icmpType ?? (icmp ? 0 : undefined);
    const code = pk.icmpCode ?? (icmp ? 0 : undefined);
    cid =
      pk.srcV4 >= 0 && pk.dstV4 >= 0
        ? communityIdV4(iana, pk.srcV4, sport, pk.dstV4, dport, type, code)
        : communityId(iana, src, sport, dst, dport, type, code);
  }

  const prefix = prefixInfo(text, start, at, hostnamed);
  const ubiquiti = prefix?.ubiquiti;
  const action = prefix?.action;
  const uid = pk.uid;
  const gid = pk.gid;
  const vlan = pk.vlanId;
  return {
    '@timestamp': '',
    ecs: ECS,
    event: {
      action,
      ingested: undefined,
      id: undefined,
      kind: 'event',
      category: NETWORK_CATEGORY,
      type: eventType(action, src !== undefined && dst !== undefined),
    },
    log: { prefix: trimmed(text, start, at), syslog: undefined, kernel_uptime: undefined, format: undefined },
    host: undefined,
    observer: {
      name: undefined,
      ingress:
        inIf === '' && ubiquiti?.input_zone === undefined
          ? undefined
          : { interface: inIf === '' ? undefined : { name: inIf }, zone: ubiquiti?.input_zone },
      egress:
        outIf === '' && ubiquiti?.output_zone === undefined
          ? undefined
          : { interface: outIf === '' ? undefined : { name: outIf }, zone: ubiquiti?.output_zone },
    },
    rule: ubiquiti === undefined ? undefined : { id: ubiquiti.rule_number, name: ubiquiti.rule_set },
    user: uid === undefined ? undefined : { id: String(uid) },
    group: gid === undefined ? undefined : { id: String(gid) },
    related: src === undefined ? (dst === undefined ? undefined : { ip: [dst] }) : { ip: dst === undefined || dst === src ? [src] : [src, dst] },
    source: {
      ip: src,
      port: sport,
      mac: pk.srcMac ?? pk.arpSrcMac,
      geo: undefined,
      as: undefined,
      address_class: undefined,
    },
    destination: {
      ip: dst,
      port: dport,
      mac: pk.dstMac ?? pk.arpDstMac,
      geo: undefined,
      as: undefined,
      address_class: undefined,
    },
    network: {
      type: pk.isArp ? 'arp' : pk.family === 6 ? 'ipv6' : 'ipv4',
      transport: pk.transport,
      iana_number: ianaText(iana),
      vlan: vlan === undefined ? undefined : { id: String(vlan) },
      direction: classifyDirection(inIf, outIf, opts.isBridge),
      community_id: cid,
      bytes: pk.length,
    },
    iptables: iptablesOf(pk, inIf, outIf, prefix),
    container: undefined,
    peer_container: undefined,
    dockflow: undefined,
  };
}
