import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { FlowRecord } from '../record.js';

/**
 * A verifiable export: NDJSON in three parts.
 *
 *   line 1          {"dockflow_export":{…header…}}          what was asked: query, time range, when, by what
 *   lines 2…n+1     one record per line, its JSON text followed by `,"dockflow_chain":"<hex>"}`
 *   line n+2        {"dockflow_export_end":{…trailer…}}     count, first/last entry IDs, databases, loss, chain head
 *
 * The chain: h0 = SHA-256(header line); hi = SHA-256(h(i-1) ‖ record text i), where the record text is the line
 * without its `,"dockflow_chain":"…"` suffix (closing brace kept). Each line carries its hi, so a changed, removed,
 * inserted or reordered line breaks the chain at that line; the trailer holds the head hn and the header's hash, so a
 * changed header or trailer, or a cut file, shows too. Whoever receives an export should note the head given at
 * export time (`dockflow export` prints it): a chain can be recomputed by anyone, so only the head kept apart
 * anchors it.
 */

export const EXPORT_FORMAT_VERSION = 1;
const HEADER_KEY = '{"dockflow_export":';
const TRAILER_KEY = '{"dockflow_export_end":';
const CHAIN_SUFFIX = /,"dockflow_chain":"([0-9a-f]{64})"\}$/;

export interface ExportHeader {
  version: number;
  /** The query as given (filters, order). */
  query: Record<string, unknown>;
  /** The time range the query covered, ISO 8601. */
  range: { since?: string; until?: string };
  created: string;
  producer: string;
  chain: { algorithm: 'sha256'; scheme: string };
  /** The most records one export holds; a query matching more ends with `truncated` in the trailer. */
  max_records: number;
}

export interface ExportTrailer {
  count: number;
  first_id?: string;
  last_id?: string;
  /** Distinct `dockflow.geo_build_epoch` stamps of the exported records: the GeoIP/ASN databases that answered. */
  databases: Array<Record<string, number>>;
  /** The service's loss report when the export was made. */
  loss?: unknown;
  /** True when the query matched more than `max_records`, or the export stopped early (the reason says why). */
  truncated: boolean;
  reason?: string;
  header_sha256: string;
  chain_head: string;
}

function sha256(...parts: Array<Buffer | string>): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Builds an export line by line; the caller writes the lines out as they come (nothing is held but the chain). */
export class ExportChain {
  private head: Buffer;
  private readonly headerHash: string;
  private readonly databases = new Map<string, Record<string, number>>();
  private count = 0;
  private firstId: string | undefined;
  private lastId: string | undefined;
  readonly headerLine: string;

  constructor(header: Omit<ExportHeader, 'version' | 'chain'>) {
    const full: ExportHeader = {
      version: EXPORT_FORMAT_VERSION,
      ...header,
      chain: { algorithm: 'sha256', scheme: 'h0 = sha256(line 1); hi = sha256(h(i-1) || record text i)' },
    };
    this.headerLine = `${HEADER_KEY}${JSON.stringify(full)}}\n`;
    this.head = sha256(this.headerLine.slice(0, -1));
    this.headerHash = this.head.toString('hex');
  }

  get records(): number {
    return this.count;
  }

  /** The line for one record (newline included). */
  line(record: FlowRecord): string {
    const text = JSON.stringify(record);
    this.head = sha256(this.head, text);
    this.count++;
    const id = record.event?.id;
    this.firstId ??= id;
    this.lastId = id;
    const stamp = record.dockflow?.geo_build_epoch;
    if (stamp !== undefined) {
      const key = JSON.stringify(stamp);
      if (!this.databases.has(key) && this.databases.size < MAX_DATABASE_STAMPS) this.databases.set(key, stamp);
    }
    return `${text.slice(0, -1)},"dockflow_chain":"${this.head.toString('hex')}"}\n`;
  }

  /** The closing line (newline included). */
  trailerLine(extra: { loss?: unknown; truncated: boolean; reason?: string }): string {
    const trailer: ExportTrailer = {
      count: this.count,
      ...(this.firstId !== undefined ? { first_id: this.firstId } : {}),
      ...(this.lastId !== undefined ? { last_id: this.lastId } : {}),
      databases: [...this.databases.values()],
      ...(extra.loss !== undefined ? { loss: extra.loss } : {}),
      truncated: extra.truncated,
      ...(extra.reason !== undefined ? { reason: extra.reason } : {}),
      header_sha256: this.headerHash,
      chain_head: this.head.toString('hex'),
    };
    return `${TRAILER_KEY}${JSON.stringify(trailer)}}\n`;
  }

  get chainHead(): string {
    return this.head.toString('hex');
  }
}

/** Database generations are few; a bound keeps a pathological export's trailer small. */
const MAX_DATABASE_STAMPS = 64;

export interface VerifyResult {
  ok: boolean;
  /** 1-based line number of the first problem. */
  line?: number;
  problem?: string;
  records: number;
  chainHead?: string;
  header?: ExportHeader;
  trailer?: ExportTrailer;
}

/**
 * Checks an export from its lines. Streams: holds one line and the chain. Reports the first line that breaks it:
 * a changed line fails there; a removed or reordered one fails where the next line no longer follows; a line edited
 * together with its hash fails at the line after it.
 */
export async function verifyLines(lines: AsyncIterable<string>): Promise<VerifyResult> {
  let n = 0;
  let records = 0;
  let head: Buffer | undefined;
  let header: ExportHeader | undefined;
  let headerHash = '';
  let trailer: ExportTrailer | undefined;
  const fail = (line: number, problem: string): VerifyResult => ({ ok: false, line, problem, records, ...(header ? { header } : {}) });
  // A broken chain is reported after reading on to the trailer: a changed header breaks line 2, and only the
  // trailer's copy of the header hash tells that line 1 is the one changed.
  let broken: VerifyResult | undefined;
  for await (const raw of lines) {
    n++;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (n === 1) {
      if (!line.startsWith(HEADER_KEY)) return fail(1, 'not a dockflow export (no header line)');
      try {
        header = (JSON.parse(line) as { dockflow_export: ExportHeader }).dockflow_export;
      } catch {
        return fail(1, 'header line is not JSON');
      }
      if (header.version !== EXPORT_FORMAT_VERSION) return fail(1, `unknown export format version ${String(header.version)}`);
      head = sha256(line);
      headerHash = head.toString('hex');
      continue;
    }
    if (trailer !== undefined) return broken ?? fail(n, 'line after the trailer');
    if (line.startsWith(TRAILER_KEY)) {
      try {
        trailer = (JSON.parse(line) as { dockflow_export_end: ExportTrailer }).dockflow_export_end;
      } catch {
        return broken ?? fail(n, 'trailer line is not JSON');
      }
      if (trailer.header_sha256 !== headerHash) return fail(1, 'header changed (its hash differs from the one in the trailer)');
      if (broken !== undefined) return broken;
      if (trailer.count !== records) return fail(n, `trailer counts ${trailer.count} records, the file holds ${records}`);
      if (trailer.chain_head !== head!.toString('hex')) return fail(n, 'trailer chain head differs from the chain (trailer changed)');
      continue;
    }
    if (broken !== undefined) continue;
    const m = CHAIN_SUFFIX.exec(line);
    if (m === null) {
      broken = fail(n, 'record line without its chain hash');
      continue;
    }
    const text = `${line.slice(0, m.index)}}`;
    head = sha256(head!, text);
    if (head.toString('hex') !== m[1]) {
      broken = fail(n, 'hash does not match: this line was changed, or a line before it removed, added or moved');
      continue;
    }
    records++;
  }
  if (broken !== undefined) return broken;
  if (n === 0) return fail(1, 'empty file');
  if (trailer === undefined) return fail(n + 1, `no trailer: the file ends after line ${n} (cut short, or its last lines removed)`);
  return { ok: true, records, chainHead: head!.toString('hex'), ...(header ? { header } : {}), trailer };
}

/** `verifyLines` over a file. */
export async function verifyFile(path: string): Promise<VerifyResult> {
  const rl = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  try {
    return await verifyLines(rl);
  } finally {
    rl.close();
  }
}
