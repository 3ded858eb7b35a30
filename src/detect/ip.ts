/**
 * Addresses as numbers for CIDR matching: IPv4 as one uint32, IPv6 as four uint32 words. A CIDR compiles to an
 * inclusive numeric range per word, so a match is a few integer comparisons and no allocation for IPv4.
 */

import { ipv4Number, ipv6Words } from '../net/ip.js';

export { ipv4Number as ipv4ToNumber };

/** Rules test the same record's address one after another: the last text parsed is remembered. */
let lastText: string | undefined;
let lastValue = -1;
function cachedIpv4(s: string): number {
  if (s !== lastText) {
    lastValue = ipv4Number(s);
    lastText = s;
  }
  return lastValue;
}

/** The IPv6 address as four 32-bit words (an embedded IPv4 tail allowed), or undefined. */
export function ipv6ToWords(s: string): [number, number, number, number] | undefined {
  const w = ipv6Words(s);
  return w === undefined ? undefined : [w[0]!, w[1]!, w[2]!, w[3]!];
}

/** A CIDR or single address as the numeric range it covers. */
export type AddressRange = { v: 4; lo: number; hi: number } | { v: 6; lo: number[]; hi: number[] };

/** Parses `10.0.0.0/8`, `1.2.3.4`, `2001:db8::/32`; undefined when malformed. */
export function parseCidr(text: string): AddressRange | undefined {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const v4 = ipv4Number(ip);
  if (v4 >= 0) {
    const prefix = prefixText === undefined ? 32 : Number(prefixText);
    if (prefix > 32) return undefined;
    const size = 2 ** (32 - prefix);
    const lo = Math.floor(v4 / size) * size;
    return { v: 4, lo, hi: lo + size - 1 };
  }
  const words = ipv6ToWords(ip);
  if (words === undefined) return undefined;
  const prefix = prefixText === undefined ? 128 : Number(prefixText);
  if (prefix > 128) return undefined;
  const lo: number[] = [];
  const hi: number[] = [];
  for (let w = 0; w < 4; w++) {
    const bits = Math.max(0, Math.min(32, prefix - w * 32));
    const size = 2 ** (32 - bits);
    const l = Math.floor(words[w]! / size) * size;
    lo.push(l);
    hi.push(l + size - 1);
  }
  return { v: 6, lo, hi };
}

/**
 * A matcher for a set of ranges: IPv4 ranges sorted for a binary search, IPv6 ranges checked in turn (rare in
 * rules). Accepts the address as the record holds it (text).
 */
export function rangeMatcher(ranges: readonly AddressRange[]): (ip: string | undefined) => boolean {
  const v4 = ranges.filter((r): r is Extract<AddressRange, { v: 4 }> => r.v === 4).sort((a, b) => a.lo - b.lo);
  const v6 = ranges.filter((r): r is Extract<AddressRange, { v: 6 }> => r.v === 6);
  const los = Float64Array.from(v4.map((r) => r.lo));
  const his = Float64Array.from(v4.map((r) => r.hi));
  // Overlapping ranges: the running maximum of `hi` makes the search's answer exact.
  for (let i = 1; i < his.length; i++) if (his[i]! < his[i - 1]!) his[i] = his[i - 1]!;
  const n = los.length;
  return (ip) => {
    if (ip === undefined) return false;
    const a = cachedIpv4(ip);
    if (a >= 0) {
      let lo = 0;
      let hi = n - 1;
      let found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (los[mid]! <= a) {
          found = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      return found >= 0 && a <= his[found]!;
    }
    if (v6.length === 0) return false;
    const w = ipv6ToWords(ip);
    if (w === undefined) return false;
    for (const r of v6) {
      let inside = true;
      for (let i = 0; i < 4 && inside; i++) inside = w[i]! >= r.lo[i]! && w[i]! <= r.hi[i]!;
      if (inside) return true;
    }
    return false;
  };
}
