import t from 'tap';
import dgram from 'node:dgram';
import { udpDatagrams } from './corpus.js';
import { metricValue, sendDatagrams, startHarness, until } from './harness.js';

const captures = ['tcp-egress-smtp.rsyslog-rfc5424-udp.bin', 'tcp-egress-smtp.rsyslog-rfc3164-udp.bin'];

t.test('real rsyslog datagrams over IPv4 and IPv6: one datagram, one message, trailing LF stripped', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.receivers.close());
  for (const host of ['127.0.0.1', '::1']) {
    for (const name of captures) {
      const datagrams = udpDatagrams(name);
      const expected = datagrams.map((d) => d.toString('utf8').replace(/\n$/, ''));
      const from = h.sink.messages.length;
      await sendDatagrams(h.at('udp', host), datagrams);
      await h.sink.waitFor(from + expected.length);
      t.same(h.sink.messages.slice(from), expected, `${host} ${name}`);
      t.ok(
        h.sink.metas.slice(from).every((m) => m.transport === 'udp' && m.remoteAddress === host),
        `${host} ${name}: meta names the sender`,
      );
    }
  }
  t.equal(h.receivers.metrics.udp.messages, h.sink.messages.length);
});

t.test('oversize datagrams are counted; the datagrams around them arrive', async (t) => {
  const h = await startHarness({ maxMessageBytes: 1024 });
  t.teardown(() => h.receivers.close());
  const sizes = ['one', 'x'.repeat(1025), 'y'.repeat(1024), `${'z'.repeat(1024)}\r\n`, 'w'.repeat(20_000), '', '\n', 'two\n'];
  await sendDatagrams(h.at('udp', '::1'), sizes.map((s) => Buffer.from(s)));
  await h.sink.waitFor(4);
  t.same(h.sink.messages, ['one', 'y'.repeat(1024), 'z'.repeat(1024), 'two'], 'empty datagrams are no messages');
  t.equal(h.receivers.metrics.udp.dropped.oversize, 2);
  t.equal(h.receivers.metrics.udp.bytes, sizes.reduce((n, s) => n + Buffer.byteLength(s), 0), 'every byte read is counted');
});

t.test('kernel drops on the socket are read from /proc/net/udp and exported with the granted buffer', async (t) => {
  // The smallest buffer the kernel allows holds one or two datagrams.
  const h = await startHarness({ udp: [{ host: '127.0.0.1', port: 0 }], tcp: [], receiveBufferBytes: 1 });
  t.teardown(() => h.receivers.close());
  const to = h.at('udp', '127.0.0.1');
  const label = `{listen="127.0.0.1:${to.port}"}`;
  t.equal(await metricValue(h.registry, `dockflow_receive_udp_kernel_drops${label}`), 0, 'the socket is found, nothing dropped yet');
  const buffer = await metricValue(h.registry, `dockflow_receive_udp_buffer_bytes${label}`);
  t.ok(buffer !== undefined && buffer > 0 && buffer < 64 * 1024, `granted buffer reported (${buffer} bytes)`);

  // One synchronous burst: the receiver cannot read until it ends, so the kernel must drop most of it.
  const sent = 300;
  const sender = dgram.createSocket('udp4');
  t.teardown(() => sender.close());
  const payload = Buffer.alloc(400, 0x61);
  for (let i = 0; i < sent; i++) sender.send(payload, to.port, to.address);
  const drops = async (): Promise<number> => (await metricValue(h.registry, `dockflow_receive_udp_kernel_drops${label}`)) ?? -1;
  await until(async () => h.sink.messages.length + (await drops()) === sent);
  t.ok((await drops()) > 0, `the kernel's drops are visible (${await drops()} of ${sent})`);
  t.ok(h.sink.messages.length > 0, 'what the buffer held was received');
});

t.test('a buffer granted below the request is still reported as granted', async (t) => {
  const h = await startHarness({ udp: [{ host: '::1', port: 0 }], tcp: [], receiveBufferBytes: 1 << 30 });
  t.teardown(() => h.receivers.close());
  const label = `{listen="[::1]:${h.at('udp', '::1').port}"}`;
  const buffer = await metricValue(h.registry, `dockflow_receive_udp_buffer_bytes${label}`);
  t.ok(buffer !== undefined && buffer > 0 && buffer < 1 << 30, `capped by net.core.rmem_max (${buffer} bytes)`);
});
