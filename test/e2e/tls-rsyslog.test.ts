/**
 * Syslog over TLS (RFC 5425) from a real rsyslog (omfwd, gtls stream driver, octet-counted framing) to the TLS
 * listener, with a test CA made here with openssl: a client with an allowed subject gets every line through unchanged,
 * a CA-signed client with another subject is refused, a client the CA did not sign fails the handshake, and a new
 * server certificate written over the old files is served without a restart.
 */
import t from 'tap';
import { copyFileSync, appendFileSync, renameSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import tls from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { fixture } from '../helpers/paths.js';
import { tempDir } from '../helpers/temp.js';
import { makePki, rsyslogUnsupported, startRsyslogSender } from '../helpers/rsyslog-sender.js';
import { startHarness, until } from '../receive/harness.js';

const skip = rsyslogUnsupported(['imfile', 'lmnsd_gtls']);
const LINES = gunzipSync(readFileSync(fixture('bench', 'burst-5000.rsyslog-rfc5424-tcp-lf.bin.gz'))).toString('utf8').split('\n').slice(0, 400);

t.test('rsyslog over TLS with client certificates', { skip: skip ?? false }, async (t) => {
  const dir = tempDir(t, 'tls');
  const pki = makePki(join(dir, 'pki'));
  const server = pki.issue('server', { cn: 'localhost', san: 'DNS:localhost,IP:127.0.0.1', usage: 'server' });
  const good = pki.issue('sender', { cn: 'sender.example', san: 'DNS:sender.example', usage: 'client' });
  const intruder = pki.issue('intruder', { cn: 'intruder.example', usage: 'client' });
  const untrusted = pki.issue('untrusted', { cn: 'sender.example', usage: 'client', untrusted: true });
  // The listener reads its own copies, which the reload step replaces.
  const certFile = join(dir, 'listener.crt');
  const keyFile = join(dir, 'listener.key');
  copyFileSync(server.cert, certFile);
  copyFileSync(server.key, keyFile);

  const h = await startHarness({
    tcp: [],
    udp: [],
    tls: {
      listen: [{ host: '127.0.0.1', port: 0 }],
      credentials: { certFile, keyFile, caFile: pki.ca, allowedSubjects: ['sender.example'], reloadIntervalMs: 100, handshakeTimeoutMs: 5000 },
    },
  });
  t.teardown(() => h.receivers.close());
  const port = h.at('tls', '127.0.0.1').port;
  const counts = h.receivers.metrics;

  const sender = (name: string, client: { cert: string; key: string }) =>
    startRsyslogSender(
      t,
      join(dir, name),
      `action(type="omfwd" target="127.0.0.1" port="${port}" protocol="tcp" template="raw" TCP_Framing="octet-counted"
        StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost"
        action.resumeRetryCount="-1" action.resumeInterval="1")`,
      `defaultNetstreamDriverCAFile="${pki.ca}" defaultNetstreamDriverCertFile="${client.cert}" defaultNetstreamDriverKeyFile="${client.key}"`,
    );

  await t.test('an allowed client: every line arrives unchanged, over TLS', async (t) => {
    const rs = await sender('good', good);
    appendFileSync(rs.input, LINES.slice(0, 300).join('\n') + '\n');
    await until(() => h.sink.messages.length >= 300);
    t.same(h.sink.messages, LINES.slice(0, 300));
    t.ok(h.sink.metas.every((m) => m.transport === 'tls' && m.remoteAddress === '127.0.0.1'));
    t.equal(counts.tls.messages, 300);
    t.equal(counts.connections.tls, 1);
    await rs.stop();
  });

  await t.test('a CA-signed client whose subject is not allowed is refused', async (t) => {
    const rs = await sender('intruder', intruder);
    appendFileSync(rs.input, LINES.slice(300, 310).join('\n') + '\n');
    await until(() => counts.tls.dropped['subject-not-allowed'] >= 1);
    await rs.stop();
    t.equal(h.sink.messages.length, 300, 'nothing of it was taken');
  });

  await t.test('a client certificate the CA did not sign fails the handshake', async (t) => {
    const rs = await sender('untrusted', untrusted);
    appendFileSync(rs.input, LINES.slice(310, 320).join('\n') + '\n');
    await until(() => counts.tls.dropped['tls-handshake'] >= 1);
    await rs.stop();
    t.equal(h.sink.messages.length, 300);
    t.equal(counts.tls.messages, 300);
  });

  await t.test('a new certificate written over the files is served without a restart', async (t) => {
    const served = async (): Promise<string> => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(pki.ca), cert: readFileSync(good.cert), key: readFileSync(good.key), servername: 'localhost' });
      await once(socket, 'secureConnect');
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      return serial;
    };
    const before = await served();
    const next = pki.issue('server2', { cn: 'localhost', san: 'DNS:localhost,IP:127.0.0.1', usage: 'server' });
    // As a certificate manager does it: new files renamed over the old ones.
    copyFileSync(next.key, `${keyFile}.new`);
    copyFileSync(next.cert, `${certFile}.new`);
    renameSync(`${keyFile}.new`, keyFile);
    renameSync(`${certFile}.new`, certFile);
    await until(async () => (await served()) !== before);
    t.ok(counts.tlsCounts.reloads >= 1, 'reloaded');
    t.not(await served(), before);
    // And rsyslog, verifying the new certificate against the same CA, still gets through.
    const rs = await sender('good-after-reload', good);
    appendFileSync(rs.input, LINES.slice(320, 400).join('\n') + '\n');
    await until(() => h.sink.messages.length >= 380);
    t.same(h.sink.messages.slice(300), LINES.slice(320, 400));
    await rs.stop();
  });
});

t.test('TLS connections get the TCP limits: per-source cap and the frame deadline', { skip: skip ?? false }, async (t) => {
  const dir = tempDir(t, 'tls-limits');
  const pki = makePki(join(dir, 'pki'));
  const server = pki.issue('server', { cn: 'localhost', san: 'DNS:localhost,IP:127.0.0.1', usage: 'server' });
  const h = await startHarness({
    tcp: [],
    udp: [],
    maxConnectionsPerSource: 2,
    frameTimeoutMs: 200,
    tls: {
      listen: [{ host: '127.0.0.1', port: 0 }],
      credentials: { certFile: server.cert, keyFile: server.key, allowedSubjects: [], reloadIntervalMs: 60_000, handshakeTimeoutMs: 5000 },
    },
  });
  t.teardown(() => h.receivers.close());
  const port = h.at('tls', '127.0.0.1').port;
  const counts = h.receivers.metrics;
  const open = async (): Promise<tls.TLSSocket> => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(pki.ca), servername: 'localhost' });
    socket.on('error', () => undefined);
    await once(socket, 'secureConnect');
    return socket;
  };
  const closed = async (socket: tls.TLSSocket): Promise<void> => {
    if (!socket.destroyed) await once(socket, 'close');
  };

  // A started octet-counted frame trickled byte by byte is closed at the deadline; a whole one is delivered.
  const slow = await open();
  slow.write('100 <13>1 ');
  const trickle = setInterval(() => slow.write('x'), 50);
  await closed(slow);
  clearInterval(trickle);
  t.equal(counts.tls.dropped['frame-timeout'], 1, 'frame-timeout counted under tls');
  await until(() => counts.connections.tls === 0);

  const a = await open();
  const b = await open();
  await until(() => counts.connections.tls === 2);
  const c = await open();
  await closed(c);
  t.equal(counts.tls.dropped['max-connections-per-source'], 1, 'third connection from one address refused');
  const line = LINES[0]!;
  a.write(`${Buffer.byteLength(line)} ${line}`);
  await until(() => h.sink.messages.length >= 1);
  t.equal(h.sink.messages[0], line);
  a.destroy();
  b.destroy();
});
