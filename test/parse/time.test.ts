import t from 'tap';
import { ErrorCode } from '../../src/errors.js';
import { createTimeZone, daysInMonth, IsoFormatter, parseIsoAt, parseIsoInstant, Rfc3164Clock, YEAR_FUTURE_SLACK_MS } from '../../src/parse/time.js';
import type { Instant } from '../../src/parse/time.js';

const at = (iso: string): number => Date.parse(iso);

t.test('zone offsets across DST', async (t) => {
  const berlin = createTimeZone('Europe/Berlin');
  const table: [string, number][] = [
    ['2026-01-15T12:00:00Z', 60],
    ['2026-07-15T12:00:00Z', 120],
    ['2026-03-29T00:59:59Z', 60],
    ['2026-03-29T01:00:00Z', 120],
    ['2026-10-25T00:59:59Z', 120],
    ['2026-10-25T01:00:00Z', 60],
  ];
  for (const [utc, minutes] of table) t.equal(berlin.offsetMs(at(utc)), minutes * 60_000, utc);
  t.equal(createTimeZone('America/St_Johns').offsetMs(at('2026-01-15T12:00:00Z')), -210 * 60_000, 'half-hour zone');
  t.equal(createTimeZone('UTC').offsetMs(at('2026-07-15T12:00:00Z')), 0);
});

t.test('local wall time to UTC', async (t) => {
  const berlin = createTimeZone('Europe/Berlin');
  const table: [number[], string, string][] = [
    [[2026, 1, 15, 12, 0], '2026-01-15T11:00:00.000Z', 'winter'],
    [[2026, 7, 15, 12, 30], '2026-07-15T10:30:00.000Z', 'summer'],
    [[2026, 3, 29, 1, 59], '2026-03-29T00:59:00.000Z', 'just before the gap'],
    [[2026, 3, 29, 2, 30], '2026-03-29T01:30:00.000Z', 'in the gap: read with the earlier offset'],
    [[2026, 3, 29, 3, 0], '2026-03-29T01:00:00.000Z', 'after the gap'],
    [[2026, 10, 25, 2, 30], '2026-10-25T00:30:00.000Z', 'repeated hour: the earlier instant'],
    [[2026, 10, 25, 3, 0], '2026-10-25T02:00:00.000Z', 'after the repeat'],
  ];
  for (const [[y, mo, d, h, mi], want, name] of table) t.equal(new Date(berlin.localToUtcMs(y!, mo!, d!, h!, mi!)).toISOString(), want, name);
});

t.test('unknown zone is a config error', async (t) => {
  t.throws(() => createTimeZone('Mars/Olympus_Mons'), { name: 'DockflowError', code: ErrorCode.CONFIG_INVALID });
});

t.test('year inference', async (t) => {
  const clock = new Rfc3164Clock(createTimeZone('UTC'));
  const year = (mo: number, d: number, h: number, ref: string, forced?: number): number => {
    const ms = clock.hourStartMs(mo, d, h, at(ref), forced);
    return Number.isNaN(ms) ? NaN : new Date(ms).getUTCFullYear();
  };
  t.equal(year(12, 31, 23, '2027-01-01T00:05:00Z'), 2026, 'December read in January');
  t.equal(year(1, 1, 0, '2026-12-31T23:00:00Z'), 2027, 'a line just ahead of the reference');
  t.equal(year(1, 5, 0, '2026-12-31T23:00:00Z'), 2026, 'more than the slack ahead is last year');
  t.equal(year(2, 29, 12, '2027-03-01T00:00:00Z'), 2024, '29 February');
  t.ok(Number.isNaN(year(2, 29, 12, '2027-03-01T00:00:00Z', 2027)), 'forced year without the date');
  t.equal(year(6, 1, 0, '2027-03-01T00:00:00Z', 2011), 2011, 'forced year');
  t.equal(year(6, 1, 0, '2027-03-01T00:00:00Z', 2011), 2011, 'forced year memo');
  // The memo holds only while the reference keeps the same answer.
  t.equal(year(12, 31, 23, '2026-12-31T23:00:00Z'), 2026);
  t.equal(year(12, 31, 23, '2027-12-29T00:00:00Z'), 2027);
  t.equal(year(12, 31, 23, '2026-12-31T23:00:00Z'), 2026);
  t.ok(YEAR_FUTURE_SLACK_MS >= 24 * 3_600_000);
});

t.test('days in month', async (t) => {
  t.same([2023, 2024, 1900, 2000].map((y) => daysInMonth(y, 2)), [28, 29, 28, 29]);
  t.same([1, 4, 6, 9, 11, 12].map((m) => daysInMonth(2026, m)), [31, 30, 30, 30, 30, 31]);
});

t.test('ISO 8601 stamps', async (t) => {
  const table: [string, string | undefined, boolean?][] = [
    ['2026-11-27T06:43:41Z', '2026-11-27T06:43:41.000Z', false],
    ['2026-11-27t06:43:41z', '2026-11-27T06:43:41.000Z', false],
    ['2026-11-27T06:43:41.1Z', '2026-11-27T06:43:41.100Z', false],
    ['2026-11-27T06:43:41.674651+00:00', '2026-11-27T06:43:41.674Z', true],
    ['2026-11-27T07:43:41+01:00', '2026-11-27T06:43:41.000Z', false],
    ['2026-11-27T07:43:41+0100', '2026-11-27T06:43:41.000Z', false],
    ['2026-11-27T01:13:41-05:30', '2026-11-27T06:43:41.000Z', false],
    ['2026-11-27T06:43:41', undefined],
    ['2026-11-27 06:43:41Z', undefined],
    ['2026-13-27T06:43:41Z', undefined],
    ['2026-02-29T06:43:41Z', undefined],
    ['2026-11-27T24:00:00Z', undefined],
    ['2026-11-27T06:43:41.Z', undefined],
    ['2026-11-27T06:43:41+25:00', undefined],
    ['2026-11-27T06:43:41+01:', undefined],
    ['', undefined],
  ];
  for (const [s, want, precise] of table) {
    const i = parseIsoInstant(s);
    t.equal(i === undefined ? undefined : new Date(i.ms).toISOString(), want, JSON.stringify(s));
    if (i !== undefined) t.equal(i.precise, precise, `${s} precise`);
  }
  const out: Instant = { ms: 0, micros: 0, precise: false };
  const line = 'x 2026-11-27T06:43:41.123456789Z vm';
  t.equal(parseIsoAt(line, 2, out), line.indexOf(' vm'));
  t.same(out, { ms: at('2026-11-27T06:43:41.123Z'), micros: 456, precise: true });
});

t.test('ISO formatter', async (t) => {
  const f = new IsoFormatter();
  const ms = at('2026-11-27T06:43:41.674Z');
  t.equal(f.format(ms, 651, true), '2026-11-27T06:43:41.674651Z');
  t.equal(f.format(ms, 651, false), '2026-11-27T06:43:41.674Z');
  t.equal(f.format(ms + 326, 0, false), '2026-11-27T06:43:42.000Z', 'next second');
  t.equal(f.format(ms, 5, true), '2026-11-27T06:43:41.674005Z', 'back again');
  t.equal(f.format(0, 0, false), '1970-01-01T00:00:00.000Z');
  t.equal(f.format(ms + 0.75, 0, false), '2026-11-27T06:43:41.674Z', 'fractional milliseconds (mtimeMs)');
});
