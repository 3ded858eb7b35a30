/**
 * Addresses as numbers for CIDR matching: IPv4 as one uint32, IPv6 as four uint32 words. A CIDR compiles to an
 * inclusive numeric range per word, so a match is a few integer comparisons and no allocation for IPv4.
 */

/** The IPv4 address as an unsigned 32-bit number, or -1 when the text is not a dotted quad. */
export function ipv4ToNumber(s: string): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255) return -1;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      if (++digits > 3) return -1;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0 || part > 255) return -1;
  return value * 256 + part;
}

/** Rules test the same record's address one after another: the last text parsed is remembered. */
let lastText: string | undefined;
let lastValue = -1;
function cachedIpv4(s: string): number {
  if (s !== lastText) {
    lastValue = ipv4ToNumber(s);
    lastText = s;
  }
  return lastValue;
}

/** The IPv6 address as four 32-bit words (an embedded IPv4 tail allowed), or undefined. */
export function ipv6ToWords(s: string): [number, number, number, number] | undefined {
  if (s.indexOf(':') < 0) return undefined;
  let text = s;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  const groups: number[] = [];
  const dbl = text.indexOf('::');
  if (dbl !== text.lastIndexOf('::')) return undefined;
  const parse = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const pieces = part.split(':');
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      if (i === pieces.length - 1 && p.includes('.')) {
        const v4 = ipv4ToNumber(p);
        if (v4 < 0) return undefined;
        out.push(Math.floor(v4 / 65536), v4 % 65536);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
      out.push(parseInt(p, 16));
    }
    return out;
  };
  if (dbl >= 0) {
    const head = parse(text.slice(0, dbl));
    const tail = parse(text.slice(dbl + 2));
    if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined;
    groups.push(...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  } else {
    const all = parse(text);
    if (all === undefined || all.length !== 8) return undefined;
    groups.push(...all);
  }
  return [groups[0]! * 65536 + groups[1]!, groups[2]! * 65536 + groups[3]!, groups[4]! * 65536 + groups[5]!, groups[6]! * 65536 + groups[7]!];
}

/** A CIDR or single address as the numeric range it covers. */
export type AddressRange = { v: 4; lo: number; hi: number } | { v: 6; lo: number[]; hi: number[] };

/** Parses `10.0.0.0/8`, `1.2.3.4`, `2001:db8::/32`; undefined when malformed. */
export function parseCidr(text: string): AddressRange | undefined {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const v4 = ipv4ToNumber(ip);
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
