import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { byteChunks, lfFrames, octetFrames, randomChunks, stream } from './corpus.js';
import { closedByPeer, connect, startHarness, until, writeChunks } from './harness.js';

const replays: Array<[string, (buf: Buffer) => string[]]> = [
  ['tcp-egress-smtp.rsyslog-rfc5424-tcp-lf.bin', lfFrames],
  ['tcp-egress-smtp.rsyslog-rfc5424-tcp-octet.bin', octetFrames],
  ['tcp-egress-smtp.rsyslog-rfc3164-tcp-lf.bin', lfFrames],
  ['tcp-egress-smtp.rsyslog-rfc3164-tcp-octet.bin', octetFrames],
];

t.test('real rsyslog TCP streams over IPv4 and IPv6: every frame exactly once, in order, however written', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.receivers.close());
  for (const host of ['127.0.0.1', '::1']) {
    for (const [name, oracle] of replays) {
      const buf = stream(name);
      const expected = oracle(buf);
      const writes: Array<[string, Buffer[]]> = [
        ['one write', [buf]],
        ['random chunks', randomChunks(buf, 42, 300)],
        ['1 byte at a time', byteChunks(buf)],
      ];
      for (const [how, chunks] of writes) {
        const from = h.sink.messages.length;
        const socket = await connect(h.at('tcp', host));
        await writeChunks(socket, chunks);
        socket.end();
        await closedByPeer(socket);
        await h.sink.waitFor(from + expected.length);
        t.same(h.sink.messages.slice(from), expected, `${host} ${name} ${how}`);
        t.ok(
          h.sink.metas.slice(from).every((m) => m.transport === 'tcp' && m.remoteAddress === host),
          `${host} ${name} ${how}: meta names the sender`,
        );
      }
    }
  }
  t.equal(h.receivers.metrics.tcp.messages, h.sink.messages.length);
  t.same(
    Object.entries(h.receivers.metrics.tcp.dropped).filter(([, n]) => n !== 0),
    [],
    'nothing dropped, for any reason',
  );
});

t.test('the 50,000-line burst over one octet-counted connection, the sink pushing back now and then', async (t) => {
  const buf = stream('burst-5000.rsyslog-rfc5424-tcp-octet.bin.gz');
  const expected = octetFrames(buf);
  const h = await startHarness();
  t.teardown(() => h.receivers.close());
  // Refuse every 5,000th message and drain on the next turn of the event loop: repeated pause/resume cycles.
  const accept = h.sink.accept.bind(h.sink);
  h.sink.accept = (message, meta) => {
    const ok = accept(message, meta);
    if (h.sink.messages.length % 5000 !== 0) return ok;
    setImmediate(() => h.sink.drain());
    return false;
  };
  const socket = await connect(h.at('tcp', '127.0.0.1'));
  socket.end(buf);
  await closedByPeer(socket);
  await h.sink.waitFor(expected.length);
  t.equal(h.sink.messages.length, expected.length);
  t.ok(h.sink.messages.every((m, i) => m === expected[i]), 'every frame exactly once, in order');
  t.equal(h.receivers.metrics.tcp.bytes, buf.length);
});

t.test('an unterminated last line is delivered on clean end, lost and counted on reset', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.receivers.close());
  const clean = await connect(h.at('tcp', '127.0.0.1'));
  clean.end('a\nb');
  await closedByPeer(clean);
  await h.sink.waitFor(2);
  t.same(h.sink.messages, ['a', 'b']);
  t.equal(h.receivers.metrics.tcp.dropped['partial-frame'], 0);

  const reset = await connect(h.at('tcp', '::1'));
  await writeChunks(reset, [Buffer.from('c\nd')]);
  await h.sink.waitFor(3);
  reset.resetAndDestroy();
  await until(() => h.receivers.metrics.tcp.dropped['partial-frame'] === 1);
  t.same(h.sink.messages, ['a', 'b', 'c']);
});

t.test('oversize frames in both framings are skipped to their end; the good frames around them arrive', async (t) => {
  const h = await startHarness({ maxMessageBytes: 1024 });
  t.teardown(() => h.receivers.close());
  const big = 'B'.repeat(5000);
  const octet = (m: string): string => `${Buffer.byteLength(m)} ${m}`;
  const streams = [
    ['LF', `one\n${big}\ntwo\n`],
    ['octet', [octet('one'), octet(big), octet('two\n')].join('')],
  ];
  let total = 0;
  for (const [framing, text] of streams) {
    for (const [how, chunks] of [
      ['one write', [Buffer.from(text!)]],
      ['random chunks', randomChunks(Buffer.from(text!), 9, 700)],
    ] as const) {
      const socket = await connect(h.at('tcp', '127.0.0.1'));
      await writeChunks(socket, [...chunks]);
      socket.end();
      await closedByPeer(socket);
      total += 2;
      await h.sink.waitFor(total);
      t.same(h.sink.messages.slice(-2), ['one', 'two'], `${framing} ${how}`);
    }
  }
  t.equal(h.receivers.metrics.tcp.dropped.oversize, 4);
});

t.test('a bad octet count closes the connection after the frames before it', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.receivers.close());
  const socket = await connect(h.at('tcp', '127.0.0.1'));
  socket.write('3 abc3 defXX 3 ghi');
  await closedByPeer(socket);
  await h.sink.waitFor(2);
  t.same(h.sink.messages, ['abc', 'def']);
  t.equal(h.receivers.metrics.tcp.dropped['bad-octet-count'], 1);
  t.equal(h.receivers.metrics.tcp.dropped['partial-frame'], 0, 'the rest of a broken stream is not a partial frame');
});

t.test('silent and half-open connections are closed after the idle timeout and counted', async (t) => {
  const h = await startHarness({ idleTimeoutMs: 100 });
  t.teardown(() => h.receivers.close());
  const silent = await connect(h.at('tcp', '127.0.0.1'));
  const midFrame = await connect(h.at('tcp', '::1'));
  midFrame.write('whole\nhalf a li');
  await Promise.all([closedByPeer(silent), closedByPeer(midFrame)]);
  await until(() => h.receivers.metrics.openConnections === 0);
  t.same(h.sink.messages, ['whole']);
  t.equal(h.receivers.metrics.idleTimeouts, 2);
  t.equal(h.receivers.metrics.tcp.dropped['partial-frame'], 1);
});

t.test('connections beyond maxConnections are refused and counted; the others keep working', async (t) => {
  const h = await startHarness({ maxConnections: 2 });
  t.teardown(() => h.receivers.close());
  const a = await connect(h.at('tcp', '127.0.0.1'));
  const b = await connect(h.at('tcp', '::1'));
  await until(() => h.receivers.metrics.openConnections === 2);
  const c = await connect(h.at('tcp', '127.0.0.1'));
  await closedByPeer(c);
  t.equal(h.receivers.metrics.tcp.dropped['max-connections'], 1);
  a.write('from a\n');
  b.write('from b\n');
  await h.sink.waitFor(2);
  t.same([...h.sink.messages].sort(), ['from a', 'from b']);
  a.end();
  await closedByPeer(a);
  await until(() => h.receivers.metrics.openConnections === 1);
  const d = await connect(h.at('tcp', '127.0.0.1'));
  d.end('from d\n');
  await h.sink.waitFor(3);
  t.equal(h.sink.messages[2], 'from d', 'a freed slot is usable again');
  b.end();
  await closedByPeer(b);
});

/** Polls `read` until it returns the same value `polls` times in a row: the sockets have stopped moving. */
async function settled(read: () => number, polls = 10): Promise<number> {
  let last = read();
  for (let same = 0; same < polls; ) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = read();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

t.test('back-pressure: a refusing sink stops all reading until it drains, then everything arrives', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.receivers.close());
  h.sink.full = true;
  const a = await connect(h.at('tcp', '127.0.0.1'));
  await writeChunks(a, [Buffer.from('first\n')]);
  await h.sink.waitFor(1);
  t.ok(h.receivers.tcpPaused, 'the refusal paused TCP');

  // Far more than loopback's socket buffers can hold: if the receiver kept reading, the sender's queue would empty.
  const lines = Array.from({ length: 100_000 }, (_, i) => `${String(i).padStart(6, '0')} ${'p'.repeat(200)}`);
  const payload = Buffer.from(`${lines.join('\n')}\n`);
  const drained = once(a, 'drain');
  t.notOk(a.write(payload), 'the sender has to queue');
  const b = await connect(h.at('tcp', '::1'));
  b.write('from a connection opened while paused\n');

  const stuck = await settled(() => a.writableLength);
  t.ok(stuck > payload.length / 2, `the sender's queue stays full while paused (${stuck} bytes queued)`);
  t.equal(h.sink.messages.length, 1, 'nothing more was handed to the sink while it was full');
  t.equal(h.sink.acceptedWhileFull, 1);

  h.sink.drain();
  await drained;
  await h.sink.waitFor(2 + lines.length);
  t.notOk(h.receivers.tcpPaused);
  const fromA = h.sink.messages.filter((m) => m !== 'from a connection opened while paused');
  t.equal(fromA.length, 1 + lines.length);
  t.ok(fromA.every((m, i) => m === (i === 0 ? 'first' : lines[i - 1])), 'in order, exactly once');
  t.ok(h.sink.messages.includes('from a connection opened while paused'));
  a.end();
  b.end();
  await Promise.all([closedByPeer(a), closedByPeer(b)]);
});

t.test('close() while clients are mid-frame: complete frames delivered, the partial ones counted', async (t) => {
  const h = await startHarness();
  const lf = await connect(h.at('tcp', '127.0.0.1'));
  const octet = await connect(h.at('tcp', '::1'));
  lf.write('one\ntwo\nthr');
  octet.write('3 abc5 ab');
  await h.sink.waitFor(3);
  const port = h.at('tcp', '127.0.0.1').port;
  await h.receivers.close();
  await Promise.all([closedByPeer(lf), closedByPeer(octet)]);
  t.same([...h.sink.messages].sort(), ['abc', 'one', 'two']);
  t.equal(h.receivers.metrics.tcp.dropped['partial-frame'], 2);
  t.equal(h.receivers.metrics.openConnections, 0);
  const refused = net.connect(port, '127.0.0.1');
  const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
  t.equal(err.code, 'ECONNREFUSED', 'no longer accepting');
});
