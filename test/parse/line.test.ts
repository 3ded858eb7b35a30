import { readFileSync } from 'node:fs';
import t from 'tap';
import type { FlowRecord, SkipReason } from '../../src/record.js';
import { createLineOptions, DEFAULT_MAX_LINE_BYTES, parseLine } from '../../src/parse/line.js';
import type { LineOptionsInput } from '../../src/parse/line.js';
import { parseIsoInstant } from '../../src/parse/time.js';
import { expectOf, FORMAT_FILES, messages, SCENARIOS, syslogFixture } from '../fixtures/syslog/corpus.js';
import type { Style } from '../fixtures/syslog/corpus.js';

// A real LOG line from the icmp-echo capture.
const K =
  'DOCKER-FWD: IN=docker0 OUT=eth0 PHYSIN=fxveth6c17be9 MAC=02:42:5d:3c:1a:7e:02:42:ac:11:00:02:08:00 SRC=172.17.0.2 DST=198.51.100.2 LEN=84 TOS=0x00 PREC=0x00 TTL=63 ID=15838 DF PROTO=ICMP TYPE=8 CODE=0 ID=4660 SEQ=1 ';
const REF = Date.parse('2026-11-28T00:00:00Z');
const BOOT = parseIsoInstant('2026-11-27T06:22:37.466475Z')!;

const record = (line: string, input: LineOptionsInput = {}, referenceMs?: number): FlowRecord => {
  const r = parseLine(line, createLineOptions({ referenceMs: REF, ...input }), referenceMs);
  if (typeof r === 'string') throw new Error(`skipped: ${r}`);
  return r;
};

t.test('envelope metadata lands in the record', async (t) => {
  const table: { name: string; line: string; input?: LineOptionsInput; want: object }[] = [
    {
      name: 'RFC 3164',
      line: `<4>Nov 27 06:43:41 vm kernel: ${K}`,
      want: {
        '@timestamp': '2026-11-27T06:43:41.000Z',
        host: { name: 'vm' },
        log: { prefix: 'DOCKER-FWD:', format: 'rfc3164', syslog: { priority: 4, facility: { code: 0, name: 'kern' }, severity: { code: 4, name: 'Warning' }, hostname: 'vm', appname: 'kernel' } },
      },
    },
    {
      name: 'RFC 5424 keeps microseconds',
      line: `<6>1 2026-11-27T06:43:41.674651+00:00 vm kernel - - [meta seq="7"] ${K}`,
      want: {
        '@timestamp': '2026-11-27T06:43:41.674651Z',
        log: { format: 'rfc5424', syslog: { priority: 6, severity: { code: 6, name: 'Informational' }, version: 1, structured_data: { meta: { seq: '7' } } } },
      },
    },
    { name: 'imklog uptime', line: `<4>Nov 27 06:43:42 vm kernel: [ 1265.103048] ${K}`, want: { log: { kernel_uptime: 1265.103048, prefix: 'DOCKER-FWD:' } } },
    {
      name: 'kmsg with boot time and --host',
      line: `4,50813,1265103121,-;${K}`,
      input: { bootTime: BOOT, hostName: 'docker-host-1' },
      want: { '@timestamp': '2026-11-27T06:43:42.569596Z', host: { name: 'docker-host-1' }, log: { format: 'kmsg', kernel_uptime: 1265.103121, syslog: { priority: 4 } } },
    },
    { name: 'kmsg without boot time: the reference', line: `4,50813,1265103121,-;${K}`, want: { '@timestamp': '2026-11-28T00:00:00.000Z', log: { kernel_uptime: 1265.103121 } } },
    { name: 'a hostname in the line wins over --host', line: `Nov 27 06:43:41 vm kernel: ${K}`, input: { hostName: 'other' }, want: { host: { name: 'vm' } } },
    { name: 'Berlin sender', line: `Nov 27 07:43:41 vm kernel: ${K}`, input: { timeZone: 'Europe/Berlin' }, want: { '@timestamp': '2026-11-27T06:43:41.000Z' } },
    { name: 'December line read in January', line: `Dec 31 23:59:58 vm kernel: ${K}`, input: { referenceMs: Date.parse('2027-01-01T00:00:03Z') }, want: { '@timestamp': '2026-12-31T23:59:58.000Z' } },
    { name: 'forced year', line: `Dec 31 23:59:58 vm kernel: ${K}`, input: { year: 2020 }, want: { '@timestamp': '2020-12-31T23:59:58.000Z' } },
    { name: 'RFC 5424 frame with its trailing LF', line: `<4>1 2026-11-27T06:43:41Z vm kernel - - - ${K}\n`, want: { log: { format: 'rfc5424' }, iptables: { icmp: { seq: 1 } } } },
    { name: 'CRLF', line: `Nov 27 06:43:41 vm kernel: ${K}\r\n`, want: { iptables: { icmp: { seq: 1 } } } },
    { name: 'bare text with default bridges', line: K, want: { log: { format: 'bare', syslog: undefined }, host: undefined, network: { direction: 'egress' }, source: { ip: '172.17.0.2' } } },
    { name: 'custom bridges', line: K, input: { bridges: ['lxcbr0'] }, want: { network: { direction: 'other' } } },
  ];
  for (const c of table) t.match(record(c.line, c.input), c.want, c.name);
  const bare = record(K);
  t.equal(bare.log?.syslog, undefined, 'no syslog block without syslog metadata');
  t.equal(bare.host, undefined);
});

t.test('the reference passed per call wins (the service passes the receive time)', async (t) => {
  const opts = createLineOptions();
  const r = parseLine(K, opts, Date.parse('2026-11-27T06:43:41.5Z'));
  t.equal(typeof r === 'string' ? r : r['@timestamp'], '2026-11-27T06:43:41.500Z');
  const later = parseLine(`Dec 31 23:59:58 vm kernel: ${K}`, opts, Date.parse('2027-01-01T00:00:03Z'));
  t.equal(typeof later === 'string' ? later : later['@timestamp'], '2026-12-31T23:59:58.000Z');
  const now = parseLine(K, opts);
  t.ok(typeof now !== 'string' && Math.abs(Date.parse(now['@timestamp']) - Date.now()) < 60_000, 'default: now');
});

t.test('skips', async (t) => {
  const opts = createLineOptions({ referenceMs: REF, maxLineBytes: 400 });
  const table: [string, string, SkipReason][] = [
    ['empty', '', 'empty'],
    ['only a line break', '\r\n', 'empty'],
    ['kmsg continuation', ' SUBSYSTEM=net', 'not-netfilter'],
    ['other kernel message', '<6>Nov 27 06:43:41 vm kernel: docker0: port 1(veth1) entered forwarding state', 'not-netfilter'],
    ['journal separator', '-- Boot 3f9c1d2e8b7a4c6d9e0f1a2b3c4d5e6f --', 'not-netfilter'],
    ['bad PRI', `<999>${K}`, 'bad-envelope'],
    ['oversize', `<4>Nov 27 06:43:41 vm kernel: ${K}${'x'.repeat(400)}`, 'oversize'],
    ['oversize in UTF-8 bytes only', `${K}${'é'.repeat(120)}`, 'oversize'],
    ['binary junk', '\u0000\u0001\u0002\u00ff\ufffd', 'not-netfilter'],
  ];
  for (const [name, line, want] of table) t.equal(parseLine(line, opts), want, name);
  t.equal(typeof parseLine(`${K}${'é'.repeat(60)}`, opts), 'object', 'multi-byte text under the limit');
  t.equal(createLineOptions().maxLineBytes, DEFAULT_MAX_LINE_BYTES);
});

const prefixStyle = (r: FlowRecord): Style | undefined => {
  const p = r.log?.prefix?.replace(/:$/, '');
  return p === 'DOCKER-FWD' || p === 'dockflow' || p === 'nftflow' ? p : undefined;
};

t.test('corpus: records per rule style match the rule counters in every format', async (t) => {
  for (const sc of SCENARIOS) {
    const ex = expectOf(sc);
    for (const f of FORMAT_FILES) {
      const opts = createLineOptions({ referenceMs: ex.endMs, bootTime: { ms: Math.floor(ex.bootMs), micros: 0, precise: false } });
      const counts: Record<Style, number> = { 'DOCKER-FWD': 0, dockflow: 0, nftflow: 0 };
      const problems: string[] = [];
      for (const m of messages(`${sc}.${f}`)) {
        const r = parseLine(m, opts);
        if (typeof r === 'string') {
          problems.push(r);
          continue;
        }
        const style = prefixStyle(r);
        if (style === undefined) problems.push(`prefix ${r.log?.prefix}`);
        else counts[style]++;
        const ts = Date.parse(r['@timestamp']);
        if (!(ts >= ex.startMs - 2000 && ts <= ex.endMs + 2000)) problems.push(`@timestamp ${r['@timestamp']}`);
      }
      t.same(counts, ex.byStyle, `${sc}.${f}`);
      t.same(problems, [], `${sc}.${f}: no skips, dated inside the capture window`);
    }
  }
});

t.test('derived file formats: kern.log, rsyslog file format, journalctl, kmsg with continuation lines', async (t) => {
  const table: { file: string; records: number; skipped: Partial<Record<SkipReason, number>>; format: string; first: string }[] = [
    { file: 'tcp-egress-smtp.kern-log.txt', records: 23, skipped: { 'not-netfilter': 3 }, format: 'rfc3164', first: '2026-11-27T06:43:30.000Z' },
    { file: 'tcp-egress-smtp.kern-iso-log.txt', records: 23, skipped: {}, format: 'rfc3164', first: '2026-11-27T06:43:29.896926Z' },
    { file: 'icmp-echo.journal-short.txt', records: 8, skipped: { 'not-netfilter': 1 }, format: 'rfc3164', first: '2026-11-27T06:43:42.000Z' },
    { file: 'icmp-echo.journal-short-precise.txt', records: 8, skipped: { 'not-netfilter': 1 }, format: 'rfc3164', first: '2026-11-27T06:43:42.569523Z' },
    { file: 'icmp-echo.journal-short-iso.txt', records: 8, skipped: { 'not-netfilter': 1 }, format: 'rfc3164', first: '2026-11-27T06:43:42.000Z' },
    { file: 'icmp-echo.journal-short-iso-precise.txt', records: 8, skipped: { 'not-netfilter': 1 }, format: 'rfc3164', first: '2026-11-27T06:43:42.569523Z' },
    { file: 'icmp-echo.journal-short-monotonic.txt', records: 8, skipped: {}, format: 'journal', first: '2026-11-27T06:43:42.569523Z' },
    { file: 'icmp-echo.kmsg-dict.txt', records: 8, skipped: { 'not-netfilter': 6 }, format: 'kmsg', first: '2026-11-27T06:43:42.569523Z' },
  ];
  for (const c of table) {
    const opts = createLineOptions({ referenceMs: Date.parse('2026-11-28T00:00:00Z'), bootTime: { ms: Date.parse('2026-11-27T06:22:37.466Z'), micros: 475, precise: true } });
    const records: FlowRecord[] = [];
    const skipped: Partial<Record<SkipReason, number>> = {};
    for (const line of readFileSync(syslogFixture(c.file), 'utf8').split('\n').filter((l) => l !== '')) {
      const r = parseLine(line, opts);
      if (typeof r === 'string') skipped[r] = (skipped[r] ?? 0) + 1;
      else records.push(r);
    }
    t.equal(records.length, c.records, `${c.file} records`);
    t.same(skipped, c.skipped, `${c.file} skipped`);
    t.equal(records[0]?.log?.format, c.format, `${c.file} format`);
    t.equal(records[0]?.['@timestamp'], c.first, `${c.file} first @timestamp`);
    t.ok(records.every((r) => prefixStyle(r) !== undefined), `${c.file}: prefixes intact`);
  }
});
