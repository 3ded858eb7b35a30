import { spawn } from 'node:child_process';
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { runParse } from '../../src/cli/parse-command.js';
import type { FlowRecord } from '../../src/record.js';
import { fixture, repoRoot } from '../helpers/paths.js';
import { FrameDecoder, type FrameDropReason } from '../../src/receive/framing.js';
import { expectOf, messages, syslogFixture } from '../fixtures/syslog/corpus.js';

interface Run {
  code: number;
  records: FlowRecord[];
  stderr: string;
  stdout: string;
}

const collect = (): { stream: PassThrough; text: () => string } => {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
};

async function run(argv: string[], stdin: Readable = Readable.from([])): Promise<Run> {
  const out = collect();
  const err = collect();
  const code = await runParse(argv, { stdin, stdout: out.stream, stderr: err.stream });
  const stdout = out.text();
  return { code, stdout, stderr: err.text(), records: stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as FlowRecord) };
}

const totalLogLines = (sc: string): number => Object.values(expectOf(sc).byStyle).reduce((a, b) => a + b, 0);

t.test('files in every capture format, with a per-file summary', async (t) => {
  const files = [
    'tcp-egress-smtp.rsyslog-rfc3164-tcp-lf.bin',
    'tcp-egress-smtp.rsyslog-rfc5424-tcp-octet.bin',
    'tcp-egress-smtp.rsyslog-rfc3164-tcp-octet.bin',
    'tcp-egress-smtp.rsyslog-rfc5424-tcp-lf.bin',
    'tcp-egress-smtp.rsyslog-rfc3164imklog-tcp-lf.bin',
    'tcp-egress-smtp.kmsg.txt',
    'tcp-egress-smtp.dmesg.txt',
    'tcp-egress-smtp.kern-log.txt',
  ].map(syslogFixture);
  const r = await run(['--boot-time', '2026-11-27T06:22:37.466475Z', ...files]);
  t.equal(r.code, 0);
  const n = totalLogLines('tcp-egress-smtp');
  t.equal(r.records.length, n * files.length);
  t.ok(r.records.every((rec) => rec.source.ip !== undefined && rec['@timestamp'].startsWith('2026-11-27T06:4')), 'records dated from the lines');
  t.match(r.stderr, `tcp-egress-smtp.rsyslog-rfc5424-tcp-octet.bin: ${n} lines, ${n} records, 0 skipped\n`);
  t.match(r.stderr, `tcp-egress-smtp.kern-log.txt: ${n + 3} lines, ${n} records, 3 skipped (not-netfilter 3)\n`);
  t.match(r.stderr, `total: ${n * files.length + 3} lines, ${n * files.length} records, 3 skipped (not-netfilter 3)\n`);
});

t.test('gzip is detected by its magic bytes, and stdin works in chunks of any size', async (t) => {
  const dir = t.testdir({});
  const plain = readFileSync(syslogFixture('icmp-echo.rsyslog-rfc5424-tcp-octet.bin'));
  const gz = gzipSync(plain);
  writeFileSync(join(dir, 'capture.gz'), gz);
  writeFileSync(join(dir, 'capture-without-suffix'), gz);
  const want = (await run([syslogFixture('icmp-echo.rsyslog-rfc5424-tcp-octet.bin')])).stdout;
  t.equal(want.split('\n').filter(Boolean).length, totalLogLines('icmp-echo'));
  t.equal((await run([join(dir, 'capture.gz')])).stdout, want, '.gz');
  t.equal((await run([join(dir, 'capture-without-suffix')])).stdout, want, 'gzip without .gz');
  for (const size of [1, 2, 7, 333]) {
    const pieces = (b: Buffer): Buffer[] => Array.from({ length: Math.ceil(b.length / size) }, (_, i) => b.subarray(i * size, (i + 1) * size));
    t.equal((await run([], Readable.from(pieces(plain)))).stdout, want, `stdin in ${size}-byte chunks`);
    t.equal((await run(['-'], Readable.from(pieces(gz)))).stdout, want, `gzipped stdin in ${size}-byte chunks`);
  }
  const lf = readFileSync(syslogFixture('icmp-echo.kmsg.txt'));
  const r = await run(['-'], Readable.from(Array.from(lf).map((b) => Buffer.from([b]))));
  t.equal(r.records.length, totalLogLines('icmp-echo'), 'LF lines one byte at a time');
  t.match(r.stderr, /^stdin: 8 lines, 8 records, 0 skipped\n$/);
});

t.test('a file that cannot be read: exit 1, the others are still parsed', async (t) => {
  const dir = t.testdir({ 'bad.gz': Buffer.from([0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9]) });
  const r = await run([join(dir, 'missing.log'), dir, join(dir, 'bad.gz'), syslogFixture('udp-dns-egress.kmsg.txt')]);
  t.equal(r.code, 1);
  t.match(r.stderr, /cannot read .*missing\.log: ENOENT/);
  t.match(r.stderr, /cannot read .*: is a directory/);
  t.match(r.stderr, /cannot read .*bad\.gz: /);
  t.equal(r.records.length, totalLogLines('udp-dns-egress'));
});

t.test('junk and over-long lines are counted, not fatal', async (t) => {
  const input = [
    '',
    '\u0000\u0001binary',
    '<999>Nov 27 06:43:41 vm kernel: x',
    ' SUBSYSTEM=net',
    'x'.repeat(20_000),
    readFileSync(syslogFixture('icmp-echo.kmsg.txt'), 'utf8').trimEnd(),
    'y'.repeat(9000),
  ].join('\n');
  const r = await run([], Readable.from([Buffer.from(input)]));
  t.equal(r.code, 0);
  t.equal(r.records.length, 8);
  // The blank line is framing noise, as on a TCP connection (one codec), not a line.
  t.match(r.stderr, 'stdin: 13 lines, 8 records, 5 skipped (not-netfilter 2, bad-envelope 1, oversize 2)');
});

t.test('a bad octet count follows the TCP receiver\'s rule: the frames before it are kept, the rest is not read', async (t) => {
  const message = messages('tcp-egress-smtp.rsyslog-rfc5424-tcp-octet.bin')[0]!;
  const frame = `${Buffer.byteLength(message)} ${message}`;
  for (const [name, bad] of [['a letter for a length', 'x'], ['a line feed between frames', '\n'], ['a leading zero', '0']] as const) {
    const input = Buffer.from(frame + bad + frame);
    // The receiver's decoder, as a TCP connection meets these bytes.
    const frames: string[] = [];
    const drops: FrameDropReason[] = [];
    const decoder = new FrameDecoder(65_536, { frame: (m) => frames.push(m), drop: (r) => drops.push(r) });
    t.equal(decoder.push(input), false, `${name}: the connection is given up`);
    t.same([frames.length, drops], [1, ['bad-octet-count']], `${name}: one frame, then the bad count`);
    // dockflow parse on the same bytes, whole and a byte at a time.
    for (const chunks of [[input], [...input].map((b) => Buffer.from([b]))]) {
      const r = await run([], Readable.from(chunks));
      t.equal(r.code, 1, `${name}: exit status 1 (the input was not read whole)`);
      t.equal(r.records.length, 1, `${name}: the record before the bad count`);
      t.match(r.stderr, /bad RFC 6587 octet count after 1 frames; the rest is not read/);
    }
  }
});

t.test('a capture cut inside its last octet-counted frame counts that frame as truncated', async (t) => {
  const message = messages('tcp-egress-smtp.rsyslog-rfc5424-tcp-octet.bin')[0]!;
  const frame = `${Buffer.byteLength(message)} ${message}`;
  const r = await run([], Readable.from([Buffer.from(frame + frame.slice(0, 40))]));
  t.equal(r.code, 0);
  t.equal(r.records.length, 1);
  t.match(r.stderr, 'stdin: 2 lines, 1 records, 1 skipped (truncated 1)');
});

t.test('options', async (t) => {
  const dir = t.testdir({
    'old-kern.log': 'Dec 31 23:59:58 vm kernel: DOCKER-FWD: IN=docker0 OUT=eth0 SRC=172.17.0.2 DST=198.51.100.2 LEN=84 TOS=0x00 PREC=0x00 TTL=63 ID=1 DF PROTO=ICMP TYPE=8 CODE=0 ID=1 SEQ=1 \n',
  });
  const oldLog = join(dir, 'old-kern.log');
  // Rotated in early January two years ago: December lines belong to the year before that.
  utimesSync(oldLog, new Date('2025-01-02T00:00:00Z'), new Date('2025-01-02T00:00:00Z'));
  t.equal((await run([oldLog])).records[0]?.['@timestamp'], '2024-12-31T23:59:58.000Z', 'year from the file mtime');
  t.equal((await run(['--year', '2021', oldLog])).records[0]?.['@timestamp'], '2021-12-31T23:59:58.000Z', '--year');
  t.equal((await run(['--tz', 'Europe/Berlin', oldLog])).records[0]?.['@timestamp'], '2024-12-31T22:59:58.000Z', '--tz');

  const kmsg = syslogFixture('icmp-echo.kmsg.txt');
  const kmsgCopy = join(dir, 'kmsg.txt');
  writeFileSync(kmsgCopy, readFileSync(kmsg));
  const withBoot = await run(['--boot-time', '2026-11-27T06:22:37.466475Z', '--host', 'docker-host-1', kmsg]);
  t.match(withBoot.records[0], { '@timestamp': '2026-11-27T06:43:42.569523Z', host: { name: 'docker-host-1' }, log: { kernel_uptime: 1265.103048 } });
  const mtime = new Date('2026-12-01T10:00:00Z');
  utimesSync(kmsgCopy, mtime, mtime);
  const noBoot = await run([kmsgCopy]);
  t.equal(noBoot.records[0]?.['@timestamp'], '2026-12-01T10:00:00.000Z', 'without --boot-time: the file mtime');
  t.equal(noBoot.records[0]?.log?.kernel_uptime, 1265.103048);

  t.equal((await run([kmsg])).records[0]?.network.direction, 'egress');
  t.equal((await run(['--bridges', 'br-*', kmsg])).records[0]?.network.direction, 'other', '--bridges');
});

t.test('usage', async (t) => {
  const table: [string[], number, RegExp][] = [
    [['--help'], 0, /^Usage: dockflow parse/],
    [['-h'], 0, /^Usage: dockflow parse/],
    [['--frobnicate'], 2, /Unknown option '--frobnicate'/],
    [['--tz', 'Mars/Base'], 2, /unknown time zone "Mars\/Base"/],
    [['--year', '26'], 2, /--year wants a four-digit year/],
    [['--boot-time', 'yesterday'], 2, /--boot-time wants an ISO 8601 time/],
    [['--bridges', ','], 2, /--bridges wants at least one/],
    [['--tz'], 2, /argument missing/],
  ];
  for (const [argv, code, text] of table) {
    const r = await run(argv);
    t.equal(r.code, code, argv.join(' '));
    t.match(code === 0 ? r.stdout : r.stderr, text, argv.join(' '));
  }
});

t.test('a reader that goes away ends the run quietly (| head)', async (t) => {
  let writes = 0;
  const stdout = new Writable({
    write(_chunk, _enc, cb) {
      writes++;
      cb(writes > 1 ? Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }) : null);
    },
  });
  const err = collect();
  const code = await runParse([fixture('bench', 'burst-5000.kmsg.txt.gz')], { stdin: Readable.from([]), stdout, stderr: err.stream });
  t.equal(code, 0);
  const read = Number(/(\d+) lines/.exec(err.text())?.[1]);
  t.ok(read > 0 && read < 50_000, `stopped early (${read} lines read)`);
});

interface Spawned {
  code: number | null;
  stdout: string;
  stderr: string;
}

function spawnCli(args: string[], nodeArgs: string[], opts: { stopAfterFirstChunk?: boolean } = {}): Promise<Spawned> {
  return new Promise((resolve, reject) => {
    // A hung child must fail the test, not outlive it.
    const child = spawn(process.execPath, [...nodeArgs, ...args], { cwd: repoRoot, env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' }, timeout: 60_000, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      if (opts.stopAfterFirstChunk) child.stdout.destroy();
    });
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const fromSource = ['--import', '@tapjs/typescript/import', 'src/cli.ts'];

t.test('the real command', async (t) => {
  const kmsg = syslogFixture('udp-dns-egress.kmsg.txt');
  const r = await spawnCli(['parse', kmsg], fromSource);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.split('\n').filter(Boolean).length, totalLogLines('udp-dns-egress'));
  t.match(r.stderr, `${kmsg}: 4 lines, 4 records, 0 skipped`);

  const table: [string[], number, RegExp, 'stdout' | 'stderr'][] = [
    [['--version'], 0, /^\d+\.\d+\.\d+\n$/, 'stdout'],
    [['--help'], 0, /^Usage: dockflow <command>/, 'stdout'],
    [[], 2, /missing command/, 'stderr'],
    [['frobnicate'], 2, /unknown command "frobnicate"[^]*Usage: dockflow/, 'stderr'],
    [['--bogus', 'parse'], 2, /unknown option --bogus/, 'stderr'],
    [['parse', '--help'], 0, /^Usage: dockflow parse/, 'stdout'],
    [['parse', '/nonexistent/kern.log'], 1, /cannot read \/nonexistent\/kern\.log/, 'stderr'],
  ];
  for (const [args, code, text, stream] of table) {
    const s = await spawnCli(args, fromSource);
    t.equal(s.code, code, args.join(' '));
    t.match(s[stream], text, args.join(' '));
  }

  const head = await spawnCli(['parse', fixture('bench', 'burst-5000.kmsg.txt.gz')], fromSource, { stopAfterFirstChunk: true });
  t.equal(head.code, 0, 'closed stdout: exit 0');
  t.notMatch(head.stderr, /EPIPE|Error/, 'no stack trace');
});

const built = join(repoRoot, 'dist', 'src', 'cli.js');
t.test('the built command', { skip: existsSync(built) ? false : 'dist/src/cli.js not built (npx tsc -p tsconfig.json)' }, async (t) => {
  const r = await spawnCli(['parse', syslogFixture('udp-dns-egress.rsyslog-rfc5424-tcp-octet.bin')], [built]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.split('\n').filter(Boolean).length, totalLogLines('udp-dns-egress'));
});
