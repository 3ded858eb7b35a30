import t from 'tap';
import { SseParser, type SseChunk, type SseEvent } from '../../src/dashboard/sse.js';

/** What the live route writes (src/api/flows.ts), and the framings the format allows. */
const STREAM = ': subscribed\n\nid: egress/1718000000000-0\nevent: flow\ndata: {"a":1}\n\n: keep-alive\n\nevent: dropped\ndata: {"dropped":3}\n\n';

const collect = (chunks: string[]): SseChunk => {
  const p = new SseParser();
  const out: SseChunk = { events: [], comments: [] };
  for (const c of chunks) {
    const r = p.push(c);
    out.events.push(...r.events);
    out.comments.push(...r.comments);
  }
  return out;
};

const EXPECTED: SseChunk = {
  events: [
    { event: 'flow', data: '{"a":1}', id: 'egress/1718000000000-0' },
    { event: 'dropped', data: '{"dropped":3}', id: 'egress/1718000000000-0' },
  ],
  comments: ['subscribed', 'keep-alive'],
};

t.test('events and comments, however the stream is cut', async (t) => {
  const cases: [string, string[]][] = [
    ['whole', [STREAM]],
    ['one character at a time', [...STREAM]],
    ['CRLF line ends, cut between CR and LF', STREAM.replace(/\n/g, '\r\n').split(/(?<=\r)/)],
    // A CR ending a chunk may be half of a CRLF: it is settled by what follows.
    ['CR line ends', [STREAM.replace(/\n/g, '\r'), '\r']],
  ];
  for (const [name, chunks] of cases) t.same(collect(chunks), EXPECTED, name);
});

t.test('the field rules of the format', async (t) => {
  const cases: [string, string, SseEvent[]][] = [
    ['multi-line data joins with LF', 'data: a\ndata: b\n\n', [{ event: 'message', data: 'a\nb' }]],
    ['no space after the colon', 'event:flow\ndata:x\n\n', [{ event: 'flow', data: 'x' }]],
    ['only one leading space is dropped', 'data:  x\n\n', [{ event: 'message', data: ' x' }]],
    ['a field without a colon has an empty value', 'data\n\n', [{ event: 'message', data: '' }]],
    ['an event without data is not dispatched', 'event: flow\n\n', []],
    ['unknown fields are ignored', 'retry: 10\nfoo: bar\ndata: x\n\n', [{ event: 'message', data: 'x' }]],
    ['an id with NUL is ignored', 'id: a\0b\ndata: x\n\n', [{ event: 'message', data: 'x' }]],
    ['an unfinished event waits', 'data: x\n', []],
  ];
  for (const [name, text, events] of cases) t.same(new SseParser().push(text).events, events, name);
});


