import { createReadStream, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { ipv4Number, ipv6Words } from '../net/ip.js';
import type { AutonomousSystem } from '../record.js';

/**
 * AS numbers and organisation names with nothing configured, from the `@ip-location-db/asn` package (RouteViews +
 * DB-IP, CC-BY-4.0): CSV ranges `first,last,asn,name` for IPv4 and IPv6.
 *
 * The CSVs (33 MB of text) are converted once into one compact file of sorted ranges in typed arrays, cached under
 * a directory of dockflow's, and read whole into memory (about 11 MB, outside the JS heap); a lookup is a binary
 * search. Conversion streams the CSVs asynchronously, off the start-up path; the cached file is reused until the
 * package's version changes.
 *
 * File layout (little-endian, every section 4-byte aligned):
 *   header (64 bytes): magic `DFASN001`, u32 v4 ranges, u32 v6 ranges, u32 organisations, u32 name bytes,
 *                      f64 build epoch (s), 32 bytes of package version (UTF-8, zero-padded)
 *   v4: first u32[n4], last u32[n4], org u32[n4]
 *   v6: first u32[4·n6], last u32[4·n6] (four big-endian-ordered words per address), org u32[n6]
 *   organisations: asn u32[no], name offset u32[no + 1], names (UTF-8)
 */

const PACKAGE = '@ip-location-db/asn';
const MAGIC = 'DFASN001';
const HEADER_BYTES = 64;
/** File name of the converted table inside the cache directory. */
export const ASN_TABLE_FILE = 'ip-location-db-asn.bin';

export interface AsnSource {
  /** Directory holding `asn-ipv4.csv` and `asn-ipv6.csv`. */
  dir: string;
  /** Package version: the cache key and, from its last part (YYYYMMDDHH), the build epoch. */
  version: string;
}

/** The installed package, or undefined when it is not installed. */
export function embeddedAsnSource(): AsnSource | undefined {
  try {
    const require = createRequire(import.meta.url);
    const pkgPath = require.resolve(`${PACKAGE}/package.json`);
    const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { version?: string };
    return { dir: dirname(pkgPath), version: pkg.version ?? '0' };
  } catch {
    return undefined;
  }
}

/** `2.3.2026061719` → 2026-06-17T19:00Z in seconds; 0 when the version does not carry a date. */
export function versionEpoch(version: string): number {
  const m = /(\d{4})(\d{2})(\d{2})(\d{2})$/.exec(version);
  if (m === null) return 0;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4])) / 1000;
}

export class AsnTable {
  private readonly answers: Array<AutonomousSystem | undefined>;
  private readonly decoder = new TextDecoder();

  constructor(
    readonly version: string,
    readonly buildEpoch: number,
    private readonly v4First: Uint32Array,
    private readonly v4Last: Uint32Array,
    private readonly v4Org: Uint32Array,
    private readonly v6First: Uint32Array,
    private readonly v6Last: Uint32Array,
    private readonly v6Org: Uint32Array,
    private readonly orgAsn: Uint32Array,
    private readonly orgNameOffset: Uint32Array,
    private readonly names: Uint8Array,
    /** Bytes the table holds in memory. */
    readonly bytes: number,
  ) {
    this.answers = new Array<AutonomousSystem | undefined>(orgAsn.length);
  }

  get v4Ranges(): number {
    return this.v4First.length;
  }

  get v6Ranges(): number {
    return this.v6Org.length;
  }

  /** The AS announcing `ip` (IPv4 dotted or IPv6 text), or undefined. Answers are frozen and shared. */
  lookup(ip: string): AutonomousSystem | undefined {
    if (ip.indexOf(':') < 0) {
      const v = ipv4Number(ip);
      return v < 0 ? undefined : this.lookup4(v);
    }
    const words = scratchWords(ip);
    return words === undefined ? undefined : this.lookup6(words);
  }

  private lookup4(v: number): AutonomousSystem | undefined {
    const first = this.v4First;
    let lo = 0;
    let hi = first.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (first[mid]! <= v) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found >= 0 && this.v4Last[found]! >= v ? this.answer(this.v4Org[found]!) : undefined;
  }

  private lookup6(w: Uint32Array): AutonomousSystem | undefined {
    const first = this.v6First;
    let lo = 0;
    let hi = this.v6Org.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (compare6(first, mid * 4, w) <= 0) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found >= 0 && compare6(this.v6Last, found * 4, w) >= 0 ? this.answer(this.v6Org[found]!) : undefined;
  }

  private answer(org: number): AutonomousSystem | undefined {
    const cached = this.answers[org];
    if (cached !== undefined) return cached;
    const name = this.decoder.decode(this.names.subarray(this.orgNameOffset[org], this.orgNameOffset[org + 1]));
    const as: AutonomousSystem = Object.freeze({ number: this.orgAsn[org]!, organization: Object.freeze({ name }) });
    this.answers[org] = as;
    return as;
  }
}

/** `words[0..3]` against the four words at `at` in `table`: <0, 0, >0 as table's is less, equal, greater. */
function compare6(table: Uint32Array, at: number, words: Uint32Array): number {
  for (let k = 0; k < 4; k++) {
    const d = table[at + k]! - words[k]!;
    if (d !== 0) return d;
  }
  return 0;
}

const WORDS = new Uint32Array(4);

/** IPv6 text → four u32 words in a shared scratch, or undefined. */
function scratchWords(ip: string): Uint32Array | undefined {
  return ipv6Words(ip, WORDS);
}

/** Reads a converted table; undefined when the file is missing, not one, or from another package version. */
export async function readAsnTable(path: string, version?: string): Promise<AsnTable | undefined> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch {
    return undefined;
  }
  return decodeAsnTable(buf, version);
}

export function decodeAsnTable(raw: Buffer, version?: string): AsnTable | undefined {
  if (raw.length < HEADER_BYTES || raw.toString('latin1', 0, 8) !== MAGIC) return undefined;
  // Typed-array views need 4-byte alignment; a pooled Buffer may not have it.
  const buf = raw.byteOffset % 4 === 0 ? raw : Buffer.from(raw);
  const n4 = buf.readUInt32LE(8);
  const n6 = buf.readUInt32LE(12);
  const no = buf.readUInt32LE(16);
  const nameBytes = buf.readUInt32LE(20);
  const epoch = buf.readDoubleLE(24);
  const fileVersion = buf.toString('utf8', 32, 64).replace(/\0+$/, '');
  if (version !== undefined && fileVersion !== version) return undefined;
  const expected = HEADER_BYTES + 4 * (3 * n4 + 9 * n6 + 2 * no + 1) + nameBytes;
  if (buf.length !== expected) return undefined;
  let at = buf.byteOffset + HEADER_BYTES;
  const u32 = (n: number): Uint32Array => {
    const view = new Uint32Array(buf.buffer, at, n);
    at += 4 * n;
    return view;
  };
  const v4First = u32(n4);
  const v4Last = u32(n4);
  const v4Org = u32(n4);
  const v6First = u32(4 * n6);
  const v6Last = u32(4 * n6);
  const v6Org = u32(n6);
  const orgAsn = u32(no);
  const orgNameOffset = u32(no + 1);
  const names = new Uint8Array(buf.buffer, at, nameBytes);
  return new AsnTable(fileVersion, epoch, v4First, v4Last, v4Org, v6First, v6Last, v6Org, orgAsn, orgNameOffset, names, buf.length);
}

/** One CSV line `first,last,asn,name` (the name may be quoted, with `""` for a quote). */
function splitCsv(line: string): [string, string, string, string] | undefined {
  const a = line.indexOf(',');
  const b = line.indexOf(',', a + 1);
  const c = line.indexOf(',', b + 1);
  if (a < 0 || b < 0 || c < 0) return undefined;
  let name = line.slice(c + 1);
  if (name.startsWith('"') && name.endsWith('"') && name.length >= 2) name = name.slice(1, -1).replaceAll('""', '"');
  return [line.slice(0, a), line.slice(a + 1, b), line.slice(b + 1, c), name];
}

async function* csvLines(path: string, signal: AbortSignal | undefined): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const line of rl) {
    signal?.throwIfAborted();
    if (line !== '') yield line;
  }
}

/** Growable u32 column. */
class Column {
  data = new Uint32Array(1 << 16);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Uint32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
  view(): Uint32Array {
    return this.data.subarray(0, this.length);
  }
}

/**
 * Converts the package's CSVs into the table file at `path` (written to a temporary name, then renamed, so a reader
 * never sees half a file). Rows that are not ranges are skipped; the CSVs come sorted and are kept in their order,
 * and an unsorted row is dropped rather than breaking the binary search.
 */
export async function convertAsnCsv(source: AsnSource, path: string, signal?: AbortSignal): Promise<AsnTable> {
  const orgIds = new Map<string, number>();
  const orgAsn = new Column();
  const nameChunks: Buffer[] = [];
  const nameOffsets = new Column();
  let nameBytes = 0;
  nameOffsets.push(0);
  const org = (asn: number, name: string): number => {
    const key = `${asn}\u0000${name}`;
    let id = orgIds.get(key);
    if (id === undefined) {
      id = orgAsn.length;
      orgIds.set(key, id);
      orgAsn.push(asn);
      const bytes = Buffer.from(name, 'utf8');
      nameChunks.push(bytes);
      nameBytes += bytes.length;
      nameOffsets.push(nameBytes);
    }
    return id;
  };

  const v4First = new Column();
  const v4Last = new Column();
  const v4Org = new Column();
  for await (const line of csvLines(join(source.dir, 'asn-ipv4.csv'), signal)) {
    const row = splitCsv(line);
    if (row === undefined) continue;
    const first = ipv4Number(row[0]);
    const last = ipv4Number(row[1]);
    const asn = Number(row[2]);
    if (first < 0 || last < first || !Number.isInteger(asn) || asn < 0 || asn > 0xffffffff) continue;
    if (v4Last.length > 0 && first <= v4Last.data[v4Last.length - 1]!) continue;
    v4First.push(first);
    v4Last.push(last);
    v4Org.push(org(asn, row[3]));
  }

  const v6First = new Column();
  const v6Last = new Column();
  const v6Org = new Column();
  const previousLast = new Uint32Array(4);
  let any6 = false;
  for await (const line of csvLines(join(source.dir, 'asn-ipv6.csv'), signal)) {
    const row = splitCsv(line);
    if (row === undefined) continue;
    const first = scratchWords(row[0]);
    if (first === undefined) continue;
    const f = Uint32Array.from(first);
    const last = scratchWords(row[1]);
    const asn = Number(row[2]);
    if (last === undefined || compare6(f, 0, last) > 0 || !Number.isInteger(asn) || asn < 0 || asn > 0xffffffff) continue;
    if (any6 && compare6(previousLast, 0, f) >= 0) continue;
    for (let k = 0; k < 4; k++) {
      v6First.push(f[k]!);
      v6Last.push(last[k]!);
      previousLast[k] = last[k]!;
    }
    any6 = true;
    v6Org.push(org(asn, row[3]));
  }

  const header = Buffer.alloc(HEADER_BYTES);
  header.write(MAGIC, 0, 'latin1');
  header.writeUInt32LE(v4First.length, 8);
  header.writeUInt32LE(v6Org.length, 12);
  header.writeUInt32LE(orgAsn.length, 16);
  header.writeUInt32LE(nameBytes, 20);
  header.writeDoubleLE(versionEpoch(source.version), 24);
  header.write(source.version.slice(0, 32), 32, 'utf8');
  const parts = [v4First, v4Last, v4Org, v6First, v6Last, v6Org, orgAsn, nameOffsets].map((c) => Buffer.from(c.view().buffer, 0, c.length * 4));
  const file = Buffer.concat([header, ...parts, ...nameChunks]);
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, file);
  await rename(tmp, path);
  const table = decodeAsnTable(file, source.version);
  if (table === undefined) throw new Error('converted ASN table does not read back');
  return table;
}

/**
 * The cached table for `source` under `cacheDir`, converting the CSVs first when there is none for its version.
 * `signal` stops a conversion in progress (the service is shutting down).
 */
export async function openAsnTable(source: AsnSource, cacheDir: string, signal?: AbortSignal): Promise<AsnTable> {
  const path = join(cacheDir, ASN_TABLE_FILE);
  return (await readAsnTable(path, source.version)) ?? convertAsnCsv(source, path, signal);
}
