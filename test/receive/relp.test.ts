/**
 * The RELP listener against a hand-written client over a real socket: the open handshake, answers only once the
 * sink reports the record durable and always in command order, 500 for a dropped record, malformed frames, an
 * oversize DATALEN, the window, close, repeated transaction numbers and duplicate messages. The messages are real
 * rsyslog lines from the fixtures.
 */
import t, { type Test } from 'tap';
import type net from 'node:net';
import { parseOffers, RelpFrameDecoder, relpHash, type RelpFrame } from '../../src/receive/relp.js';
import type { ReceiverOptions } from '../../src/receive/receivers.js';
import { lfFrames, stream } from './corpus.js';
import { closedByPeer, connect, startHarness, until, type Harness } from './harness.js';

const LINES = lfFrames(stream('tcp-egress-smtp.rsyslog-rfc5424-tcp-lf.bin'));
const OPEN_OFFERS = 'relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog';

const frame = (txnr: number, command: string, data = ''): Buffer => {
  const bytes = Buffer.from(data);
  return Buffer.concat([Buffer.from(`${txnr} ${command} ${bytes.length}${bytes.length > 0 ? ' ' : ''}`), bytes, Buffer.from('\n')]);
};

/** A RELP client: collects the server's frames as they arrive. */
class Client {
  readonly frames: RelpFrame[] = [];
  private readonly decoder = new RelpFrameDecoder(1024 * 1024, {
    frame: (f) => {
      this.frames.push(f);
      return true;
    },
    malformed: (reason) => {
      throw new Error(`server sent a malformed frame: ${reason}`);
    },
  });

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.decoder.push(chunk));
  }

  send(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** The answers (`rsp`) so far as `txnr text`. */
  answers(): string[] {
    return this.frames.filter((f) => f.command === 'rsp').map((f) => `${f.txnr} ${f.data?.toString() ?? ''}`);
  }

  async waitAnswers(n: number): Promise<string[]> {
    await until(() => this.answers().length >= n);
    return this.answers();
  }

  async open(): Promise<void> {
    this.send(frame(1, 'open', OPEN_OFFERS));
    await this.waitAnswers(1);
  }
}

async function harness(t: Test, relp: Partial<NonNullable<ReceiverOptions['relp']>> = {}, overrides: Partial<ReceiverOptions> = {}): Promise<Harness> {
  const h = await startHarness({
    tcp: [],
    udp: [],
    maxMessageBytes: 2048,
    relp: { listen: [{ host: '127.0.0.1', port: 0 }], windowFrames: 128, recentHashes: 1000, closeWaitMs: 1000, ...relp },
    ...overrides,
  });
  t.teardown(() => h.receivers.close());
  return h;
}

async function client(h: Harness): Promise<Client> {
  return new Client(await connect(h.at('relp', '127.0.0.1')));
}

t.test('open: the offers are answered with relp_version, relp_software and commands=syslog', async (t) => {
  t.same([...parseOffers(Buffer.from(OPEN_OFFERS)).entries()], [
    ['relp_version', ['0']],
    ['relp_software', ['librelp', '1.11.0', 'http://librelp.adiscon.com']],
    ['commands', ['syslog']],
  ]);
  const h = await harness(t);
  const c = await client(h);
  await c.open();
  t.same(c.answers(), ['1 200 OK\nrelp_version=0\nrelp_software=dockflow\ncommands=syslog']);
  t.equal(h.receivers.metrics.relpCounts.sessionsOpened, 1);
  c.socket.destroy();

  const bad: Array<[string, string]> = [
    ['commands=syslog', '1 500 error: no relp_version offer'],
    ['relp_version=0\ncommands=eventlog', '1 500 required command not supported by client'],
  ];
  for (const [offers, answer] of bad) {
    const c2 = await client(h);
    c2.send(frame(1, 'open', offers));
    await closedByPeer(c2.socket);
    t.same(c2.answers(), [answer], offers);
  }
});

t.test('each syslog frame is answered once its record is durable, in command order; a dropped record gets 500', async (t) => {
  const h = await harness(t);
  h.sink.holdDurable = true;
  const c = await client(h);
  await c.open();
  c.send(frame(2, 'syslog', LINES[0]), frame(3, 'syslog', `${LINES[1]}\n`), frame(4, 'syslog', LINES[2]));
  await h.sink.waitFor(3);
  t.same(h.sink.messages, LINES.slice(0, 3), 'the trailing LF inside DATA is not part of the message');
  t.ok(h.sink.metas.every((m) => m.transport === 'relp' && m.remoteAddress === '127.0.0.1'));
  t.equal(h.sink.metas[0]!.hash, relpHash('127.0.0.1', Buffer.from(LINES[0]!)), 'hash of the sender and the bytes');
  t.equal(h.receivers.metrics.relpCounts.unanswered, 3);

  h.sink.durable[1]!('stored');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(c.answers().length, 1, 'frame 3 durable but frame 2 not yet: no answer is sent out of order');
  h.sink.durable[0]!('stored');
  t.same((await c.waitAnswers(3)).slice(1), ['2 200 OK', '3 200 OK']);
  h.sink.durable[2]!('dropped');
  t.same((await c.waitAnswers(4)).slice(3), ['4 500 not stored, send it again']);
  t.equal(h.receivers.metrics.relpCounts.acknowledged, 2);
  t.equal(h.receivers.metrics.relpCounts.refused, 1);
  t.equal(h.receivers.metrics.relp.dropped['relp-not-stored'], 1);
  t.equal(h.receivers.metrics.relpCounts.unanswered, 0);

  // An empty message has nothing to store: answered at once, not handed on.
  c.send(frame(5, 'syslog'));
  t.same((await c.waitAnswers(5)).slice(4), ['5 200 OK']);
  t.equal(h.sink.messages.length, 3);

  c.send(frame(6, 'close'));
  await closedByPeer(c.socket);
  t.same(c.answers().slice(5), ['6 200 OK'], 'close is answered, then the server ends the connection');
});

t.test('malformed frames close the connection with serverclose, counted', async (t) => {
  const h = await harness(t);
  const cases: Array<[string, Buffer[]]> = [
    ['letters in the txnr', [Buffer.from('1x open 0\n')]],
    ['no command', [Buffer.from('1  0\n')]],
    ['a digit in the command', [Buffer.from('1 sys1og 3 abc\n')]],
    ['command longer than 32 letters', [Buffer.from(`1 ${'a'.repeat(33)} 0\n`)]],
    ['DATALEN of 10 digits', [Buffer.from('1 open 1234567890 x\n')]],
    ['no LF after the data', [frame(1, 'open', OPEN_OFFERS).subarray(0, -1), Buffer.from('X')]],
    ['no LF after DATALEN 0', [Buffer.from('1 close 0 \n')]],
    ['syslog before open', [frame(1, 'syslog', LINES[0])]],
    ['open twice', [frame(1, 'open', OPEN_OFFERS), frame(2, 'open', OPEN_OFFERS)]],
  ];
  let protocolErrors = 0;
  for (const [name, bytes] of cases) {
    const c = await client(h);
    c.send(...bytes);
    await closedByPeer(c.socket);
    if (name === 'open twice') {
      t.same(c.answers().slice(1), ['2 500 protocol error: connection already open'], name);
    } else {
      protocolErrors++;
      t.ok(c.frames.some((f) => f.txnr === 0 && f.command === 'serverclose'), `${name}: serverclose hint`);
    }
  }
  t.equal(h.receivers.metrics.relp.dropped['relp-protocol'], protocolErrors);
  t.equal(h.sink.messages.length, 0);
});

t.test('an oversize DATALEN is skipped unbuffered, answered and counted; the session goes on', async (t) => {
  const h = await harness(t);
  const c = await client(h);
  await c.open();
  const huge = 'x'.repeat(4096);
  c.send(frame(2, 'syslog', huge), frame(3, 'syslog', LINES[0]));
  t.same((await c.waitAnswers(3)).slice(1), ['2 200 OK', '3 200 OK']);
  t.same(h.sink.messages, [LINES[0]]);
  t.equal(h.receivers.metrics.relp.dropped.oversize, 1);
  // DATALEN announced far above the cap: the bytes are skipped as they come, never held.
  c.send(Buffer.from('4 syslog 900000000 '), Buffer.alloc(64 * 1024, 0x61));
  await until(() => h.receivers.metrics.relp.bytes > 64 * 1024);
  t.equal(h.receivers.metrics.relp.dropped['relp-protocol'], 0);
  c.socket.destroy();
  await until(() => h.receivers.metrics.relp.dropped['partial-frame'] === 1);
});

t.test('window: past windowFrames unanswered frames the connection stops reading until answers free it', async (t) => {
  const h = await harness(t, { windowFrames: 4 });
  h.sink.holdDurable = true;
  const c = await client(h);
  await c.open();
  // Ten frames in one write: the listener must stop inside the chunk, not only between reads.
  c.send(...LINES.slice(0, 10).map((line, i) => frame(i + 2, 'syslog', line)));
  await h.sink.waitFor(4);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(h.sink.messages.length, 4, 'no more than the window is taken');
  t.equal(h.receivers.metrics.relpCounts.windowFull, 1);
  for (let i = 0; i < 10; i++) {
    await until(() => h.sink.durable.length > i);
    h.sink.durable[i]!('stored');
  }
  const answers = await c.waitAnswers(11);
  t.same(answers.slice(1), LINES.slice(0, 10).map((_, i) => `${i + 2} 200 OK`));
  t.same(h.sink.messages, LINES.slice(0, 10));
  c.socket.destroy();
});

t.test('a repeated txnr is counted; a message stored before is counted as a duplicate, and stored again', async (t) => {
  const h = await harness(t);
  const c = await client(h);
  await c.open();
  c.send(frame(2, 'syslog', LINES[0]), frame(2, 'syslog', LINES[1]));
  await c.waitAnswers(3);
  t.equal(h.receivers.metrics.relpCounts.repeatedTxnr, 1);
  t.equal(h.receivers.metrics.relpCounts.duplicates, 0);
  // The sender lost the connection before reading the answers and sends the message again in a new session.
  c.socket.destroy();
  const c2 = await client(h);
  await c2.open();
  c2.send(frame(2, 'syslog', LINES[0]));
  await c2.waitAnswers(2);
  t.equal(h.receivers.metrics.relpCounts.duplicates, 1);
  t.equal(h.sink.metas[2]!.hash, h.sink.metas[0]!.hash, 'both carry the same hash, so the stored pair can be found');
  c2.socket.destroy();

  // The connection is lost while the record is on its way to Redis; stored afterwards, its resend is still detected.
  h.sink.holdDurable = true;
  const c3 = await client(h);
  await c3.open();
  c3.send(frame(2, 'syslog', LINES[3]));
  await h.sink.waitFor(4);
  c3.socket.destroy();
  await until(() => h.receivers.metrics.connections.relp === 0);
  h.sink.durable[0]!('stored');
  h.sink.holdDurable = false;
  const c4 = await client(h);
  await c4.open();
  c4.send(frame(2, 'syslog', LINES[3]));
  await c4.waitAnswers(2);
  t.equal(h.receivers.metrics.relpCounts.duplicates, 2, 'a record stored after its connection was lost is remembered too');
  c4.socket.destroy();
});

t.test('close(): unanswered frames get their answers if durable in time, then serverclose', async (t) => {
  const h = await startHarness({
    tcp: [],
    udp: [],
    relp: { listen: [{ host: '127.0.0.1', port: 0 }], windowFrames: 128, recentHashes: 1000, closeWaitMs: 5000 },
  });
  h.sink.holdDurable = true;
  const c = await client(h);
  await c.open();
  c.send(frame(2, 'syslog', LINES[0]));
  await h.sink.waitFor(1);
  const closing = h.receivers.close();
  setTimeout(() => h.sink.durable[0]!('stored'), 50);
  await closing;
  await closedByPeer(c.socket);
  t.same(c.answers().slice(1), ['2 200 OK']);
  t.ok(c.frames.some((f) => f.txnr === 0 && f.command === 'serverclose'));
});

t.test('byte-exact: a message that is not valid UTF-8 is handed on with its exact bytes; valid UTF-8 without', async (t) => {
  const h = await harness(t);
  const c = await client(h);
  await c.open();
  const line = Buffer.from(LINES[0]!);
  const invalid = Buffer.concat([line, Buffer.from([0x20, 0xff, 0xfe, 0x41])]);
  const data = (txnr: number, b: Buffer): Buffer => Buffer.concat([Buffer.from(`${txnr} syslog ${b.length} `), b, Buffer.from('\n')]);
  c.socket.write(Buffer.concat([data(2, line), data(3, invalid)]));
  t.same((await c.waitAnswers(3)).slice(1), ['2 200 OK', '3 200 OK']);
  t.equal(h.sink.raws[0], undefined, 'valid UTF-8: the text gives the bytes back');
  t.ok(Buffer.isBuffer(h.sink.raws[1]) && h.sink.raws[1]!.equals(invalid), 'invalid UTF-8: the exact bytes');
  t.ok(h.sink.messages[1]!.includes('\uFFFD'));
});

t.test('frame deadline: a started RELP frame not completed in time closes the connection; an idle session does not', async (t) => {
  const h = await harness(t, {}, { frameTimeoutMs: 200, idleTimeoutMs: 60_000 });
  const idle = await client(h);
  await idle.open();
  const slow = await client(h);
  await slow.open();
  // A frame started and trickled: one byte now and then, never the trailer.
  slow.socket.write('2 syslog 100 ');
  const trickle = setInterval(() => slow.socket.write('x'), 50);
  t.teardown(() => clearInterval(trickle));
  await closedByPeer(slow.socket);
  clearInterval(trickle);
  t.equal(h.receivers.metrics.relp.dropped['frame-timeout'], 1);
  // The idle session, between frames the whole time, is still served.
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.notOk(idle.socket.destroyed, 'an open session with no frame started is not closed');
  idle.send(frame(2, 'syslog', LINES[0]));
  t.same((await idle.waitAnswers(2))[1], '2 200 OK');
});

t.test('per-source cap: RELP connections from one address beyond maxConnectionsPerSource are refused and counted', async (t) => {
  const h = await harness(t, {}, { maxConnectionsPerSource: 2 });
  const a = await client(h);
  const b = await client(h);
  await a.open();
  await b.open();
  const c = await client(h);
  await closedByPeer(c.socket);
  t.equal(h.receivers.metrics.relp.dropped['max-connections-per-source'], 1);
  t.equal(h.receivers.metrics.connections.relp, 2);
});
