/**
 * Community ID v1 flow hashing (https://github.com/corelight/community-id-spec): `1:` + base64(SHA-1(seed, addresses,
 * protocol, ports)), with the endpoints ordered so both directions of a flow hash alike, and ICMP/ICMPv6 type/code
 * mapped to port equivalents the way Zeek does.
 *
 * The hash input is at most 40 bytes, so SHA-1 runs over a single 64-byte block in plain JS: for inputs this small that
 * is several times faster than a call into node:crypto, and this runs once per parsed line.
 */

import { parseIPv4, parseIPv6 } from '../net/ip.js';

/** ICMP types whose reply type stands in for the destination port (Zeek's ICMP4_counterpart). */
const ICMP4_COUNTERPART: ReadonlyMap<number, number> = new Map([
  [8, 0], [0, 8], // echo
  [13, 14], [14, 13], // timestamp
  [15, 16], [16, 15], // information
  [10, 9], [9, 10], // router solicitation / advertisement
  [17, 18], [18, 17], // address mask
]);

/** ICMPv6 types likewise (Zeek's ICMP6_counterpart). */
const ICMP6_COUNTERPART: ReadonlyMap<number, number> = new Map([
  [128, 129], [129, 128], // echo
  [130, 131], [131, 130], // multicast listener query / report
  [133, 134], [134, 133], // router solicitation / advertisement
  [135, 136], [136, 135], // neighbour solicitation / advertisement
  [139, 140], [140, 139], // who-are-you
  [144, 145], [145, 144], // home agent address discovery
]);

const B64_CODES: readonly number[] = Array.from(
  'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/',
  (ch) => ch.charCodeAt(0),
);

/*
 * Scratch buffers. They never hold anything between calls (everything below runs synchronously to completion), so
 * sharing them is invisible to callers; they save two typed-array allocations per line on the hot path.
 */
const HALVES = new Uint16Array(20); // the hash input as big-endian 16-bit units
const ADDR = new Uint16Array(16); // parsed source (0..7) and destination (8..15) addresses
const W = new Int32Array(80); // SHA-1 message schedule

/** Parses an IPv4 or IPv6 address into `ADDR[off]`; returns the number of 16-bit units (2 or 8), or 0. */
function parseAddress(ip: string, off: number): number {
  if (ip.indexOf(':') >= 0) return parseIPv6(ip, 0, ip.length, ADDR, off) ? 8 : 0;
  return parseIPv4(ip, 0, ip.length, ADDR, off) ? 2 : 0;
}

/**
 * Community ID v1 of a flow. `transport` is the IANA protocol number. For ICMP (1) and ICMPv6 (58) pass the type and
 * code instead of ports. Returns undefined when an address does not parse, the two are of different families, or a
 * protocol that needs ports (TCP, UDP, SCTP) or a type (ICMP) lacks them.
 */
export function communityId(
  transport: number,
  srcIp: string,
  srcPort: number | undefined,
  dstIp: string,
  dstPort: number | undefined,
  icmpType?: number,
  icmpCode?: number,
  seed = 0,
): string | undefined {
  const n = parseAddress(srcIp, 0);
  if (n === 0 || parseAddress(dstIp, 8) !== n) return undefined;
  return flowHash(n, transport, srcPort, dstPort, icmpType, icmpCode, seed);
}

/** `communityId` for IPv4 addresses given as u32 numbers (what a parser has already computed). */
export function communityIdV4(
  transport: number,
  srcIp: number,
  srcPort: number | undefined,
  dstIp: number,
  dstPort: number | undefined,
  icmpType?: number,
  icmpCode?: number,
  seed = 0,
): string | undefined {
  ADDR[0] = srcIp >>> 16;
  ADDR[1] = srcIp & 0xffff;
  ADDR[8] = dstIp >>> 16;
  ADDR[9] = dstIp & 0xffff;
  return flowHash(2, transport, srcPort, dstPort, icmpType, icmpCode, seed);
}

/** The Community ID of the `n`-unit addresses in `ADDR` (source at 0, destination at 8). */
function flowHash(
  n: number,
  transport: number,
  srcPort: number | undefined,
  dstPort: number | undefined,
  icmpType: number | undefined,
  icmpCode: number | undefined,
  seed: number,
): string | undefined {
  let sp = 0;
  let dp = 0;
  let hasPorts = true;
  let oneWay = false;
  if (transport === 1 || transport === 58) {
    if (icmpType === undefined) return undefined;
    const counterpart = (transport === 1 ? ICMP4_COUNTERPART : ICMP6_COUNTERPART).get(icmpType);
    sp = icmpType;
    if (counterpart === undefined) {
      dp = icmpCode ?? 0;
      oneWay = true;
    } else {
      dp = counterpart;
    }
  } else if (transport === 6 || transport === 17 || transport === 132) {
    if (srcPort === undefined || dstPort === undefined) return undefined;
    sp = srcPort;
    dp = dstPort;
  } else {
    hasPorts = false;
  }

  let srcFirst = true;
  if (!oneWay) {
    let cmp = 0;
    for (let k = 0; k < n && cmp === 0; k++) cmp = ADDR[k]! - ADDR[8 + k]!;
    srcFirst = cmp < 0 || (cmp === 0 && sp <= dp);
  }
  const h = HALVES;
  h[0] = seed;
  let j = 1;
  const a = srcFirst ? 0 : 8;
  const b = srcFirst ? 8 : 0;
  for (let k = 0; k < n; k++) h[j++] = ADDR[a + k]!;
  for (let k = 0; k < n; k++) h[j++] = ADDR[b + k]!;
  h[j++] = (transport & 255) << 8;
  if (hasPorts) {
    h[j++] = srcFirst ? sp : dp;
    h[j++] = srcFirst ? dp : sp;
  }
  return sha1Base64(h, j);
}

/** SHA-1 of `units` 16-bit big-endian units (at most 27, i.e. one block), as a versioned Community ID. */
function sha1Base64(h: Uint16Array, units: number): string {
  const w = W;
  const words = units >> 1;
  for (let k = 0; k < words; k++) w[k] = (h[2 * k]! << 16) | h[2 * k + 1]!;
  // The input is always a whole number of 32-bit words (the spec aligns it), so padding starts a fresh word.
  w[words] = 0x80000000 | 0;
  for (let k = words + 1; k < 15; k++) w[k] = 0;
  w[15] = units * 16;
  for (let k = 16; k < 80; k++) {
    const x = w[k - 3]! ^ w[k - 8]! ^ w[k - 14]! ^ w[k - 16]!;
    w[k] = (x << 1) | (x >>> 31);
  }
  let a = 0x67452301;
  let b = 0xefcdab89 | 0;
  let c = 0x98badcfe | 0;
  let d = 0x10325476;
  let e = 0xc3d2e1f0 | 0;
  let t: number;
  let k = 0;
  for (; k < 20; k++) {
    t = (((a << 5) | (a >>> 27)) + ((b & c) | (~b & d)) + e + 0x5a827999 + w[k]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  for (; k < 40; k++) {
    t = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + 0x6ed9eba1 + w[k]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  for (; k < 60; k++) {
    t = (((a << 5) | (a >>> 27)) + ((b & c) | (b & d) | (c & d)) + e - 0x70e44324 + w[k]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  for (; k < 80; k++) {
    t = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e - 0x359d3e2a + w[k]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  return versionedBase64(
    (a + 0x67452301) | 0,
    (b + 0xefcdab89) | 0,
    (c + 0x98badcfe) | 0,
    (d + 0x10325476) | 0,
    (e + 0xc3d2e1f0) | 0,
  );
}

/** `1:` + base64 of the 20 big-endian bytes of five 32-bit words (one call, no intermediate strings). */
function versionedBase64(w0: number, w1: number, w2: number, w3: number, w4: number): string {
  const c = B64_CODES;
  return String.fromCharCode(
    49, // '1'
    58, // ':'
    c[w0 >>> 26]!, c[(w0 >>> 20) & 63]!, c[(w0 >>> 14) & 63]!, c[(w0 >>> 8) & 63]!, c[(w0 >>> 2) & 63]!,
    c[((w0 & 3) << 4) | (w1 >>> 28)]!, c[(w1 >>> 22) & 63]!, c[(w1 >>> 16) & 63]!, c[(w1 >>> 10) & 63]!,
    c[(w1 >>> 4) & 63]!, c[((w1 & 15) << 2) | (w2 >>> 30)]!, c[(w2 >>> 24) & 63]!, c[(w2 >>> 18) & 63]!,
    c[(w2 >>> 12) & 63]!, c[(w2 >>> 6) & 63]!, c[w2 & 63]!,
    c[w3 >>> 26]!, c[(w3 >>> 20) & 63]!, c[(w3 >>> 14) & 63]!, c[(w3 >>> 8) & 63]!, c[(w3 >>> 2) & 63]!,
    c[((w3 & 3) << 4) | (w4 >>> 28)]!, c[(w4 >>> 22) & 63]!, c[(w4 >>> 16) & 63]!, c[(w4 >>> 10) & 63]!,
    c[(w4 >>> 4) & 63]!, c[(w4 & 15) << 2]!,
    61, // '=': 20 bytes leave 2 over, so one pad character
  );
}
