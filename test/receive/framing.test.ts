import t from 'tap';
import { FrameDecoder, type FrameDropReason, type Framing } from '../../src/receive/framing.js';
import { byteChunks, lfFrames, octetFrames, randomChunks, stream, udpDatagrams } from './corpus.js';

interface Outcome {
  frames: string[];
  /** Each frame's exact bytes (its raw bytes where given, else its text in UTF-8), as latin1 text. */
  bytes: string[];
  drops: FrameDropReason[];
  /** Every push returned true (the connection may stay open). */
  open: boolean;
  /** What end() returned: false when an incomplete frame was lost. */
  endOk: boolean;
  partialBeforeEnd: boolean;
  framing: Framing;
}

function decode(chunks: Buffer[], maxMessageBytes: number): Outcome {
  const frames: string[] = [];
  const bytes: string[] = [];
  const drops: FrameDropReason[] = [];
  const frame = (m: string, raw: Buffer | undefined): void => {
    frames.push(m);
    bytes.push((raw ?? Buffer.from(m)).toString('latin1'));
  };
  const decoder = new FrameDecoder(maxMessageBytes, { frame, drop: (r) => drops.push(r) });
  let open = true;
  for (const chunk of chunks) open = decoder.push(chunk) && open;
  const partialBeforeEnd = decoder.hasPartial;
  const endOk = decoder.end();
  return { frames, bytes, drops, open, endOk, partialBeforeEnd, framing: decoder.framing };
}

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
const x = (n: number): string => 'x'.repeat(n);
const e = Buffer.from('é'); // two bytes: C3 A9

interface Case {
  name: string;
  chunks: Buffer[];
  max?: number;
  frames: string[];
  /** Exact bytes of each frame (latin1 text), when they are not its text. */
  bytes?: string[];
  drops?: FrameDropReason[];
  open?: boolean;
  endOk?: boolean;
  partial?: boolean;
  framing?: Framing;
}

const cases: Case[] = [
  { name: 'LF lines', chunks: [b('a\nbc\n')], frames: ['a', 'bc'], framing: 'lf' },
  { name: 'CRLF lines', chunks: [b('a\r\nbc\r\n')], frames: ['a', 'bc'] },
  { name: 'NUL inside and at the end of an LF line is content', chunks: [b('a\0b\nc\0\n\0\n')], frames: ['a\0b', 'c\0', '\0'] },
  {
    name: 'invalid UTF-8 in an LF line: its text has U+FFFD, its bytes are exact',
    chunks: [Buffer.from([0x61, 0xff, 0x62, 0xc3, 0x0a, 0x63, 0xed, 0xa0, 0x80, 0x0a])],
    frames: ['a\ufffdb\ufffd', 'c\ufffd\ufffd\ufffd'],
    bytes: ['a\xffb\xc3', 'c\xed\xa0\x80'],
  },
  {
    name: 'invalid UTF-8 and NUL in an octet-counted frame: exact bytes',
    chunks: [Buffer.concat([b('4 '), Buffer.from([0x00, 0xc0, 0xaf, 0x0a]), b('1 z')])],
    frames: ['\0\ufffd\ufffd', 'z'],
    bytes: ['\0\xc0\xaf', 'z'],
  },
  { name: 'LF oversize holding NUL and invalid UTF-8, good frames after', chunks: [Buffer.concat([b(x(6)), Buffer.from([0, 0xff, 0]), b(`${x(6)}\nabc\n`)])], max: 8, frames: ['abc'], drops: ['oversize'] },
  { name: 'blank lines skipped', chunks: [b('\n\r\na\n\n')], frames: ['a'], framing: 'lf' },
  { name: 'CR and LF in different chunks', chunks: [b('a\r'), b('\nb\n')], frames: ['a', 'b'] },
  { name: 'frame split inside a UTF-8 character', chunks: [Buffer.concat([b('h'), e.subarray(0, 1)]), Buffer.concat([e.subarray(1), b('\n')])], frames: ['hé'] },
  { name: 'unterminated last line delivered at clean end', chunks: [b('a\nb')], frames: ['a', 'b'], partial: true },
  { name: 'LF frame of exactly max bytes plus CRLF', chunks: [b('abc\r\nabcd\n')], max: 3, frames: ['abc'], drops: ['oversize'] },
  { name: 'LF oversize in one chunk, good frames after', chunks: [b(`${x(20)}\nabc\n`)], max: 8, frames: ['abc'], drops: ['oversize'] },
  { name: 'LF oversize across chunks counted once', chunks: [b(x(6)), b(x(6)), b(x(6)), b(`${x(3)}\nabc\n`)], max: 8, frames: ['abc'], drops: ['oversize'] },
  { name: 'LF oversize unterminated at end: no partial', chunks: [b(x(20))], max: 8, frames: [], drops: ['oversize'], partial: false },
  { name: 'octet counting', chunks: [b('3 abc5 hello')], frames: ['abc', 'hello'], framing: 'octet-counting' },
  { name: 'octet frame with rsyslog LF and CRLF inside', chunks: [b('4 abc\n5 abc\r\n')], frames: ['abc', 'abc'] },
  { name: 'octet count split across chunks', chunks: [b('1'), b('0 0123'), b('456789')], frames: ['0123456789'] },
  { name: 'octet body split inside a UTF-8 character', chunks: [Buffer.concat([b('3 h'), e.subarray(0, 1)]), e.subarray(1)], frames: ['hé'] },
  { name: 'octet NUL and LF inside a frame are content', chunks: [b('5 a\0b\nc')], frames: ['a\0b\nc'] },
  { name: 'octet oversize skipped without buffering', chunks: [b(`20 ${x(20)}3 abc`)], max: 8, frames: ['abc'], drops: ['oversize'] },
  { name: 'octet oversize by content after CRLF strip', chunks: [b('6 abcd\r\n5 abc\r\n')], max: 3, frames: ['abc'], drops: ['oversize'] },
  { name: 'octet frame of exactly max bytes plus CRLF', chunks: [b('5 abc\r\n')], max: 3, frames: ['abc'] },
  { name: 'bad octet count: letter', chunks: [b('3 abc12x abc')], frames: ['abc'], drops: ['bad-octet-count'], open: false },
  { name: 'bad octet count: leading zero', chunks: [b('03 abc')], frames: [], drops: ['bad-octet-count'], open: false },
  { name: 'bad octet count: absurd length', chunks: [b('123456789 abc')], frames: [], drops: ['bad-octet-count'], open: false },
  { name: 'bad octet count: LF instead of SP', chunks: [b('3\nabc')], frames: [], drops: ['bad-octet-count'], open: false },
  { name: 'bad octet count: LF between frames', chunks: [b('3 abc\n3 def')], frames: ['abc'], drops: ['bad-octet-count'], open: false },
  { name: 'input after a bad count is ignored', chunks: [b('3 abcZ'), b('3 def')], frames: ['abc'], drops: ['bad-octet-count'], open: false },
  { name: 'stream ends inside an octet body', chunks: [b('3 abc5 ab')], frames: ['abc'], partial: true, endOk: false },
  { name: 'stream ends inside an octet count', chunks: [b('3 abc12')], frames: ['abc'], partial: true, endOk: false },
  { name: 'stream ends inside a skipped oversize frame: already counted', chunks: [b(`20 ${x(5)}`)], max: 8, frames: [], drops: ['oversize'], partial: false },
];

t.test('frame decoder: every case gives the same outcome whole, 1 byte at a time and in random chunks', async (t) => {
  for (const c of cases) {
    const whole = Buffer.concat(c.chunks);
    const splits: Array<[string, Buffer[]]> = [
      ['as given', c.chunks],
      ['1 byte at a time', byteChunks(whole)],
      ['random chunks', randomChunks(whole, whole.length, 4)],
    ];
    for (const [how, chunks] of splits) {
      const got = decode(chunks, c.max ?? 1024);
      t.same(got.frames, c.frames, `${c.name} (${how}): frames`);
      t.same(got.bytes, c.bytes ?? c.frames.map((f) => Buffer.from(f).toString('latin1')), `${c.name} (${how}): exact bytes`);
      t.same(got.drops, c.drops ?? [], `${c.name} (${how}): drops`);
      t.equal(got.open, c.open ?? true, `${c.name} (${how}): connection stays open`);
      t.equal(got.endOk, c.endOk ?? true, `${c.name} (${how}): end()`);
      if (c.partial !== undefined) t.equal(got.partialBeforeEnd, c.partial, `${c.name} (${how}): hasPartial`);
      if (c.framing !== undefined) t.equal(got.framing, c.framing, `${c.name} (${how}): framing`);
    }
  }
});

t.test('an empty decoder has no partial frame and has not chosen a framing', async (t) => {
  const got = decode([Buffer.alloc(0)], 16);
  t.equal(got.framing, 'undetected');
  t.equal(got.partialBeforeEnd, false);
});

t.test('the real rsyslog streams: oracles agree with each other', async (t) => {
  const lf5424 = lfFrames(stream('tcp-egress-smtp.rsyslog-rfc5424-tcp-lf.bin'));
  t.equal(lf5424.length, 23);
  // The octet capture is a separate rsyslog run: same kernel lines, other header timestamps.
  const kernelText = (m: string): string => m.slice(m.indexOf(' - - - '));
  t.same(
    octetFrames(stream('tcp-egress-smtp.rsyslog-rfc5424-tcp-octet.bin')).map(kernelText),
    lf5424.map(kernelText),
    'octet 5424 carries the same kernel lines as LF',
  );
  t.same(
    udpDatagrams('tcp-egress-smtp.rsyslog-rfc5424-udp.bin').map((d) => d.toString('utf8').replace(/\n$/, '')),
    lf5424,
    'and so do the UDP datagrams',
  );
  t.same(octetFrames(stream('tcp-egress-smtp.rsyslog-rfc3164-tcp-octet.bin')), lfFrames(stream('tcp-egress-smtp.rsyslog-rfc3164-tcp-lf.bin')));
});

const corpora: Array<[string, (buf: Buffer) => string[], Framing]> = [
  ['tcp-egress-smtp.rsyslog-rfc5424-tcp-lf.bin', lfFrames, 'lf'],
  ['tcp-egress-smtp.rsyslog-rfc3164-tcp-lf.bin', lfFrames, 'lf'],
  ['tcp-egress-smtp.rsyslog-rfc5424-tcp-octet.bin', octetFrames, 'octet-counting'],
  ['tcp-egress-smtp.rsyslog-rfc3164-tcp-octet.bin', octetFrames, 'octet-counting'],
  ['burst-5000.rsyslog-rfc5424-tcp-octet.bin.gz', octetFrames, 'octet-counting'],
];

t.test('the real rsyslog streams decode to exactly the oracle frames, however they are chunked', async (t) => {
  for (const [name, oracle, framing] of corpora) {
    const buf = stream(name);
    const expected = oracle(buf);
    const small = buf.length < 100_000;
    const splits: Array<[string, Buffer[]]> = [
      ['whole', [buf]],
      ['64 KiB reads', randomChunks(buf, 1, 65536)],
      ['random chunks up to 700 bytes', randomChunks(buf, 7, 700)],
      ...(small ? ([['1 byte at a time', byteChunks(buf)]] as Array<[string, Buffer[]]>) : []),
    ];
    for (const [how, chunks] of splits) {
      const got = decode(chunks, 8192);
      t.equal(got.framing, framing, `${name} ${how}: framing`);
      t.equal(got.frames.length, expected.length, `${name} ${how}: frame count`);
      t.ok(
        got.frames.every((f, i) => f === expected[i]),
        `${name} ${how}: every frame exactly once, in order`,
      );
      t.same(got.drops, [], `${name} ${how}: nothing dropped`);
    }
  }
});

t.test('LF stream made CRLF decodes to the same frames', async (t) => {
  const buf = stream('tcp-egress-smtp.rsyslog-rfc3164-tcp-lf.bin');
  const expected = lfFrames(buf);
  for (const [name, sep] of [['CRLF', '\r\n']] as const) {
    const converted = Buffer.from(buf.toString('utf8').replaceAll('\n', sep));
    t.same(decode(randomChunks(converted, 3, 300), 8192).frames, expected, name);
  }
});
