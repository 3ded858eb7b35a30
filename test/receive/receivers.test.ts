import t from 'tap';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { DockflowError, ErrorCode } from '../../src/errors.js';
import { startReceivers } from '../../src/receive/receivers.js';
import { freePort } from '../helpers/redis.js';
import { closedByPeer, CollectingSink, connect, metricValue, sendDatagrams, startHarness, TEST_OPTIONS, until } from './harness.js';

t.test('addresses() reports the ports picked for port 0, per transport and family', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.receivers.close());
  const got = h.receivers.addresses().map(({ transport, address, family, port }) => ({ transport, address, family, ok: port > 0 }));
  t.same(got, [
    { transport: 'tcp', address: '127.0.0.1', family: 4, ok: true },
    { transport: 'tcp', address: '::1', family: 6, ok: true },
    { transport: 'udp', address: '127.0.0.1', family: 4, ok: true },
    { transport: 'udp', address: '::1', family: 6, ok: true },
  ]);
});

const allowCases: Array<{ allow: string[]; allowed: string; refused: string }> = [
  { allow: ['127.0.0.0/8'], allowed: '127.0.0.1', refused: '::1' },
  { allow: ['::1/128'], allowed: '::1', refused: '127.0.0.1' },
  { allow: ['::ffff:127.0.0.1'], allowed: '127.0.0.1', refused: '::1' },
];

t.test('the allowlist drops and counts TCP connections and UDP datagrams from other senders', async (t) => {
  for (const c of allowCases) {
    const h = await startHarness({ allow: c.allow });
    const refused = await connect(h.at('tcp', c.refused));
    refused.write('should not arrive\n');
    await closedByPeer(refused);
    await sendDatagrams(h.at('udp', c.refused), [Buffer.from('should not arrive either')]);
    await until(() => h.receivers.metrics.udp.dropped['not-allowed'] === 1);

    const allowed = await connect(h.at('tcp', c.allowed));
    allowed.end('tcp ok\n');
    await closedByPeer(allowed);
    await sendDatagrams(h.at('udp', c.allowed), [Buffer.from('udp ok')]);
    await h.sink.waitFor(2);
    t.same(h.sink.messages, ['tcp ok', 'udp ok'], `[${c.allow}]: ${c.allowed} allowed`);
    t.equal(h.receivers.metrics.tcp.dropped['not-allowed'], 1, `[${c.allow}]: ${c.refused} refused over TCP`);
    t.equal(await metricValue(h.registry, 'dockflow_receive_dropped_total{transport="tcp",reason="not-allowed"}'), 1);
    t.equal(await metricValue(h.registry, 'dockflow_receive_dropped_total{transport="udp",reason="not-allowed"}'), 1);
    await h.receivers.close();
  }
});

t.test('an IPv6 listener sees IPv4 peers as mapped addresses: matched against IPv4 ranges, unwrapped for the sink', async (t) => {
  // Bound to the mapped loopback address: a dual-stack socket that stays on 127.0.0.1.
  const mapped = { host: '::ffff:127.0.0.1', port: 0 };
  const h = await startHarness({ tcp: [mapped], udp: [mapped], allow: ['127.0.0.1/32'] });
  t.teardown(() => h.receivers.close());
  const tcpAt = h.at('tcp', '::ffff:127.0.0.1');
  const udpAt = h.at('udp', '::ffff:127.0.0.1');
  const socket = net.connect(tcpAt.port, '127.0.0.1');
  socket.end('over tcp\n');
  await closedByPeer(socket);
  const udp = dgram.createSocket('udp4');
  udp.send('over udp', udpAt.port, '127.0.0.1');
  await h.sink.waitFor(2);
  udp.close();
  t.same(h.sink.messages, ['over tcp', 'over udp']);
  t.same(
    h.sink.metas.map((m) => m.remoteAddress),
    ['127.0.0.1', '127.0.0.1'],
  );
});

t.test('the metrics are published on the injected registry', async (t) => {
  const h = await startHarness({ idleTimeoutMs: 50 });
  t.teardown(() => h.receivers.close());
  const open = await connect(h.at('tcp', '127.0.0.1'));
  open.write('one\n2 3 ');
  await h.sink.waitFor(1);
  t.equal(await metricValue(h.registry, 'dockflow_receive_tcp_connections'), 1);
  await closedByPeer(open);
  await until(() => h.receivers.metrics.openConnections === 0);
  await sendDatagrams(h.at('udp', '::1'), [Buffer.from('two\n')]);
  await h.sink.waitFor(2);
  const expected: Array<[string, number]> = [
    ['dockflow_receive_messages_total{transport="tcp"}', 1],
    ['dockflow_receive_messages_total{transport="udp"}', 1],
    ['dockflow_receive_bytes_total{transport="tcp"}', 8],
    ['dockflow_receive_bytes_total{transport="udp"}', 4],
    ['dockflow_receive_dropped_total{transport="tcp",reason="partial-frame"}', 1],
    ['dockflow_receive_dropped_total{transport="tcp",reason="max-connections"}', 0],
    ['dockflow_receive_dropped_total{transport="udp",reason="oversize"}', 0],
    ['dockflow_receive_tcp_connections', 0],
    ['dockflow_receive_tcp_idle_timeouts_total', 1],
  ];
  for (const [series, value] of expected) t.equal(await metricValue(h.registry, series), value, series);
});

t.test('a listener that cannot bind fails start-up with LISTEN_FAILED and closes the ones already bound', async (t) => {
  const busy = net.createServer().listen(0, '127.0.0.1');
  await once(busy, 'listening');
  t.teardown(() => busy.close());
  const busyPort = (busy.address() as net.AddressInfo).port;
  const busyUdp = dgram.createSocket('udp4');
  busyUdp.bind(0, '127.0.0.1');
  await once(busyUdp, 'listening');
  t.teardown(() => busyUdp.close());

  const cases = [
    { name: 'tcp', busy: { tcp: [{ host: '127.0.0.1', port: busyPort }], udp: [] } },
    { name: 'udp', busy: { tcp: [], udp: [{ host: '127.0.0.1', port: busyUdp.address().port }] } },
  ];
  for (const c of cases) {
    const freeTcp = await freePort();
    const opts = { ...TEST_OPTIONS, tcp: [{ host: '127.0.0.1', port: freeTcp }, ...c.busy.tcp], udp: c.busy.udp };
    await t.rejects(
      startReceivers(opts, new CollectingSink(), { logger: pino({ level: 'silent' }), registry: new Registry() }),
      { name: 'DockflowError', code: ErrorCode.LISTEN_FAILED },
      `${c.name} port in use`,
    );
    const again = net.createServer().listen(freeTcp, '127.0.0.1');
    await once(again, 'listening');
    t.pass(`${c.name}: the listener bound before the failure was closed`);
    await new Promise((resolve) => again.close(resolve));
  }
});

t.test('a bad allowlist entry fails start-up with CONFIG_INVALID', async (t) => {
  await t.rejects(
    startReceivers({ ...TEST_OPTIONS, allow: ['10.0.0.0/40'] }, new CollectingSink(), { logger: pino({ level: 'silent' }), registry: new Registry() }),
    new DockflowError(ErrorCode.CONFIG_INVALID, 'allowlist entry "10.0.0.0/40" is not an IPv4 or IPv6 CIDR'),
  );
});
