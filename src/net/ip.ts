/**
 * The one IP-address module: parsing IPv4/IPv6 text (on the parse hot path, so into caller-owned 16-bit units, no
 * allocation), one canonical text per address (the key every index and the ledger share), a fixed-width sortable form
 * (so that a CIDR is one contiguous range of strings, as in a lexicographically ordered Redis sorted set), CIDR
 * ranges, and the few classifications the service needs. Plain numbers and strings throughout: no BigInt.
 */

/**
 * Parses an IPv4 dotted quad from `s[from, to)` into two 16-bit units at `out[off]`. Returns false when it is not
 * one.
 */
export function parseIPv4(s: string, from: number, to: number, out: Uint16Array, off: number): boolean {
  let part = 0;
  let digits = 0;
  let value = 0;
  let hi = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++digits > 3) return false;
      value = value * 10 + (c - 48);
    } else if (c === 46 && digits > 0 && part < 3) {
      if (value > 255) return false;
      if (part === 0) hi = value << 8;
      else if (part === 1) out[off] = hi | value;
      else hi = value << 8;
      part++;
      digits = 0;
      value = 0;
    } else {
      return false;
    }
  }
  if (part !== 3 || digits === 0 || value > 255) return false;
  out[off + 1] = hi | value;
  return true;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 32;
  if (l >= 97 && l <= 102) return l - 87;
  return -1;
}

/**
 * Parses any textual IPv6 address (fully expanded as the kernel prints it, or compressed, with an optional dotted
 * IPv4 tail) from `s[from, to)` into eight 16-bit units at `out[off]`. Returns false when it is not one.
 */
export function parseIPv6(s: string, from: number, to: number, out: Uint16Array, off: number): boolean {
  let n = 0; // groups written
  let gap = -1; // group index where '::' stood
  let i = from;
  if (to - from < 2) return false;
  if (s.charCodeAt(i) === 58) {
    if (s.charCodeAt(i + 1) !== 58) return false;
    gap = 0;
    i += 2;
    if (i === to) {
      out.fill(0, off, off + 8);
      return true;
    }
  }
  for (;;) {
    if (n === 8) return false;
    let value = 0;
    let digits = 0;
    const groupStart = i;
    while (i < to) {
      const d = hexDigit(s.charCodeAt(i));
      if (d < 0) break;
      if (++digits > 4) return false;
      value = (value << 4) | d;
      i++;
    }
    if (i < to && s.charCodeAt(i) === 46) {
      // Dotted IPv4 tail: takes two groups and must end the address.
      if (n > 6 || !parseIPv4(s, groupStart, to, out, off + n)) return false;
      n += 2;
      break;
    }
    if (digits === 0) return false;
    out[off + n++] = value;
    if (i === to) break;
    if (s.charCodeAt(i) !== 58) return false;
    i++;
    if (i < to && s.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = n;
      i++;
      if (i === to) break;
    } else if (i === to) {
      return false;
    }
  }
  if (gap < 0) return n === 8;
  if (n === 8) return false;
  const tail = n - gap;
  const shift = 8 - n;
  for (let k = tail - 1; k >= 0; k--) out[off + gap + shift + k] = out[off + gap + k] ?? 0;
  out.fill(0, off + gap, off + gap + shift);
  return true;
}

/** Formats eight 16-bit units at `a[off]` the RFC 5952 way (lowercase, no leading zeros, longest zero run as `::`). */
export function formatIPv6(a: Uint16Array, off: number): string {
  let bestAt = -1;
  let bestLen = 1; // a single zero group is never compressed
  for (let k = 0; k < 8; ) {
    if (a[off + k] !== 0) {
      k++;
      continue;
    }
    let e = k + 1;
    while (e < 8 && a[off + e] === 0) e++;
    if (e - k > bestLen) {
      bestAt = k;
      bestLen = e - k;
    }
    k = e;
  }
  // IPv4-mapped addresses keep their dotted tail (RFC 5952 section 5).
  if (bestAt === 0 && bestLen === 5 && a[off + 5] === 0xffff) {
    const g6 = a[off + 6] ?? 0;
    const g7 = a[off + 7] ?? 0;
    return `::ffff:${g6 >> 8}.${g6 & 255}.${g7 >> 8}.${g7 & 255}`;
  }
  let s = '';
  for (let k = 0; k < 8; k++) {
    if (k === bestAt) {
      s += k === 0 ? '::' : ':';
      k += bestLen - 1;
      continue;
    }
    s += (a[off + k] ?? 0).toString(16);
    if (k < 7) s += ':';
  }
  return s;
}

/** Scratch units; everything here runs synchronously to completion, so sharing them is invisible to callers. */
const SCRATCH = new Uint16Array(8);

/**
 * One textual form per address, shared by everything that keys on addresses (indexes, the attribution ledger): IPv4
 * as it is, IPv6 in RFC 5952 form (the kernel prints it fully expanded); undefined when it is neither.
 */
export function canonicalIp(ip: string): string | undefined {
  if (parseIPv4(ip, 0, ip.length, SCRATCH, 0)) return ip;
  if (parseIPv6(ip, 0, ip.length, SCRATCH, 0)) return formatIPv6(SCRATCH, 0);
  return undefined;
}

/** Parses `ip` into SCRATCH: the number of 16-bit units (2 for IPv4, 8 for IPv6), or 0. */
function parseInto(ip: string): 0 | 2 | 8 {
  if (ip.indexOf(':') >= 0) return parseIPv6(ip, 0, ip.length, SCRATCH, 0) ? 8 : 0;
  return parseIPv4(ip, 0, ip.length, SCRATCH, 0) ? 2 : 0;
}

const HEX4 = (u: number): string => u.toString(16).padStart(4, '0');

function sortableOf(units: number, a: Uint16Array): string {
  let s = units === 2 ? '4' : '6';
  for (let k = 0; k < units; k++) s += HEX4(a[k] ?? 0);
  return s;
}

/**
 * The fixed-width sortable form: `4` + 8 hex digits or `6` + 32 hex digits, lowercase. Within a family, the string
 * order is the numeric order of the addresses, so every CIDR is one contiguous range of these strings. Undefined when
 * `ip` is not an address.
 */
export function sortableIp(ip: string): string | undefined {
  const units = parseInto(ip);
  return units === 0 ? undefined : sortableOf(units, SCRATCH);
}

/** The canonical text of a sortable form; undefined when `s` is not one. */
export function ipFromSortable(s: string): string | undefined {
  const units = s.length === 9 && s.charCodeAt(0) === 52 ? 2 : s.length === 33 && s.charCodeAt(0) === 54 ? 8 : 0;
  if (units === 0 || !/^[0-9a-f]+$/.test(s.slice(1))) return undefined;
  const a = new Uint16Array(8);
  for (let k = 0; k < units; k++) a[k] = parseInt(s.slice(1 + 4 * k, 5 + 4 * k), 16);
  if (units === 8) return formatIPv6(a, 0);
  const g0 = a[0]!;
  const g1 = a[1]!;
  return `${g0 >> 8}.${g0 & 255}.${g1 >> 8}.${g1 & 255}`;
}

/** An address or a CIDR as the inclusive range of its sortable forms. */
export interface IpRange {
  version: 4 | 6;
  prefixLength: number;
  /** Sortable forms of the first and last address of the range. */
  first: string;
  last: string;
  /** The canonical address when the range is a single host. */
  exact?: string;
}

/**
 * Parses `1.2.3.4`, `10.0.0.0/8`, `2001:db8::/32` (host bits beyond the prefix are ignored, as routers do); undefined
 * when malformed.
 */
export function parseCidr(text: string): IpRange | undefined {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const units = parseInto(ip);
  if (units === 0) return undefined;
  const width = units * 16;
  let prefixLength = width;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > width) return undefined;
    prefixLength = Number(p);
  }
  const lo = new Uint16Array(8);
  const hi = new Uint16Array(8);
  for (let k = 0; k < units; k++) {
    const keep = Math.min(16, Math.max(0, prefixLength - 16 * k));
    const mask = keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
    const u = SCRATCH[k]!;
    lo[k] = u & mask;
    hi[k] = (u & mask) | (~mask & 0xffff);
  }
  const exact = prefixLength === width ? canonicalIp(ip) : undefined;
  return {
    version: units === 2 ? 4 : 6,
    prefixLength,
    first: sortableOf(units, lo),
    last: sortableOf(units, hi),
    ...(exact !== undefined ? { exact } : {}),
  };
}

/** True when `ip` is an address inside `range` (same family; an IPv4-mapped IPv6 address is IPv6 here). */
export function rangeContains(range: IpRange, ip: string | undefined): boolean {
  if (ip === undefined) return false;
  const s = sortableIp(ip);
  return s !== undefined && s >= range.first && s <= range.last;
}

const MAPPED_PREFIX = '::ffff:';

/** `::ffff:1.2.3.4` (how a dual-stack socket shows an IPv4 peer) as `1.2.3.4`; other addresses unchanged. */
export function unmapIPv4(address: string): string {
  if (address.length > MAPPED_PREFIX.length && address.startsWith(MAPPED_PREFIX)) {
    const v4 = address.slice(MAPPED_PREFIX.length);
    if (parseIPv4(v4, 0, v4.length, SCRATCH, 0)) return v4;
  }
  return address;
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms. */
export function isLoopbackIp(ip: string): boolean {
  const s = sortableIp(unmapIPv4(ip));
  return s !== undefined && (s.startsWith('47f') || s === `6${'0'.repeat(31)}1`);
}

const UNITS = new Uint16Array(8);

/** An IPv4 dotted quad as an unsigned 32-bit number, or -1 (CIDR and range tables compare numbers). */
export function ipv4Number(ip: string): number {
  return parseIPv4(ip, 0, ip.length, UNITS, 0) ? UNITS[0]! * 65536 + UNITS[1]! : -1;
}

/**
 * An IPv6 address (a `%zone` suffix ignored: it names an interface, not another address) as four unsigned 32-bit
 * words written into `out`, or undefined.
 */
export function ipv6Words(ip: string, out: Uint32Array = new Uint32Array(4)): Uint32Array | undefined {
  const zone = ip.indexOf('%');
  if (!parseIPv6(ip, 0, zone < 0 ? ip.length : zone, UNITS, 0)) return undefined;
  for (let k = 0; k < 4; k++) out[k] = UNITS[2 * k]! * 65536 + UNITS[2 * k + 1]!;
  return out;
}
