import t from 'tap';
import { createEnvelopeOptions, NameCache, parseEnvelope, SYSLOG_FACILITIES, SYSLOG_SEVERITIES } from '../../src/parse/syslog.js';
import type { Envelope, EnvelopeOptionsInput } from '../../src/parse/syslog.js';
import { parseIsoInstant } from '../../src/parse/time.js';
import { expectOf, FORMAT_FILES, messages, SCENARIOS, styleOf } from '../fixtures/syslog/corpus.js';
import type { Style } from '../fixtures/syslog/corpus.js';

// A real LOG line from the icmp-echo capture; every envelope below wraps it.
const K =
  'DOCKER-FWD: IN=docker0 OUT=eth0 PHYSIN=fxveth6c17be9 MAC=02:42:5d:3c:1a:7e:02:42:ac:11:00:02:08:00 SRC=172.17.0.2 DST=198.51.100.2 LEN=84 TOS=0x00 PREC=0x00 TTL=63 ID=15838 DF PROTO=ICMP TYPE=8 CODE=0 ID=4660 SEQ=1 ';
const REF = Date.parse('2026-11-28T00:00:00Z');
const BOOT = '2026-11-27T06:22:37.466475Z';

interface Case {
  name: string;
  line: string;
  opts?: EnvelopeOptionsInput;
  want: Partial<Envelope> & { iso?: string | undefined };
}

const iso = (e: Envelope): string | undefined =>
  e.timestampMs === undefined ? undefined : new Date(e.timestampMs).toISOString().replace('Z', `${String(e.timestampMicros).padStart(3, '0')}Z`);

const cases: Case[] = [
  { name: 'RFC 3164 with PRI, hostname, kernel tag', line: `<4>Nov 27 06:43:41 vm kernel: ${K}`, want: { format: 'rfc3164', priority: 4, hostname: 'vm', appname: 'kernel', iso: '2026-11-27T06:43:41.000000Z', timestampPrecise: false } },
  { name: 'kern.log line (no PRI)', line: `Nov 27 06:43:41 vm kernel: ${K}`, want: { format: 'rfc3164', priority: undefined, hostname: 'vm', appname: 'kernel', iso: '2026-11-27T06:43:41.000000Z' } },
  { name: 'RFC 3164 without hostname', line: `<4>Nov 27 06:43:41 kernel: ${K}`, want: { format: 'rfc3164', hostname: undefined, appname: 'kernel' } },
  { name: 'imklog keeps the uptime stamp', line: `<4>Nov 27 06:43:42 vm kernel: [ 1265.103048] ${K}`, want: { format: 'rfc3164', hostname: 'vm', kernelUptime: 1265.103048 } },
  { name: 'uptime stamp without padding', line: `<4>Nov 27 06:43:42 vm kernel: [1265.103048] ${K}`, want: { kernelUptime: 1265.103048 } },
  { name: 'single-digit day padded with a space', line: `Nov  7 06:43:41 vm kernel: ${K}`, want: { iso: '2026-11-07T06:43:41.000000Z', hostname: 'vm' } },
  { name: 'single-digit day unpadded', line: `<4>Nov 7 06:43:41 vm kernel: ${K}`, want: { iso: '2026-11-07T06:43:41.000000Z' } },
  { name: 'journalctl short-precise (fractional BSD stamp)', line: `Nov 27 06:43:42.569523 vm kernel: ${K}`, want: { iso: '2026-11-27T06:43:42.569523Z', timestampPrecise: true } },
  { name: 'tag with pid', line: `<4>Nov 27 06:43:41 vm ulogd[812]: ${K}`, want: { appname: 'ulogd', procid: '812' } },
  { name: 'a LOG prefix where the tag would be stays in the message', line: `<4>Nov 27 06:43:41 vm ${K}`, want: { hostname: 'vm', appname: undefined } },
  { name: 'rsyslog file format (RFC 3339, µs, offset)', line: `2026-11-27T06:43:29.896926+00:00 vm kernel: ${K}`, want: { format: 'rfc3164', iso: '2026-11-27T06:43:29.896926Z', timestampPrecise: true, hostname: 'vm' } },
  { name: 'journalctl short-iso (+0000)', line: `2026-11-27T07:43:42+0100 vm kernel: ${K}`, want: { iso: '2026-11-27T06:43:42.000000Z', timestampPrecise: false } },
  { name: 'RFC 3164 PRI without a stamp: the rest is the message', line: `<4>${K}`, want: { format: 'rfc3164', priority: 4, iso: undefined, hostname: undefined } },
  { name: 'PRI without a stamp, kernel tag (a hand-made sender)', line: `<4>kernel: ${K}`, want: { format: 'rfc3164', priority: 4, iso: undefined, hostname: undefined, appname: 'kernel' } },
  { name: 'PRI without a stamp, kernel tag and uptime', line: `<6>kernel: [ 1253.212740] ${K}`, want: { format: 'rfc3164', priority: 6, appname: 'kernel', kernelUptime: 1253.21274 } },
  { name: 'PRI without a stamp, hostname and kernel tag', line: `<4>gw1 kernel: ${K}`, want: { format: 'rfc3164', hostname: 'gw1', appname: 'kernel', iso: undefined } },
  { name: 'RFC 5424 from rsyslog', line: `<4>1 2026-11-27T06:43:41.674651+00:00 vm kernel - - - ${K}`, want: { format: 'rfc5424', version: 1, priority: 4, hostname: 'vm', appname: 'kernel', procid: undefined, msgid: undefined, structuredData: undefined, iso: '2026-11-27T06:43:41.674651Z', timestampPrecise: true } },
  { name: 'RFC 5424 Z, milliseconds, procid and msgid', line: `<12>1 2026-11-27T06:43:41.674Z host.example.org app 1234 ID47 - ${K}`, want: { priority: 12, hostname: 'host.example.org', appname: 'app', procid: '1234', msgid: 'ID47', iso: '2026-11-27T06:43:41.674000Z', timestampPrecise: false } },
  { name: 'RFC 5424 negative offset', line: `<4>1 2026-11-27T01:43:41.5-05:00 vm kernel - - - ${K}`, want: { iso: '2026-11-27T06:43:41.500000Z' } },
  { name: 'RFC 5424 nanoseconds truncate to µs', line: `<4>1 2026-11-27T06:43:41.123456789Z vm kernel - - - ${K}`, want: { iso: '2026-11-27T06:43:41.123456Z' } },
  { name: 'RFC 5424 all NILVALUE', line: `<4>1 - - - - - - ${K}`, want: { format: 'rfc5424', iso: undefined, hostname: undefined, appname: undefined } },
  {
    name: 'RFC 5424 structured data with escapes, several elements',
    line: `<4>1 2026-11-27T06:43:41Z vm kernel - - [exampleSDID@32473 iut="3" eventSource="Appl\\"ic\\]a\\\\tion" eventID="1011"][examplePriority@32473 class="high"] ${K}`,
    want: { structuredData: { 'exampleSDID@32473': { iut: '3', eventSource: 'Appl"ic]a\\tion', eventID: '1011' }, 'examplePriority@32473': { class: 'high' } } },
  },
  { name: 'RFC 5424 SD element without params', line: `<4>1 2026-11-27T06:43:41Z vm kernel - - [origin] ${K}`, want: { structuredData: { origin: {} } } },
  { name: 'RFC 5424 BOM before MSG', line: `<4>1 2026-11-27T06:43:41Z vm kernel - - - \uFEFF${K}`, want: { format: 'rfc5424' } },
  { name: 'dmesg --raw', line: `<4>[ 1265.103121] ${K}`, want: { format: 'dmesg', priority: 4, kernelUptime: 1265.103121, iso: undefined } },
  { name: 'dmesg --raw with a boot time', line: `<4>[ 1265.103121] ${K}`, opts: { bootTime: parseIsoInstant(BOOT)! }, want: { iso: '2026-11-27T06:43:42.569596Z', timestampPrecise: true } },
  { name: 'dmesg without --raw', line: `[ 1265.103121] ${K}`, want: { format: 'dmesg', priority: undefined, kernelUptime: 1265.103121 } },
  { name: 'journalctl short-monotonic', line: `[ 1265.103121] vm kernel: ${K}`, want: { format: 'journal', hostname: 'vm', appname: 'kernel', kernelUptime: 1265.103121 } },
  { name: '/dev/kmsg record', line: `4,50813,1265103121,-;${K}`, want: { format: 'kmsg', priority: 4, kernelUptime: 1265.103121, iso: undefined } },
  { name: '/dev/kmsg record with caller and boot time', line: `4,50813,1265103121,-,caller=T412;${K}`, opts: { bootTime: parseIsoInstant(BOOT)! }, want: { format: 'kmsg', iso: '2026-11-27T06:43:42.569596Z' } },
  { name: 'bare kernel text', line: K, want: { format: 'bare', iso: undefined } },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const e = parseEnvelope(c.line, createEnvelopeOptions({ referenceMs: REF, ...c.opts }));
    if (typeof e === 'string') return t.fail(`skipped: ${e}`);
    const { iso: wantIso, ...fields } = c.want;
    t.match(e, fields);
    for (const [k, v] of Object.entries(fields)) if (v === undefined) t.equal(e[k as keyof Envelope], undefined, k);
    if ('iso' in c.want) t.equal(iso(e), wantIso, 'timestamp');
    t.equal(c.line.slice(e.messageStart), K, 'message starts at the LOG prefix');
  });
}

t.test('RFC 5424 without MSG ends the message at the line end', async (t) => {
  const line = '<4>1 2026-11-27T06:43:41Z vm kernel - - -';
  const e = parseEnvelope(line, createEnvelopeOptions({ referenceMs: REF }));
  t.not(typeof e, 'string');
  if (typeof e !== 'string') t.equal(e.messageStart, line.length);
});

const skips: [string, string, string][] = [
  ['empty line', '', 'empty'],
  ['blank line', '   \t', 'empty'],
  ['kmsg continuation line', ' SUBSYSTEM=net', 'not-netfilter'],
  ['PRI out of range', `<192>Nov 27 06:43:41 vm kernel: ${K}`, 'bad-envelope'],
  ['PRI too long', `<0004>Nov 27 06:43:41 vm kernel: ${K}`, 'bad-envelope'],
  ['empty PRI', `<>${K}`, 'bad-envelope'],
  ['unterminated PRI', '<4', 'bad-envelope'],
  ['RFC 5424 impossible date', `<4>1 2026-02-30T06:43:41Z vm kernel - - - ${K}`, 'bad-envelope'],
  ['RFC 5424 stamp without zone', `<4>1 2026-11-27T06:43:41 vm kernel - - - ${K}`, 'bad-envelope'],
  ['RFC 5424 header cut short', '<4>1 2026-11-27T06:43:41Z vm kernel', 'bad-envelope'],
  ['RFC 5424 double space', `<4>1 2026-11-27T06:43:41Z vm  kernel - - - ${K}`, 'bad-envelope'],
  ['RFC 5424 unterminated SD', `<4>1 2026-11-27T06:43:41Z vm kernel - - [id a="1 ${K}`, 'bad-envelope'],
  ['RFC 5424 SD param without quotes', `<4>1 2026-11-27T06:43:41Z vm kernel - - [id a=1] ${K}`, 'bad-envelope'],
  ['RFC 5424 SD glued to MSG', `<4>1 2026-11-27T06:43:41Z vm kernel - - [id]${K}`, 'bad-envelope'],
  ['dmesg stamp not a number', `<4>[ 12x5.1] ${K}`, 'bad-envelope'],
  ['dmesg -T style stamp', `[Fri Nov 27 06:43:41 2026] ${K}`, 'bad-envelope'],
];
for (const [name, line, reason] of skips) {
  t.test(`skip: ${name}`, async (t) => {
    t.equal(parseEnvelope(line, createEnvelopeOptions({ referenceMs: REF })), reason);
  });
}

t.test('junk never throws: it is bare text for the netfilter parser to refuse', async (t) => {
  const opts = createEnvelopeOptions({ referenceMs: REF });
  for (const line of ['\u0000\u0001\u00ff garbage', 'Nov', 'Nov 27', 'Nov 27 25:00:00 vm kernel: x', '2026-11-27', '4,', '4,1,', '4,1,2', 'Foo 27 06:43:41 vm kernel: x', '-- Boot 3f9c --']) {
    const e = parseEnvelope(line, opts);
    t.ok(typeof e === 'string' || e.format === 'bare', JSON.stringify(line));
  }
});

t.test('year rollover and zones of RFC 3164 stamps', async (t) => {
  const table: [string, string, EnvelopeOptionsInput, string][] = [
    ['December line read on New Year', 'Dec 31 23:59:59', { referenceMs: Date.parse('2027-01-01T00:05:00Z') }, '2026-12-31T23:59:59.000Z'],
    ['December line read in January', 'Dec 28 10:00:00', { referenceMs: Date.parse('2027-01-02T00:00:00Z') }, '2026-12-28T10:00:00.000Z'],
    ['January line from a sender a bit ahead', 'Jan  1 00:00:01', { referenceMs: Date.parse('2026-12-31T23:59:00Z') }, '2027-01-01T00:00:01.000Z'],
    ['same day', 'Nov 27 06:43:41', { referenceMs: Date.parse('2026-11-27T06:43:42Z') }, '2026-11-27T06:43:41.000Z'],
    ['archived file: its mtime decides', 'Mar  3 12:00:00', { referenceMs: Date.parse('2024-03-10T00:00:00Z') }, '2024-03-03T12:00:00.000Z'],
    ['29 February goes back to a leap year', 'Feb 29 12:00:00', { referenceMs: Date.parse('2027-03-01T00:00:00Z') }, '2024-02-29T12:00:00.000Z'],
    ['forced year', 'Dec 31 23:59:59', { referenceMs: Date.parse('2027-01-01T00:05:00Z'), year: 2019 }, '2019-12-31T23:59:59.000Z'],
    ['Berlin winter (+01:00)', 'Jan 15 12:00:00', { referenceMs: REF, timeZone: 'Europe/Berlin' }, '2026-01-15T11:00:00.000Z'],
    ['Berlin summer (+02:00)', 'Jul 15 12:00:00', { referenceMs: REF, timeZone: 'Europe/Berlin' }, '2026-07-15T10:00:00.000Z'],
    ['Berlin spring-forward gap', 'Mar 29 02:30:00', { referenceMs: REF, timeZone: 'Europe/Berlin' }, '2026-03-29T01:30:00.000Z'],
    ['Berlin fall-back repeated hour: the first', 'Oct 25 02:30:00', { referenceMs: REF, timeZone: 'Europe/Berlin' }, '2026-10-25T00:30:00.000Z'],
    ['Berlin just after fall-back', 'Oct 25 03:00:00', { referenceMs: REF, timeZone: 'Europe/Berlin' }, '2026-10-25T02:00:00.000Z'],
    ['New York (-05:00)', 'Nov 27 01:43:41', { referenceMs: REF, timeZone: 'America/New_York' }, '2026-11-27T06:43:41.000Z'],
    ['Kolkata half-hour offset', 'Nov 27 12:13:41', { referenceMs: REF, timeZone: 'Asia/Kolkata' }, '2026-11-27T06:43:41.000Z'],
  ];
  for (const [name, stamp, opts, want] of table) {
    const e = parseEnvelope(`${stamp} vm kernel: ${K}`, createEnvelopeOptions(opts));
    t.equal(typeof e === 'string' ? e : new Date(e.timestampMs!).toISOString(), want, name);
  }
  for (const line of [`<4>Feb 29 12:00:00 vm kernel: ${K}`, `Feb 29 12:00:00 vm kernel: ${K}`]) {
    t.equal(parseEnvelope(line, createEnvelopeOptions({ year: 2027 })), 'bad-envelope', 'forced year without 29 February');
  }
});

t.test('one options object follows a moving reference (the service passes each receive time)', async (t) => {
  const opts = createEnvelopeOptions();
  const line = `Dec 31 23:59:59 vm kernel: ${K}`;
  const year = (ref: number): number => {
    const e = parseEnvelope(line, opts, ref);
    return typeof e === 'string' ? NaN : new Date(e.timestampMs!).getUTCFullYear();
  };
  t.equal(year(Date.parse('2026-12-31T23:59:59Z')), 2026);
  t.equal(year(Date.parse('2027-06-01T00:00:00Z')), 2026);
  t.equal(year(Date.parse('2027-12-30T00:00:00Z')), 2027, 'a year later the same stamp moves on');
  t.equal(year(Date.parse('2026-12-31T23:59:59Z')), 2026, 'and back');
});

t.test('priority tables', async (t) => {
  t.equal(SYSLOG_FACILITIES.length, 24);
  t.same(SYSLOG_FACILITIES[0], { code: 0, name: 'kern' });
  t.same(SYSLOG_FACILITIES[23], { code: 23, name: 'local7' });
  t.same(SYSLOG_SEVERITIES[4], { code: 4, name: 'Warning' });
  t.same(SYSLOG_SEVERITIES[6], { code: 6, name: 'Informational' });
});

t.test('name cache returns equal strings and evicts', async (t) => {
  const c = new NameCache();
  const a = c.get('xx vm yy', 3, 5);
  t.equal(a, 'vm');
  for (let i = 0; i < 20; i++) t.equal(c.get(`h${i} `, 0, String(i).length + 1), `h${i}`);
  t.equal(c.get('vm', 0, 2), 'vm');
});

t.test('corpus: every capture format, counts per rule style match the rule counters', async (t) => {
  for (const sc of SCENARIOS) {
    const ex = expectOf(sc);
    const bootTime = { ms: Math.floor(ex.bootMs), micros: 0, precise: false };
    for (const f of FORMAT_FILES) {
      const name = `${sc}.${f}`;
      const opts = createEnvelopeOptions({ referenceMs: ex.endMs, bootTime });
      const counts: Record<Style, number> = { 'DOCKER-FWD': 0, dockflow: 0, nftflow: 0 };
      const wantFormat = f.startsWith('kmsg') ? 'kmsg' : f.startsWith('dmesg') ? 'dmesg' : f.includes('5424') ? 'rfc5424' : 'rfc3164';
      let bad = 0;
      for (const m of messages(name)) {
        const e = parseEnvelope(m.replace(/\n$/, ''), opts);
        if (typeof e === 'string') {
          bad++;
          continue;
        }
        const style = styleOf(m.slice(e.messageStart));
        if (style) counts[style]++;
        else bad++;
        if (e.format !== wantFormat || e.timestampMs === undefined || e.timestampMs < ex.startMs - 2000 || e.timestampMs > ex.endMs + 2000) bad++;
        if (wantFormat.startsWith('rfc') && (e.hostname !== 'vm' || e.appname !== 'kernel')) bad++;
        if (f.includes('imklog') && e.kernelUptime === undefined) bad++;
      }
      t.same(counts, ex.byStyle, `${name}: LOG lines per style`);
      t.equal(bad, 0, `${name}: every message parsed, dated inside the capture window`);
    }
  }
});
