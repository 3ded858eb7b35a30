import t from 'tap';
import { readFileSync } from 'node:fs';
import { LineSplitter, nanoTextToMs, nanoTextToSince, parseEventLine } from '../../../src/enrich/docker/ndjson.js';
import { fixture } from '../../helpers/paths.js';

const captured = readFileSync(fixture('docker-api', 'podman-events-compat-e2e.jsonl'));
const capturedLines = captured.toString('utf8').split('\n').filter((l) => l !== '');

function splitAll(chunks: Buffer[]): string[] {
  const s = new LineSplitter();
  return [...chunks.flatMap((c) => s.push(c)), ...s.end()];
}

t.test('a real podman event stream comes out line for line wherever the chunks are cut', async (t) => {
  const first = captured.subarray(0, 1200);
  for (let cut = 0; cut <= first.length; cut++) {
    const got = splitAll([first.subarray(0, cut), first.subarray(cut), captured.subarray(1200)]);
    if (got.length !== capturedLines.length || got[0] !== capturedLines[0] || got[3] !== capturedLines[3]) {
      t.fail(`cut at byte ${cut}`);
      return;
    }
  }
  t.same(splitAll([captured]), capturedLines);
  const bytes = [...captured].map((b) => Buffer.from([b]));
  t.same(splitAll(bytes), capturedLines, 'one byte per chunk');
});

t.test('splitting', async (t) => {
  const cases: { name: string; chunks: (string | Buffer)[]; want: string[] }[] = [
    { name: 'keep-alive blank lines dropped', chunks: ['\n{"a":1}\n\n\r\n{"b":2}\n'], want: ['{"a":1}', '{"b":2}'] },
    { name: 'last line without newline', chunks: ['{"a":1}\n{"b"', ':2}'], want: ['{"a":1}', '{"b":2}'] },
    { name: 'CRLF', chunks: ['{"a":1}\r\n'], want: ['{"a":1}'] },
    {
      name: 'a multi-byte character cut in two',
      chunks: [Buffer.from('{"name":"caf'), Buffer.from([0xc3]), Buffer.from([0xa9]), Buffer.from('"}\n')],
      want: ['{"name":"café"}'],
    },
    { name: 'nothing', chunks: [], want: [] },
  ];
  for (const c of cases) {
    const s = new LineSplitter();
    t.same([...c.chunks.flatMap((x) => s.push(x)), ...s.end()], c.want, c.name);
  }
});

t.test('event lines keep timeNano exactly', async (t) => {
  for (const line of capturedLines) {
    const ev = parseEventLine(line);
    const digits = /"timeNano":(\d+)/.exec(line)![1];
    t.equal(ev?.timeNanoText, digits);
  }
  const last = parseEventLine(capturedLines[capturedLines.length - 1]!)!;
  t.equal(last.timeNanoText, '1795764451182455946');
  t.not(String(BigInt(last.timeNano!)), '1795764451182455946', 'the parsed number alone has lost digits');
  t.equal(nanoTextToMs('1795764451182455946'), 1795764451182);
  t.equal(nanoTextToSince('1795764451182455946'), '1795764451.182455946');
  t.equal(nanoTextToSince('5'), '0.000000005');
  t.equal(parseEventLine('{"Type":"container","time":1795764433}')?.timeNanoText, '1795764433000000000', 'time alone (old engines)');
});

t.test('lines that are not JSON objects are refused, not thrown', async (t) => {
  for (const bad of ['not json', '[1,2]', '"x"', '42', 'null', '{"Type":']) t.equal(parseEventLine(bad), undefined, bad);
});
