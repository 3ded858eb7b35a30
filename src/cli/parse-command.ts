import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { createGunzip } from 'node:zlib';
import { DockflowError, ErrorCode } from '../errors.js';
import type { FlowRecord, SkipReason } from '../record.js';
import { SKIP_REASONS } from '../record.js';
import { bridgeMatcher, DEFAULT_BRIDGES } from '../parse/direction.js';
import { createLineOptions, parseLine } from '../parse/line.js';
import type { LineOptionsInput } from '../parse/line.js';
import { createTimeZone, parseIsoInstant } from '../parse/time.js';
import { FrameDecoder, type FrameListener, type Framing } from '../receive/framing.js';

export const PARSE_USAGE = `Usage: dockflow parse [options] [FILE...]

Reads syslog messages or kernel log lines carrying netfilter LOG output and writes one JSON flow record per
LOG line to stdout (NDJSON). FILE "-" or no FILE reads stdin. Gzip input is detected and decompressed; a
captured RFC 6587 octet-counted stream ("123 <4>1 ...") is de-framed. A summary goes to stderr.

Input: RFC 3164 (with or without <PRI>, hostname, "kernel: [uptime]"), /var/log/kern.log (classic or
RFC 3339 stamps), RFC 5424, journalctl -k (short, short-precise, short-iso, short-monotonic),
dmesg / dmesg --raw, /dev/kmsg records, bare kernel text.

Options:
  --tz ZONE          IANA zone of RFC 3164 stamps, which carry none (default UTC)
  --year YYYY        year of RFC 3164 stamps (default: inferred from each file's modification time, or now
                     for stdin, so that December lines read in January land in the previous year)
  --boot-time ISO    when the sender booted (e.g. 2026-11-27T06:22:24.466Z), for dmesg/kmsg lines that carry
                     only kernel uptime; without it their @timestamp is the file's modification time (stdin:
                     now) and log.kernel_uptime holds the uptime
  --bridges LIST     container bridge interfaces, comma-separated, trailing * as wildcard (default docker0,br-*)
  --host NAME        host.name for lines that carry no hostname (kmsg, dmesg, bare kernel text)
  -h, --help         show this help

Exit status: 0 success, 1 an input could not be read (the others are still parsed), 2 usage error.
`;

export interface ParseIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

interface InputStats {
  lines: number;
  records: number;
  skipped: Record<SkipReason, number>;
}

const newStats = (): InputStats => ({
  lines: 0,
  records: 0,
  skipped: Object.fromEntries(SKIP_REASONS.map((r) => [r, 0])) as Record<SkipReason, number>,
});

/** `dockflow parse`: returns the exit status. Streams are injected so tests run it in-process. */
export async function runParse(argv: string[], io: ParseIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let base: LineOptionsInput;
  let files: string[];
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        tz: { type: 'string' },
        year: { type: 'string' },
        'boot-time': { type: 'string' },
        bridges: { type: 'string' },
        host: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(PARSE_USAGE);
      return 0;
    }
    base = optionsFromArgs(values);
    files = positionals.length === 0 ? ['-'] : positionals;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    io.stderr.write(`dockflow parse: ${message}\n\n${PARSE_USAGE}`);
    return 2;
  }

  const out = new NdjsonWriter(io.stdout);
  const total = newStats();
  let status = 0;
  try {
    for (const file of files) {
      if (out.closed) break;
      const name = file === '-' ? 'stdin' : file;
      const stats = newStats();
      try {
        await parseInput(file, base, io.stdin, stats, out);
      } catch (err) {
        status = 1;
        io.stderr.write(`dockflow parse: cannot read ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
      }
      addStats(total, stats);
      io.stderr.write(`${name}: ${summary(stats)}\n`);
    }
    await out.flush();
  } finally {
    out.detach();
  }
  if (files.length > 1) io.stderr.write(`total: ${summary(total)}\n`);
  if (out.error !== undefined) {
    io.stderr.write(`dockflow parse: cannot write output: ${out.error.message}\n`);
    return 1;
  }
  return status;
}

function optionsFromArgs(values: { tz?: string; year?: string; 'boot-time'?: string; bridges?: string; host?: string }): LineOptionsInput {
  const base: LineOptionsInput = { timeZone: createTimeZone(values.tz ?? 'UTC') };
  if (values.year !== undefined) {
    const year = Number(values.year);
    if (!/^\d{4}$/.test(values.year) || year < 1970) throw usage(`--year wants a four-digit year, got "${values.year}"`);
    base.year = year;
  }
  if (values['boot-time'] !== undefined) {
    const boot = parseIsoInstant(values['boot-time']);
    if (boot === undefined) throw usage(`--boot-time wants an ISO 8601 time with zone (2026-11-27T06:22:24Z), got "${values['boot-time']}"`);
    base.bootTime = boot;
  }
  const bridges = values.bridges === undefined ? DEFAULT_BRIDGES : values.bridges.split(',').map((b) => b.trim()).filter((b) => b !== '');
  if (bridges.length === 0) throw usage('--bridges wants at least one interface name');
  base.isBridge = bridgeMatcher(bridges);
  if (values.host !== undefined) base.hostName = values.host;
  return base;
}

const usage = (message: string): DockflowError => new DockflowError(ErrorCode.USAGE, message);

async function parseInput(file: string, base: LineOptionsInput, stdin: Readable, stats: InputStats, out: NdjsonWriter): Promise<void> {
  let source: Readable;
  let referenceMs: number;
  if (file === '-') {
    source = stdin;
    referenceMs = Date.now();
  } else {
    const st = await stat(file);
    if (st.isDirectory()) throw new Error('is a directory');
    // A rotated kern.log.4.gz from two years ago: its mtime, not today, decides the year of its stamps.
    referenceMs = st.mtimeMs;
    source = createReadStream(file);
  }
  const opts = createLineOptions({ ...base, referenceMs });
  const deframer = new CaptureDeframer(opts.maxLineBytes, {
    frame(line) {
      stats.lines++;
      const r = parseLine(line, opts);
      if (typeof r === 'string') stats.skipped[r]++;
      else {
        stats.records++;
        out.write(r);
      }
    },
    drop(reason) {
      // A bad octet count ends the input: push() reports it.
      if (reason !== 'oversize') return;
      stats.lines++;
      stats.skipped.oversize++;
    },
  });
  try {
    for await (const chunk of decompressed(source)) {
      if (!deframer.push(chunk)) throw new Error(`bad RFC 6587 octet count after ${stats.lines} frames; the rest is not read`);
      await out.ready();
      if (out.closed) return;
    }
    if (!deframer.end()) {
      // A capture cut inside its last octet-counted frame.
      stats.lines++;
      stats.skipped.truncated++;
    }
  } finally {
    if (source !== stdin) source.destroy();
  }
}

/** Yields the bytes of `source`, gunzipped when they start with the gzip magic (whatever the file is called). */
async function* decompressed(source: Readable): AsyncGenerator<Buffer> {
  const it: AsyncIterator<Buffer | string> = source[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  while (head.length < 2) {
    const next = await it.next();
    if (next.done === true) {
      if (head.length > 0) yield head;
      return;
    }
    head = Buffer.concat([head, toBuffer(next.value)]);
  }
  async function* all(): AsyncGenerator<Buffer> {
    yield head;
    for (let next = await it.next(); next.done !== true; next = await it.next()) yield toBuffer(next.value);
  }
  if (head[0] !== 0x1f || head[1] !== 0x8b) {
    yield* all();
    return;
  }
  const raw = Readable.from(all());
  const gunzip = createGunzip();
  raw.on('error', (err) => gunzip.destroy(err));
  raw.pipe(gunzip);
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } finally {
    raw.destroy();
    gunzip.destroy();
  }
}

const toBuffer = (v: Buffer | string): Buffer => (typeof v === 'string' ? Buffer.from(v) : v);

const SP = 0x20;

/**
 * A capture's bytes into messages, with the TCP receiver's codec (`FrameDecoder`): LF-terminated lines, or RFC 6587
 * octet-counted frames when the input starts like one (`123 <`). The framing is told from the first bytes here, not
 * from the first byte alone as on a TCP connection, because a file's first line may start with a digit (RFC 3339
 * kern.log, journalctl -o short-iso). A UTF-8 byte order mark before the first line is skipped.
 */
export class CaptureDeframer {
  private decoder: FrameDecoder | undefined;
  private head: Buffer = Buffer.alloc(0);

  constructor(
    private readonly maxMessageBytes: number,
    private readonly listener: FrameListener,
  ) {}

  /** Returns false once a bad octet count was met: the rest of the input cannot be framed. */
  push(chunk: Buffer): boolean {
    if (this.decoder !== undefined) return this.decoder.push(chunk);
    this.head = this.head.length > 0 ? Buffer.concat([this.head, chunk]) : chunk;
    const framing = detectFraming(this.head);
    if (framing === undefined) return true;
    return this.start(framing);
  }

  /** Flushes a last line without LF; false when the input ended inside an octet-counted frame. */
  end(): boolean {
    if (this.decoder === undefined && !this.start('lf')) return false;
    return this.decoder!.end();
  }

  private start(framing: Framing): boolean {
    const head = this.head[0] === 0xef && this.head[1] === 0xbb && this.head[2] === 0xbf ? this.head.subarray(3) : this.head;
    this.head = Buffer.alloc(0);
    this.decoder = new FrameDecoder(this.maxMessageBytes, this.listener, framing);
    return head.length === 0 || this.decoder.push(head);
  }
}

/**
 * `LEN SP <` (after an optional byte order mark) starts an octet-counted stream; anything else is lines. Undefined:
 * not enough bytes to tell yet.
 */
function detectFraming(buf: Buffer): Framing | undefined {
  let i = 0;
  if (buf[0] === 0xef) {
    if (buf.length < 3) return undefined;
    if (buf[1] === 0xbb && buf[2] === 0xbf) i = 3;
  }
  const digits = i;
  while (i < buf.length && i - digits < 10 && buf[i]! >= 0x30 && buf[i]! <= 0x39) i++;
  if (i === digits || buf[digits] === 0x30) return i === buf.length ? undefined : 'lf';
  if (i === buf.length) return i - digits >= 10 ? 'lf' : undefined;
  if (buf[i] !== SP) return 'lf';
  if (i + 1 === buf.length) return undefined;
  return buf[i + 1] === 0x3c ? 'octet-counting' : 'lf';
}

const OUTPUT_BATCH_CHARS = 64 * 1024;

/**
 * Batches NDJSON into large writes and honours backpressure. A reader that goes away (`| head`) closes the
 * output quietly: EPIPE is the normal end of a pipeline, not an error.
 */
class NdjsonWriter {
  closed = false;
  private buf = '';
  /** A write failure other than the reader going away; reported once parsing stops. */
  error: Error | undefined;
  private readonly onError = (err: NodeJS.ErrnoException): void => {
    this.closed = true;
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') this.error = err;
  };

  constructor(private readonly stream: Writable) {
    stream.on('error', this.onError);
  }

  write(rec: FlowRecord): void {
    if (this.closed) return;
    this.buf += JSON.stringify(rec) + '\n';
  }

  /** Writes what is batched once it is large enough, then waits while the stream is full. */
  async ready(): Promise<void> {
    if (this.buf.length >= OUTPUT_BATCH_CHARS) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.closed || this.buf === '') return;
    const ok = this.stream.write(this.buf);
    this.buf = '';
    if (ok) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.stream.off('drain', done);
        this.stream.off('close', done);
        this.stream.off('error', done);
        resolve();
      };
      this.stream.on('drain', done);
      this.stream.on('close', done);
      this.stream.on('error', done);
    });
  }

  detach(): void {
    this.stream.off('error', this.onError);
  }
}

function addStats(total: InputStats, s: InputStats): void {
  total.lines += s.lines;
  total.records += s.records;
  for (const r of SKIP_REASONS) total.skipped[r] += s.skipped[r];
}

function summary(s: InputStats): string {
  const skipped = SKIP_REASONS.filter((r) => s.skipped[r] > 0).map((r) => `${r} ${s.skipped[r]}`);
  const n = s.lines - s.records;
  return `${s.lines} lines, ${s.records} records, ${n} skipped${skipped.length > 0 ? ` (${skipped.join(', ')})` : ''}`;
}
