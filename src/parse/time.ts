import { DockflowError, ErrorCode } from '../errors.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/**
 * How far in the future (relative to the reference) an RFC 3164 stamp may lie before it is read as last year's:
 * covers clock skew and a sender zone that is ahead of the receiver, while a December line read in January still
 * falls back into the previous year.
 */
export const YEAR_FUTURE_SLACK_MS = 3 * DAY_MS;

/** Years tried when inferring one: a 29 February stamp needs up to 8 back (1896 → 1904, 2096 → 2104). */
const MAX_YEAR_STEPS = 9;

/** Bounds the per-zone offset cache; the hot path hits the last-hour memo in {@link Rfc3164Clock} anyway. */
const MAX_CACHED_HOURS = 4096;

/** An IANA time zone that can turn local wall-clock time into UTC, with the offset cached per UTC hour. */
export interface TimeZone {
  readonly name: string;
  /** Milliseconds to add to UTC to get local time at `utcMs`. */
  offsetMs(utcMs: number): number;
  /**
   * UTC instant of a local wall-clock time (month 1–12). Ambiguous times (the repeated hour when clocks go back)
   * resolve to the earlier instant; times in the gap when clocks go forward are read with the offset in force
   * before the gap (02:30 in a 02:00→03:00 gap becomes 03:30 local), as Temporal's `compatible` does.
   */
  localToUtcMs(year: number, month: number, day: number, hour: number, minute: number): number;
}

const utcZone: TimeZone = {
  name: 'UTC',
  offsetMs: () => 0,
  localToUtcMs: (year, month, day, hour, minute) => Date.UTC(year, month - 1, day, hour, minute),
};

/** Builds a zone from an IANA name (`Europe/Berlin`) or `UTC`. Throws `CONFIG_INVALID` on an unknown name. */
export function createTimeZone(name: string): TimeZone {
  if (name === 'UTC' || name === 'Etc/UTC' || name === 'Z') return utcZone;
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: name,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  } catch (err) {
    throw new DockflowError(ErrorCode.CONFIG_INVALID, `unknown time zone "${name}"`, { cause: err });
  }
  const byHour = new Map<number, number>();

  // Zone offsets change on minute boundaries at most, so the offset at the start of a UTC hour holds through it
  // for every zone whose transitions fall on the hour (all current ones but Lord Howe's half-hour shift).
  const offsetMs = (utcMs: number): number => {
    const hour = Math.floor(utcMs / HOUR_MS);
    const cached = byHour.get(hour);
    if (cached !== undefined) return cached;
    const at = hour * HOUR_MS;
    let y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
    for (const part of format.formatToParts(at)) {
      const v = Number(part.value);
      switch (part.type) {
        case 'year': y = v; break;
        case 'month': mo = v; break;
        case 'day': d = v; break;
        case 'hour': h = v; break;
        case 'minute': mi = v; break;
        case 'second': s = v; break;
        default: break;
      }
    }
    const offset = Date.UTC(y, mo - 1, d, h, mi, s) - at;
    if (byHour.size >= MAX_CACHED_HOURS) byHour.clear();
    byHour.set(hour, offset);
    return offset;
  };

  const localToUtcMs = (year: number, month: number, day: number, hour: number, minute: number): number => {
    const local = Date.UTC(year, month - 1, day, hour, minute);
    // The offsets a day either side are the two regimes a transition near `local` can separate.
    const before = offsetMs(local - DAY_MS);
    const after = offsetMs(local + DAY_MS);
    if (offsetMs(local - before) === before) return local - before;
    if (offsetMs(local - after) === after) return local - after;
    return local - before;
  };

  return { name, offsetMs, localToUtcMs };
}

export function daysInMonth(year: number, month: number): number {
  switch (month) {
    case 2: return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
    case 4: case 6: case 9: case 11: return 30;
    default: return 31;
  }
}

/**
 * Resolves RFC 3164 stamps (`Nov 27 06:43:29`: no year, no zone) to UTC. Year: the latest one that puts the stamp
 * no more than {@link YEAR_FUTURE_SLACK_MS} after the reference time, unless a year is forced. The UTC start of the
 * stamp's local hour is memoised with the validity bounds of the year choice, so consecutive lines from the same
 * hour cost two comparisons. One instance per parser: it holds mutable caches.
 */
export class Rfc3164Clock {
  readonly zone: TimeZone;
  private memoKey = -1;
  private memoBase = 0;
  /** Hour start of the same stamp one year later (Infinity when that year has no such day): the memo holds while
   * `memoBase <= reference + slack < memoNext`. */
  private memoNext = 0;

  constructor(zone: TimeZone) {
    this.zone = zone;
  }

  /**
   * UTC milliseconds of the start of the stamp's local hour, or NaN when no year within reach has that date
   * (29 February) or the forced year lacks it.
   */
  hourStartMs(month: number, day: number, hour: number, referenceMs: number, forcedYear: number | undefined): number {
    const key = forcedYear === undefined ? (month * 32 + day) * 24 + hour : -2 - ((forcedYear * 13 + month) * 32 + day) * 24 - hour;
    if (key === this.memoKey) {
      if (forcedYear !== undefined) return this.memoBase;
      const limit = referenceMs + YEAR_FUTURE_SLACK_MS;
      if (this.memoBase <= limit && limit < this.memoNext) return this.memoBase;
    }
    let base = NaN;
    let next = Infinity;
    if (forcedYear !== undefined) {
      if (day <= daysInMonth(forcedYear, month)) base = this.zone.localToUtcMs(forcedYear, month, day, hour, 0);
    } else {
      const limit = referenceMs + YEAR_FUTURE_SLACK_MS;
      let year = new Date(limit).getUTCFullYear() + 1;
      for (let step = 0; step < MAX_YEAR_STEPS; step++, year--) {
        if (day > daysInMonth(year, month)) continue;
        const candidate = this.zone.localToUtcMs(year, month, day, hour, 0);
        if (candidate <= limit) {
          base = candidate;
          break;
        }
        next = candidate;
      }
    }
    if (Number.isNaN(base)) {
      this.memoKey = -1;
      return NaN;
    }
    this.memoKey = key;
    this.memoBase = base;
    this.memoNext = next;
    return base;
  }
}

/** A parsed instant: whole milliseconds, the microseconds past them, and whether the input was finer than 1 ms. */
export interface Instant {
  ms: number;
  micros: number;
  precise: boolean;
}

const THREE_DIGITS: readonly string[] = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

/**
 * Formats instants as ISO 8601 UTC (`2026-11-27T06:43:29.895Z`, or `.895471Z` when precise). Keeps the
 * date-and-second prefix of the last call, since consecutive log lines share it. One instance per parser.
 */
export class IsoFormatter {
  private second = NaN;
  private prefix = '';

  /** `ms` may be fractional (a file's `mtimeMs`): the fraction is dropped, as `micros` carries sub-ms time. */
  format(ms: number, micros: number, precise: boolean): string {
    ms = Math.floor(ms);
    const second = Math.floor(ms / 1000);
    if (second !== this.second) {
      const iso = new Date(second * 1000).toISOString();
      // Years past 9999 come out as `+010000-…`; slice up to the seconds wherever they end.
      this.prefix = iso.slice(0, iso.length - 5);
      this.second = second;
    }
    const milli = THREE_DIGITS[ms - second * 1000] as string;
    return precise ? `${this.prefix}.${milli}${THREE_DIGITS[micros] as string}Z` : `${this.prefix}.${milli}Z`;
  }
}

const isDigit = (c: number): boolean => c >= 48 && c <= 57;

/** Reads `n` ASCII digits at `pos`; -1 if any is not a digit. */
export function readDigits(s: string, pos: number, n: number): number {
  let v = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(pos + i);
    if (!isDigit(c)) return -1;
    v = v * 10 + (c - 48);
  }
  return v;
}

/**
 * Reads an optional `.fraction` at `pos` into `out.micros` (µs past the second, truncated to 6 digits) and
 * `out.precise` (more than 3 digits given). Returns the position after it, or -1 on a dot without digits.
 */
export function readFraction(s: string, pos: number, out: Instant): number {
  out.micros = 0;
  out.precise = false;
  if (s.charCodeAt(pos) !== 46 /* . */) return pos;
  let i = pos + 1;
  let micros = 0;
  let digits = 0;
  for (let c = s.charCodeAt(i); isDigit(c); c = s.charCodeAt(++i)) {
    if (digits < 6) micros = micros * 10 + (c - 48);
    digits++;
  }
  if (digits === 0) return -1;
  for (let d = digits; d < 6; d++) micros *= 10;
  out.micros = micros;
  out.precise = digits > 3;
  return i;
}

/** `Date.UTC` of the last date-and-hour `parseIsoAt` read (before its offset): consecutive stamps share it, and `Date.UTC` is not free. */
export interface HourMemo {
  key: number;
  startMs: number;
}

export const newHourMemo = (): HourMemo => ({ key: -1, startMs: 0 });

/**
 * Parses an RFC 3339 / ISO 8601 stamp at `pos` (`2026-11-27T06:43:29.895471+00:00`, `Z`, `+0100` as journalctl
 * short-iso prints it) into `out` and returns the position after it, or -1 if it is not one.
 */
export function parseIsoAt(s: string, pos: number, out: Instant, memo: HourMemo = newHourMemo()): number {
  const year = readDigits(s, pos, 4);
  if (year < 0 || s.charCodeAt(pos + 4) !== 45 || s.charCodeAt(pos + 7) !== 45) return -1;
  const month = readDigits(s, pos + 5, 2);
  const day = readDigits(s, pos + 8, 2);
  const sep = s.charCodeAt(pos + 10);
  if (sep !== 84 /* T */ && sep !== 116 /* t */) return -1;
  const hour = readDigits(s, pos + 11, 2);
  const minute = readDigits(s, pos + 14, 2);
  const second = readDigits(s, pos + 17, 2);
  if (s.charCodeAt(pos + 13) !== 58 || s.charCodeAt(pos + 16) !== 58) return -1;
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return -1;
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60) return -1;
  let i = readFraction(s, pos + 19, out);
  if (i < 0) return -1;
  let offsetMin = 0;
  const z = s.charCodeAt(i);
  if (z === 90 /* Z */ || z === 122 /* z */) {
    i++;
  } else if (z === 43 /* + */ || z === 45 /* - */) {
    const oh = readDigits(s, i + 1, 2);
    let om: number;
    if (s.charCodeAt(i + 3) === 58) {
      om = readDigits(s, i + 4, 2);
      i += 6;
    } else {
      om = readDigits(s, i + 3, 2);
      i += 5;
    }
    if (oh < 0 || om < 0 || oh > 23 || om > 59) return -1;
    offsetMin = (z === 45 ? -1 : 1) * (oh * 60 + om);
  } else {
    return -1;
  }
  const key = ((year * 16 + month) * 32 + day) * 24 + hour;
  if (key !== memo.key) {
    memo.key = key;
    memo.startMs = Date.UTC(year, month - 1, day, hour);
  }
  out.ms = memo.startMs + minute * 60_000 + second * 1000 - offsetMin * 60_000 + Math.floor(out.micros / 1000);
  out.micros %= 1000;
  return i;
}

/** Parses a whole ISO 8601 instant with offset (the CLI's `--boot-time`); undefined if it is not one. */
export function parseIsoInstant(s: string): Instant | undefined {
  const out: Instant = { ms: 0, micros: 0, precise: false };
  return parseIsoAt(s, 0, out) === s.length ? out : undefined;
}
