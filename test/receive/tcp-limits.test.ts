/**
 * Syslog TCP under connection floods, on loopback (distinct 127.x.y.z source addresses stand for distinct senders):
 * the per-source cap, the frame deadline (slowloris) and the lines of refused connections counted.
 */
import net from 'node:net';
import { once } from 'node:events';
import t from 'tap';
import { closedByPeer, startHarness, until, type Harness } from './harness.js';

async function connectFrom(h: Harness, localAddress: string): Promise<net.Socket> {
  const to = h.at('tcp', '127.0.0.1');
  const socket = net.connect({ host: to.address, port: to.port, localAddress });
  socket.setNoDelay(true);
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  return socket;
}

/** Writes one byte every `everyMs` and never ends a line, until the server closes it or `maxBytes` are sent. */
function slowloris(socket: net.Socket, everyMs: number, maxBytes: number): Promise<number> {
  return new Promise((resolve) => {
    let sent = 0;
    const timer = setInterval(() => {
      if (socket.destroyed || sent >= maxBytes) {
        clearInterval(timer);
        socket.destroy();
        resolve(sent);
        return;
      }
      socket.write('<');
      sent++;
    }, everyMs);
    socket.on('close', () => {
      clearInterval(timer);
      resolve(sent);
    });
  });
}

const lines = (who: string, n: number): string => Array.from({ length: n }, (_, i) => `${who} line ${i}\n`).join('');

t.test('many connections from one source: the per-source cap refuses the excess, counts their lines, and other senders get through', { timeout: 60_000 }, async (t) => {
  const h = await startHarness({ maxConnections: 64, maxConnectionsPerSource: 8 });
  t.teardown(() => h.receivers.close());
  const attacker = '127.0.0.2';
  const floods = await Promise.all(Array.from({ length: 60 }, () => connectFrom(h, attacker)));
  // Every flood connection sends 3 lines at once; the accepted ones are kept, the refused ones counted.
  for (const s of floods) s.write(lines('flood', 3));
  await until(() => h.receivers.metrics.tcp.dropped['max-connections-per-source'] === 52);
  await until(() => h.receivers.metrics.tcp.dropped['refused-lines'] + h.sink.messages.length === 180);
  t.equal(h.receivers.metrics.openConnections, 8, 'the attacker holds 8 slots, no more');
  t.equal(h.sink.messages.length, 24, 'the 8 accepted connections: their lines are kept');
  t.equal(h.receivers.metrics.tcp.dropped['refused-lines'], 156, 'the 52 refused: their lines counted, not lost unseen');

  // Real senders from 20 other addresses, while the attacker's 8 stay open.
  const senders = await Promise.all(Array.from({ length: 20 }, (_, i) => connectFrom(h, `127.0.1.${i + 1}`)));
  for (const [i, s] of senders.entries()) s.end(lines(`sender ${i}`, 50));
  await h.sink.waitFor(24 + 20 * 50);
  t.equal(h.sink.messages.filter((m) => m.startsWith('sender')).length, 1000, 'every real sender line arrives');
  t.comment(JSON.stringify({ floodConnections: 60, accepted: 8, refused: h.receivers.metrics.tcp.dropped['max-connections-per-source'], refusedLines: h.receivers.metrics.tcp.dropped['refused-lines'], realLines: 1000 }));
  for (const s of floods) s.destroy();
  await until(() => h.receivers.metrics.openConnections === 0);
});

t.test('slowloris: connections that trickle bytes and never finish a line are closed by the frame deadline; real senders keep working and get the slots back', { timeout: 60_000 }, async (t) => {
  const h = await startHarness({ maxConnections: 64, maxConnectionsPerSource: 4, frameTimeoutMs: 400, idleTimeoutMs: 60_000 });
  t.teardown(() => h.receivers.close());
  const m = h.receivers.metrics;
  // A real sender already connected, writing a line every 50 ms through the whole flood.
  const steady = await connectFrom(h, '127.0.2.1');
  let steadySent = 0;
  const steadyTimer = setInterval(() => steady.write(lines(`steady ${steadySent++}`, 1)), 50);

  // 80 slowloris connections from 80 addresses, a byte every 100 ms (each byte would reset an idle timer): the
  // first 63 fill every free slot, the rest are refused.
  const attackers = await Promise.all(Array.from({ length: 80 }, (_, i) => connectFrom(h, `127.1.${Math.floor(i / 200)}.${(i % 200) + 1}`)));
  const trickles = attackers.map((s) => slowloris(s, 100, 100));
  await until(() => m.tcp.dropped['max-connections'] === 17);
  t.equal(m.openConnections, 64, 'every slot taken');
  const locked = await connectFrom(h, '127.0.3.1');
  await closedByPeer(locked);
  t.equal(m.tcp.dropped['max-connections'], 18, 'a new sender is refused while the flood holds the slots');

  // Within the deadline (and one sweep) every trickling connection is closed and counted.
  await Promise.all(trickles);
  await until(() => m.openConnections === 1);
  t.equal(m.tcp.dropped['frame-timeout'], 63, 'each slowloris connection closed by the frame deadline');
  t.equal(m.tcp.dropped['partial-frame'], 63, 'and its unfinished line counted');

  // The slots are free again: new senders get through.
  const senders = await Promise.all(Array.from({ length: 10 }, (_, i) => connectFrom(h, `127.0.4.${i + 1}`)));
  for (const [i, s] of senders.entries()) s.end(lines(`sender ${i}`, 100));
  await until(() => h.sink.messages.filter((msg) => msg.startsWith('sender')).length === 1000);
  clearInterval(steadyTimer);
  steady.end();
  await closedByPeer(steady);
  await until(() => h.sink.messages.filter((msg) => msg.startsWith('steady')).length === steadySent);
  t.pass(`the steady sender was never closed: ${steadySent} lines, all arrived`);
  t.comment(JSON.stringify({ slowloris: 80, refusedByCap: m.tcp.dropped['max-connections'], frameTimeouts: m.tcp.dropped['frame-timeout'], partialFrames: m.tcp.dropped['partial-frame'], steadyLines: steadySent, realLinesAfter: 1000 }));
});

t.test('the frame deadline waits while the receiver is paused by back-pressure', { timeout: 30_000 }, async (t) => {
  const h = await startHarness({ frameTimeoutMs: 100 });
  t.teardown(() => h.receivers.close());
  const s = await connectFrom(h, '127.0.5.1');
  h.sink.full = true;
  s.write('first\nhalf a');
  await h.sink.waitFor(1);
  t.ok(h.receivers.tcpPaused, 'paused');
  await new Promise((r) => setTimeout(r, 400));
  t.equal(h.receivers.metrics.tcp.dropped['frame-timeout'], 0, 'not closed while we were not reading');
  h.sink.drain();
  s.end(' line\n');
  await h.sink.waitFor(2);
  t.same(h.sink.messages, ['first', 'half a line']);
});
