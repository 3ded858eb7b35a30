import type { SkipReason } from '../record.js';
import { createTimeZone, newHourMemo, parseIsoAt, readDigits, readFraction, Rfc3164Clock } from './time.js';
import type { HourMemo, Instant, TimeZone } from './time.js';

/**
 * The envelope a kernel line arrived in:
 * - `rfc3164`: BSD syslog and the files written from it (`/var/log/kern.log`, `journalctl -k` short formats):
 *   optional `<PRI>`, a `Nov 27 06:43:29` or RFC 3339 stamp, optional hostname, a `kernel:` tag;
 * - `rfc5424`: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`;
 * - `dmesg`: `dmesg` / `dmesg --raw` (`<4>[  884.963094] text`);
 * - `journal`: `journalctl -k -o short-monotonic` (`[  884.963094] host kernel: text`);
 * - `kmsg`: `/dev/kmsg` records (`PRI,SEQ,TS_US,FLAG;text`);
 * - `bare`: the kernel text alone.
 */
export type EnvelopeFormat = 'rfc3164' | 'rfc5424' | 'dmesg' | 'journal' | 'kmsg' | 'bare';

export interface Envelope {
  format: EnvelopeFormat;
  /** UTC epoch milliseconds; undefined when the line has no wall-clock time (NILVALUE, dmesg without boot time). */
  timestampMs: number | undefined;
  /** Microseconds past `timestampMs` (0–999). */
  timestampMicros: number;
  /** The input carried sub-millisecond digits, so `@timestamp` should keep microseconds. */
  timestampPrecise: boolean;
  priority: number | undefined;
  version: number | undefined;
  hostname: string | undefined;
  appname: string | undefined;
  procid: string | undefined;
  msgid: string | undefined;
  structuredData: Record<string, Record<string, string>> | undefined;
  /** Kernel uptime in seconds from a `[ 1253.212740]` stamp or a kmsg record. */
  kernelUptime: number | undefined;
  /** Offset in the line where the kernel message (the LOG prefix) starts. */
  messageStart: number;
}

export interface EnvelopeOptions {
  /** Turns RFC 3164 stamps into UTC in the sender's zone; holds this parser's caches. */
  readonly clock: Rfc3164Clock;
  /** Forces the year of RFC 3164 stamps instead of inferring it from the reference time. */
  year: number | undefined;
  /** Wall-clock time of the sender's boot, for records that carry kernel uptime only (dmesg, kmsg). */
  bootTime: Instant | undefined;
  /** Reference for year inference; undefined means the clock at each call. */
  referenceMs: number | undefined;
  /** Recently seen hostnames, app names and ids, so records share strings rather than slice one per line. */
  readonly names: NameCache;
  /** Scratch space and memo for stamp parsing. */
  readonly instant: Instant;
  readonly isoHour: HourMemo;
}

export interface EnvelopeOptionsInput {
  /** IANA zone of RFC 3164 stamps; default UTC. */
  timeZone?: string | TimeZone;
  year?: number;
  bootTime?: Instant;
  referenceMs?: number;
}

export function createEnvelopeOptions(input: EnvelopeOptionsInput = {}): EnvelopeOptions {
  const zone = typeof input.timeZone === 'object' ? input.timeZone : createTimeZone(input.timeZone ?? 'UTC');
  return {
    clock: new Rfc3164Clock(zone),
    year: input.year,
    bootTime: input.bootTime,
    referenceMs: input.referenceMs,
    names: new NameCache(),
    instant: { ms: 0, micros: 0, precise: false },
    isoHour: newHourMemo(),
  };
}

export function newEnvelope(): Envelope {
  return {
    format: 'bare',
    timestampMs: undefined,
    timestampMicros: 0,
    timestampPrecise: false,
    priority: undefined,
    version: undefined,
    hostname: undefined,
    appname: undefined,
    procid: undefined,
    msgid: undefined,
    structuredData: undefined,
    kernelUptime: undefined,
    messageStart: 0,
  };
}

type Named = Readonly<{ code: number; name: string }>;

const named = (names: string[]): readonly Named[] => Object.freeze(names.map((name, code) => Object.freeze({ code, name })));

/** RFC 5424 facility keywords by code (ECS `log.syslog.facility`); records share these frozen objects. */
export const SYSLOG_FACILITIES = named([
  'kern', 'user', 'mail', 'daemon', 'auth', 'syslog', 'lpr', 'news', 'uucp', 'cron', 'authpriv', 'ftp', 'ntp',
  'security', 'console', 'solaris-cron', 'local0', 'local1', 'local2', 'local3', 'local4', 'local5', 'local6', 'local7',
]);

/** RFC 5424 severity names by code (ECS `log.syslog.severity`). */
export const SYSLOG_SEVERITIES = named(['Emergency', 'Alert', 'Critical', 'Error', 'Warning', 'Notice', 'Informational', 'Debug']);

const NAME_CACHE_SIZE = 8;

/** A tiny round-robin cache of substrings: a stream of lines repeats a handful of hostnames and tags. */
export class NameCache {
  private readonly values: string[] = [];
  private next = 0;

  get(line: string, start: number, end: number): string {
    const len = end - start;
    for (const v of this.values) if (v.length === len && line.startsWith(v, start)) return v;
    const v = line.slice(start, end);
    if (this.values.length < NAME_CACHE_SIZE) this.values.push(v);
    else this.values[this.next] = v;
    this.next = (this.next + 1) % NAME_CACHE_SIZE;
    return v;
  }
}

// Character codes the scanners compare against.
const TAB = 9;
const SPACE = 32;
const QUOTE = 34;
const COMMA = 44;
const MINUS = 45;
const DOT = 46;
const COLON = 58;
const LT = 60;
const EQ = 61;
const GT = 62;
const OPEN = 91;
const BACKSLASH = 92;
const CLOSE = 93;
const BOM = 0xfeff;

const isDigit = (c: number): boolean => c >= 48 && c <= 57;

/**
 * Finds where the kernel message starts in `line` and reads the envelope's metadata. Never throws. Fills `out`
 * (pass one to reuse it per line) and returns it, or a skip reason: `empty`, `bad-envelope` (a header that starts
 * like syslog but breaks its grammar), `not-netfilter` (a kmsg continuation line).
 */
export function parseEnvelope(line: string, opts: EnvelopeOptions, referenceMs?: number, out: Envelope = newEnvelope()): Envelope | SkipReason {
  const len = line.length;
  if (len === 0) return 'empty';
  out.timestampMs = undefined;
  out.timestampMicros = 0;
  out.timestampPrecise = false;
  out.priority = undefined;
  out.version = undefined;
  out.hostname = undefined;
  out.appname = undefined;
  out.procid = undefined;
  out.msgid = undefined;
  out.structuredData = undefined;
  out.kernelUptime = undefined;
  out.messageStart = 0;

  const c0 = line.charCodeAt(0);
  if (c0 === LT) {
    let pri = 0;
    let i = 1;
    for (let c = line.charCodeAt(i); isDigit(c) && i < 4; c = line.charCodeAt(++i)) pri = pri * 10 + (c - 48);
    if (i === 1 || line.charCodeAt(i) !== GT || pri > 191) return 'bad-envelope';
    out.priority = pri;
    const pos = i + 1;
    const c = line.charCodeAt(pos);
    if (c === OPEN) return parseDmesg(line, pos, opts, out);
    if (isDigit(c)) {
      let version = 0;
      let j = pos;
      for (let d = c; isDigit(d) && j < pos + 2; d = line.charCodeAt(++j)) version = version * 10 + (d - 48);
      if (line.charCodeAt(j) === SPACE && version > 0) {
        out.version = version;
        return parse5424(line, j + 1, opts, out);
      }
    }
    // RFC 3164 §4.3.3: after a PRI without a stamp, the rest is the message; but senders that leave the stamp out
    // (`echo '<4>kernel: [UFW BLOCK] IN=…' | nc -u`, seen in the wild) may still begin it with the kernel's tag, and
    // the tag is not the LOG prefix.
    return parse3164(line, pos, opts, referenceMs, out) ?? kernelTagged(line, pos, opts, out) ?? messageOnly(out, 'rfc3164', pos);
  }
  if (isDigit(c0)) {
    if (line.charCodeAt(4) === MINUS) {
      const r = parse3164(line, 0, opts, referenceMs, out);
      if (r !== undefined) return r;
    } else if (parseKmsg(line, opts, out)) {
      return out;
    }
    return messageOnly(out, 'bare', 0);
  }
  // `/dev/kmsg` continuation lines (` SUBSYSTEM=…`, ` DEVICE=…`) carry device properties, never a LOG line.
  if (c0 === SPACE || c0 === TAB) return line.trim() === '' ? 'empty' : 'not-netfilter';
  if (c0 === OPEN) return parseDmesg(line, 0, opts, out);
  if (c0 >= 65 && c0 <= 90) {
    const r = parse3164(line, 0, opts, referenceMs, out);
    if (r !== undefined) return r;
  }
  return messageOnly(out, 'bare', 0);
}

/** An envelope with no header fields past the PRI: the message runs from `pos`. */
function messageOnly(out: Envelope, format: EnvelopeFormat, pos: number): Envelope {
  out.format = format;
  out.timestampMs = undefined;
  out.timestampMicros = 0;
  out.timestampPrecise = false;
  out.messageStart = pos;
  return out;
}

/** Month number of `Jan`…`Dec` at `pos`, or 0. */
function monthAt(s: string, pos: number): number {
  switch ((s.charCodeAt(pos) << 16) | (s.charCodeAt(pos + 1) << 8) | s.charCodeAt(pos + 2)) {
    case 0x4a616e: return 1; // Jan
    case 0x466562: return 2; // Feb
    case 0x4d6172: return 3; // Mar
    case 0x417072: return 4; // Apr
    case 0x4d6179: return 5; // May
    case 0x4a756e: return 6; // Jun
    case 0x4a756c: return 7; // Jul
    case 0x417567: return 8; // Aug
    case 0x536570: return 9; // Sep
    case 0x4f6374: return 10; // Oct
    case 0x4e6f76: return 11; // Nov
    case 0x446563: return 12; // Dec
    default: return 0;
  }
}

/**
 * Reads `Mmm dd hh:mm:ss[.frac]` at `pos` (day padded with a space or a zero, or unpadded) into `out`'s
 * timestamp. Returns the position after it, -1 if there is no stamp, -2 for a date no year in reach has
 * (`Feb 29` with a forced non-leap year).
 */
function readBsdStamp(line: string, pos: number, opts: EnvelopeOptions, referenceMs: number | undefined, out: Envelope): number {
  const month = monthAt(line, pos);
  if (month === 0 || line.charCodeAt(pos + 3) !== SPACE) return -1;
  let i = pos + 4;
  if (line.charCodeAt(i) === SPACE) i++;
  let day = readDigits(line, i, 2);
  if (day >= 0) i += 2;
  else if ((day = readDigits(line, i, 1)) >= 0) i += 1;
  else return -1;
  if (line.charCodeAt(i) !== SPACE || day < 1 || day > 31) return -1;
  const hour = readDigits(line, i + 1, 2);
  const minute = readDigits(line, i + 4, 2);
  const second = readDigits(line, i + 7, 2);
  if (line.charCodeAt(i + 3) !== COLON || line.charCodeAt(i + 6) !== COLON) return -1;
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60) return -1;
  const instant = opts.instant;
  const end = readFraction(line, i + 9, instant);
  if (end < 0) return -1;
  const hourStart = opts.clock.hourStartMs(month, day, hour, referenceMs ?? opts.referenceMs ?? Date.now(), opts.year);
  if (Number.isNaN(hourStart)) return -2;
  out.timestampMs = hourStart + minute * 60_000 + second * 1000 + Math.floor(instant.micros / 1000);
  out.timestampMicros = instant.micros % 1000;
  out.timestampPrecise = instant.precise;
  return end;
}

/**
 * RFC 3164 after the PRI (or a file line without one): stamp, optional hostname, tag, message. Undefined when there
 * is no stamp at `pos`.
 */
function parse3164(line: string, pos: number, opts: EnvelopeOptions, referenceMs: number | undefined, out: Envelope): Envelope | SkipReason | undefined {
  out.format = 'rfc3164';
  let i = readBsdStamp(line, pos, opts, referenceMs, out);
  if (i === -2) return 'bad-envelope';
  if (i < 0) {
    const instant = opts.instant;
    i = parseIsoAt(line, pos, instant, opts.isoHour);
    if (i >= 0) {
      out.timestampMs = instant.ms;
      out.timestampMicros = instant.micros;
      out.timestampPrecise = instant.precise;
    }
  }
  if (i < 0 || line.charCodeAt(i) !== SPACE) return undefined;
  return readHostAndTag(line, i + 1, opts, out);
}

/**
 * `kernel: MSG` or `HOSTNAME kernel: MSG` at `pos`, after a PRI without a stamp; undefined for anything else (which
 * stays the message). A hostname holds no `=`, so a LOG line's first field never passes for one.
 */
function kernelTagged(line: string, pos: number, opts: EnvelopeOptions, out: Envelope): Envelope | undefined {
  let tag = pos;
  if (!line.startsWith(KERNEL_TAG, pos)) {
    const sp = line.indexOf(' ', pos);
    if (sp <= pos || !line.startsWith(KERNEL_TAG, sp + 1)) return undefined;
    const eq = line.indexOf('=', pos);
    if (eq >= 0 && eq < sp) return undefined;
    out.hostname = opts.names.get(line, pos, sp);
    tag = sp + 1;
  }
  messageOnly(out, 'rfc3164', pos);
  out.appname = 'kernel';
  out.messageStart = readUptime(line, tag + KERNEL_TAG.length, out);
  return out;
}
const KERNEL_TAG = 'kernel: ';

/**
 * `[HOSTNAME ]TAG: MSG`. The hostname is absent when the first word is already a tag (`kernel:`). A tag other
 * than the kernel's followed straight by `IN=` is the LOG prefix of a sender that omitted the tag, and stays in
 * the message.
 */
function readHostAndTag(line: string, pos: number, opts: EnvelopeOptions, out: Envelope): Envelope {
  let sp = line.indexOf(' ', pos);
  if (sp < 0) {
    out.messageStart = pos;
    return out;
  }
  let tagStart = pos;
  if (line.charCodeAt(sp - 1) !== COLON) {
    if (sp > pos) out.hostname = opts.names.get(line, pos, sp);
    tagStart = sp + 1;
    sp = line.indexOf(' ', tagStart);
    if (sp < 0 || line.charCodeAt(sp - 1) !== COLON) {
      out.messageStart = tagStart;
      return out;
    }
  }
  const msg = sp + 1;
  let nameEnd = sp - 1;
  if (line.charCodeAt(nameEnd - 1) === CLOSE) {
    const open = line.lastIndexOf('[', nameEnd - 1);
    if (open > tagStart) {
      out.procid = opts.names.get(line, open + 1, nameEnd - 1);
      nameEnd = open;
    }
  }
  const isKernel = nameEnd - tagStart === 6 && line.startsWith('kernel', tagStart);
  if (!isKernel && line.startsWith('IN=', msg)) {
    out.procid = undefined;
    out.messageStart = tagStart;
    return out;
  }
  out.appname = isKernel ? 'kernel' : opts.names.get(line, tagStart, nameEnd);
  out.messageStart = readUptime(line, msg, out);
  return out;
}

/**
 * Reads a `[ 1253.212740] ` kernel stamp at `pos` (imklog keeps it after the tag) into `out.kernelUptime` and
 * returns where the text after it starts, or `pos` if there is none.
 */
function readUptime(line: string, pos: number, out: Envelope): number {
  const us = uptimeMicros(line, pos);
  if (us < 0) return pos;
  out.kernelUptime = us / 1e6;
  const close = line.indexOf(']', pos);
  return line.charCodeAt(close + 1) === SPACE ? close + 2 : close + 1;
}

/** Microseconds of a `[   12.345678]` stamp at `pos`, or -1. */
function uptimeMicros(line: string, pos: number): number {
  if (line.charCodeAt(pos) !== OPEN) return -1;
  let i = pos + 1;
  while (line.charCodeAt(i) === SPACE) i++;
  let seconds = 0;
  const digitsStart = i;
  for (let c = line.charCodeAt(i); isDigit(c); c = line.charCodeAt(++i)) seconds = seconds * 10 + (c - 48);
  if (i === digitsStart || i - digitsStart > 12 || line.charCodeAt(i) !== DOT) return -1;
  let micros = 0;
  let digits = 0;
  for (let c = line.charCodeAt(++i); isDigit(c); c = line.charCodeAt(++i)) {
    if (digits < 6) micros = micros * 10 + (c - 48);
    digits++;
  }
  if (digits === 0 || line.charCodeAt(i) !== CLOSE) return -1;
  for (; digits < 6; digits++) micros *= 10;
  return seconds * 1e6 + micros;
}

/** Sets the wall-clock time of an uptime-only record from the boot time, when one was given. */
function stampFromUptime(uptimeUs: number, opts: EnvelopeOptions, out: Envelope): void {
  out.kernelUptime = uptimeUs / 1e6;
  const boot = opts.bootTime;
  if (boot === undefined) return;
  const us = boot.micros + (uptimeUs % 1000);
  out.timestampMs = boot.ms + Math.floor(uptimeUs / 1000) + (us >= 1000 ? 1 : 0);
  out.timestampMicros = us % 1000;
  out.timestampPrecise = true;
}

/** `[  884.963094] text` after an optional PRI; `[  884.963094] host kernel: text` is journalctl short-monotonic. */
function parseDmesg(line: string, pos: number, opts: EnvelopeOptions, out: Envelope): Envelope | SkipReason {
  const us = uptimeMicros(line, pos);
  if (us < 0) return 'bad-envelope';
  stampFromUptime(us, opts, out);
  const close = line.indexOf(']', pos);
  let msg = line.charCodeAt(close + 1) === SPACE ? close + 2 : close + 1;
  out.format = 'dmesg';
  if (out.priority === undefined) {
    const sp = line.indexOf(' ', msg);
    if (sp > msg && line.startsWith('kernel: ', sp + 1)) {
      out.format = 'journal';
      out.hostname = opts.names.get(line, msg, sp);
      out.appname = 'kernel';
      msg = sp + 9;
    }
  }
  out.messageStart = msg;
  return out;
}

/** `PRI,SEQ,TS_US,FLAG[,…];text` (fields after FLAG appear with CONFIG_PRINTK_CALLER). */
function parseKmsg(line: string, opts: EnvelopeOptions, out: Envelope): boolean {
  let i = 0;
  let pri = 0;
  for (let c = line.charCodeAt(i); isDigit(c); c = line.charCodeAt(++i)) pri = pri * 10 + (c - 48);
  if (i === 0 || i > 4 || line.charCodeAt(i) !== COMMA) return false;
  const seqStart = ++i;
  while (isDigit(line.charCodeAt(i))) i++;
  if (i === seqStart || line.charCodeAt(i) !== COMMA) return false;
  const tsStart = ++i;
  let us = 0;
  for (let c = line.charCodeAt(i); isDigit(c); c = line.charCodeAt(++i)) us = us * 10 + (c - 48);
  if (i === tsStart || line.charCodeAt(i) !== COMMA) return false;
  const semi = line.indexOf(';', i + 1);
  if (semi < 0) return false;
  out.format = 'kmsg';
  out.priority = pri;
  stampFromUptime(us, opts, out);
  out.messageStart = semi + 1;
  return true;
}

/** `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]` after `<PRI>VERSION `. */
function parse5424(line: string, pos: number, opts: EnvelopeOptions, out: Envelope): Envelope | SkipReason {
  out.format = 'rfc5424';
  let i = pos;
  if (line.charCodeAt(i) === MINUS) {
    i++;
  } else {
    const instant = opts.instant;
    i = parseIsoAt(line, i, instant, opts.isoHour);
    if (i < 0) return 'bad-envelope';
    out.timestampMs = instant.ms;
    out.timestampMicros = instant.micros;
    out.timestampPrecise = instant.precise;
  }
  if (line.charCodeAt(i) !== SPACE) return 'bad-envelope';
  let fieldEnd = 0;
  for (let field = 0; field < 4; field++) {
    const start = i + 1;
    fieldEnd = line.indexOf(' ', start);
    if (fieldEnd <= start) return 'bad-envelope';
    if (fieldEnd === start + 1 && line.charCodeAt(start) === MINUS) {
      i = fieldEnd;
      continue;
    }
    const value = opts.names.get(line, start, fieldEnd);
    if (field === 0) out.hostname = value;
    else if (field === 1) out.appname = value;
    else if (field === 2) out.procid = value;
    else out.msgid = value;
    i = fieldEnd;
  }
  i++;
  if (line.charCodeAt(i) === MINUS) {
    i++;
  } else {
    i = readStructuredData(line, i, out);
    if (i < 0) return 'bad-envelope';
  }
  if (i >= line.length) {
    out.messageStart = i;
    return out;
  }
  if (line.charCodeAt(i) !== SPACE) return 'bad-envelope';
  i++;
  if (line.charCodeAt(i) === BOM) i++;
  out.messageStart = i;
  return out;
}

/** One or more `[id name="value" …]` elements; `\"`, `\\` and `\]` are escapes in values. Returns the end or -1. */
function readStructuredData(line: string, pos: number, out: Envelope): number {
  if (line.charCodeAt(pos) !== OPEN) return -1;
  const sd: Record<string, Record<string, string>> = Object.create(null) as Record<string, Record<string, string>>;
  let i = pos;
  while (line.charCodeAt(i) === OPEN) {
    const idStart = i + 1;
    i = idStart;
    for (let c = line.charCodeAt(i); c > SPACE && c !== CLOSE && c !== EQ && c !== QUOTE; c = line.charCodeAt(++i));
    if (i === idStart) return -1;
    const params: Record<string, string> = sd[line.slice(idStart, i)] ?? (Object.create(null) as Record<string, string>);
    sd[line.slice(idStart, i)] = params;
    while (line.charCodeAt(i) === SPACE) {
      const nameStart = i + 1;
      i = nameStart;
      for (let c = line.charCodeAt(i); c > SPACE && c !== CLOSE && c !== EQ && c !== QUOTE; c = line.charCodeAt(++i));
      if (i === nameStart || line.charCodeAt(i) !== EQ || line.charCodeAt(i + 1) !== QUOTE) return -1;
      const name = line.slice(nameStart, i);
      i += 2;
      let value = '';
      let chunk = i;
      for (;;) {
        const c = line.charCodeAt(i);
        if (Number.isNaN(c)) return -1;
        if (c === QUOTE) break;
        if (c === BACKSLASH) {
          const e = line.charCodeAt(i + 1);
          if (e === QUOTE || e === BACKSLASH || e === CLOSE) {
            value += line.slice(chunk, i);
            chunk = i + 1;
            i += 2;
            continue;
          }
        }
        i++;
      }
      value += line.slice(chunk, i);
      params[name] = value;
      i++;
    }
    if (line.charCodeAt(i) !== CLOSE) return -1;
    i++;
  }
  out.structuredData = sd;
  return i;
}
