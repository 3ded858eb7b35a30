import { parseIPv4, parseIPv6 } from '../net/ip.js';

/**
 * Special-purpose address ranges (IANA IPv4/IPv6 Special-Purpose Address Registries, RFC 6890 and successors).
 * GeoIP databases hold nothing useful for these, and a forensic reader wants "this went to a documentation range"
 * rather than an empty geo block, so the enricher records the class instead of looking the address up.
 */

export type AddressClass =
  | 'unspecified' // 0.0.0.0/32, ::/128
  | 'this-network' // 0.0.0.0/8 (RFC 791)
  | 'private' // RFC 1918
  | 'cgnat' // 100.64.0.0/10 shared address space (RFC 6598)
  | 'loopback'
  | 'link-local'
  | 'ietf-protocol' // 192.0.0.0/24, 2001::/23 protocol assignments (anycast services, ORCHID, …)
  | 'documentation' // RFC 5737, RFC 3849, RFC 9637
  | 'benchmarking' // 198.18.0.0/15, 2001:2::/48
  | 'multicast'
  | 'broadcast' // 255.255.255.255
  | 'reserved' // 240.0.0.0/4; IPv6 outside 2000::/3 not listed otherwise
  | 'unique-local' // fc00::/7
  | 'site-local' // fec0::/10, deprecated (RFC 3879)
  | 'ipv4-mapped' // ::ffff:0:0/96: a socket-API form that never appears on the wire, so a logged one is suspect
  | 'nat64' // 64:ff9b::/96, 64:ff9b:1::/48: the remote is the embedded IPv4 host, not this address
  | 'discard' // 100::/64 (RFC 6666)
  | 'teredo' // 2001::/32: locates the Teredo server, not the peer
  | '6to4' // 2002::/16: locates the relay's IPv4 tunnel end, not the peer
  | 'invalid'; // not an IP address at all; kept out of the lookup path

/**
 * `[prefix, length, class]`, first match wins, so a more specific entry comes before the block that covers it.
 * `undefined` marks a globally reachable hole inside a special block.
 */
type Entry4 = readonly [base: number, bits: number, cls: AddressClass | undefined];
type Entry6 = readonly [base: readonly [number, number, number, number], bits: number, cls: AddressClass | undefined];

const v4 = (a: number, b: number, c: number, d: number): number => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;

const TABLE4: readonly Entry4[] = [
  [v4(0, 0, 0, 0), 32, 'unspecified'],
  [v4(0, 0, 0, 0), 8, 'this-network'],
  [v4(10, 0, 0, 0), 8, 'private'],
  [v4(100, 64, 0, 0), 10, 'cgnat'],
  [v4(127, 0, 0, 0), 8, 'loopback'],
  [v4(169, 254, 0, 0), 16, 'link-local'],
  [v4(172, 16, 0, 0), 12, 'private'],
  [v4(192, 0, 0, 0), 24, 'ietf-protocol'],
  [v4(192, 0, 2, 0), 24, 'documentation'],
  [v4(192, 168, 0, 0), 16, 'private'],
  [v4(198, 18, 0, 0), 15, 'benchmarking'],
  [v4(198, 51, 100, 0), 24, 'documentation'],
  [v4(203, 0, 113, 0), 24, 'documentation'],
  [v4(224, 0, 0, 0), 4, 'multicast'],
  [v4(255, 255, 255, 255), 32, 'broadcast'],
  [v4(240, 0, 0, 0), 4, 'reserved'],
];

const TABLE6: readonly Entry6[] = [
  [[0, 0, 0, 0], 128, 'unspecified'],
  [[0, 0, 0, 1], 128, 'loopback'],
  [[0, 0, 0xffff, 0], 96, 'ipv4-mapped'],
  [[0x0064ff9b, 0, 0, 0], 96, 'nat64'],
  [[0x0064ff9b, 0x00010000, 0, 0], 48, 'nat64'],
  [[0x01000000, 0, 0, 0], 64, 'discard'],
  [[0x20010000, 0, 0, 0], 32, 'teredo'],
  [[0x20010002, 0, 0, 0], 48, 'benchmarking'],
  [[0x20010003, 0, 0, 0], 32, undefined], // AMT (RFC 7450), globally routed
  [[0x20010004, 0x01120000, 0, 0], 48, undefined], // AS112-v6 (RFC 7535), globally routed
  [[0x20010000, 0, 0, 0], 23, 'ietf-protocol'],
  [[0x20010db8, 0, 0, 0], 32, 'documentation'],
  [[0x20020000, 0, 0, 0], 16, '6to4'],
  [[0x3fff0000, 0, 0, 0], 20, 'documentation'],
  [[0xfc000000, 0, 0, 0], 7, 'unique-local'],
  [[0xfe800000, 0, 0, 0], 10, 'link-local'],
  [[0xfec00000, 0, 0, 0], 10, 'site-local'],
  [[0xff000000, 0, 0, 0], 8, 'multicast'],
  [[0x20000000, 0, 0, 0], 3, undefined], // global unicast
  [[0, 0, 0, 0], 0, 'reserved'], // everything else IANA has not allocated for unicast
];

/** True when the top `bits` bits of `a` and `b` agree (0 ≤ bits ≤ 32). */
function samePrefix(a: number, b: number, bits: number): boolean {
  return bits === 0 || (a ^ b) >>> (32 - bits) === 0;
}

function classify4(ip: number): AddressClass | undefined {
  for (const [base, bits, cls] of TABLE4) {
    if (samePrefix(ip, base, bits)) return cls;
  }
  return undefined;
}

function classify6(w: Uint32Array): AddressClass | undefined {
  for (const [base, bits, cls] of TABLE6) {
    let left = bits;
    let i = 0;
    while (left > 0 && samePrefix(w[i] as number, base[i] as number, left > 32 ? 32 : left)) {
      left -= 32;
      i++;
    }
    if (left <= 0) return cls;
  }
  return undefined;
}

/** Parsed addresses as 16-bit units (the parser's form), reused: classification runs synchronously to completion. */
const UNITS = new Uint16Array(8);
const WORDS = new Uint32Array(4);

/** The special-purpose class of an IPv4 or IPv6 address, or undefined for an ordinary global address. */
export function classifyAddress(ip: string): AddressClass | undefined {
  if (ip.indexOf(':') < 0) {
    return parseIPv4(ip, 0, ip.length, UNITS, 0) ? classify4((((UNITS[0] as number) << 16) | (UNITS[1] as number)) >>> 0) : 'invalid';
  }
  // A link-local address may carry its interface (`fe80::1%eth0`); the zone does not change the class.
  const zone = ip.indexOf('%');
  if (!parseIPv6(ip, 0, zone < 0 ? ip.length : zone, UNITS, 0)) return 'invalid';
  for (let i = 0; i < 4; i++) WORDS[i] = (((UNITS[2 * i] as number) << 16) | (UNITS[2 * i + 1] as number)) >>> 0;
  return classify6(WORDS);
}
