import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import type { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Allowlist } from '../../src/receive/allowlist.js';
import type { BoundAddress } from '../../src/receive/listen.js';
import { ReceiveMetrics } from '../../src/receive/metrics.js';
import { startReceivers, type Receivers } from '../../src/receive/receivers.js';
import type { MessageMeta, MessageSink } from '../../src/receive/types.js';
import type { UdpReader } from '../../src/receive/udp-batch.js';
import { UdpReceiver } from '../../src/receive/udp.js';
import { udpDatagrams } from './corpus.js';
import { CollectingSink, metricValue, sendDatagrams, startHarness, TEST_OPTIONS, until } from './harness.js';
import { tempDir } from '../helpers/temp.js';

/** Every test runs with both readers: recvmmsg through the addon, and node:dgram, which `auto` falls back to. */
function each(name: string, fn: (t: Test, udpReader: UdpReader) => Promise<void>): void {
  for (const udpReader of ['batch', 'dgram'] as const) t.test(`${name} (${udpReader})`, (t) => fn(t, udpReader));
}

const captures = ['tcp-egress-smtp.rsyslog-rfc5424-udp.bin', 'tcp-egress-smtp.rsyslog-rfc3164-udp.bin'];

each('real rsyslog datagrams over IPv4 and IPv6: one datagram, one message, trailing LF stripped', async (t, udpReader) => {
  const h = await startHarness({ udpReader });
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

each('oversize datagrams are counted; the datagrams around them arrive', async (t, udpReader) => {
  const h = await startHarness({ udpReader, maxMessageBytes: 1024 });
  t.teardown(() => h.receivers.close());
  const sizes = ['one', 'x'.repeat(1025), 'y'.repeat(1024), `${'z'.repeat(1024)}\r\n`, 'w'.repeat(20_000), '', '\n', 'two\n'];
  await sendDatagrams(h.at('udp', '::1'), sizes.map((s) => Buffer.from(s)));
  await h.sink.waitFor(4);
  t.same(h.sink.messages, ['one', 'y'.repeat(1024), 'z'.repeat(1024), 'two'], 'empty datagrams are no messages');
  t.equal(h.receivers.metrics.udp.dropped.oversize, 2);
  t.equal(h.receivers.metrics.udp.bytes, sizes.reduce((n, s) => n + Buffer.byteLength(s), 0), 'every byte read is counted');
});

each('kernel drops on the socket are read from /proc/net/udp and exported with the granted buffer', async (t, udpReader) => {
  // The smallest buffer the kernel allows holds one or two datagrams.
  const h = await startHarness({ udpReader, udp: [{ host: '127.0.0.1', port: 0 }], tcp: [], receiveBufferBytes: 1 });
  t.teardown(() => h.receivers.close());
  const to = h.at('udp', '127.0.0.1');
  const label = `{listen="127.0.0.1:${to.port}"}`;
  t.equal(await metricValue(h.registry, `dockflow_receive_udp_kernel_drops${label}`), 0, 'the socket is found, nothing dropped yet');
  const buffer = await metricValue(h.registry, `dockflow_receive_udp_buffer_bytes${label}`);
  t.ok(buffer !== undefined && buffer > 0 && buffer < 64 * 1024, `granted buffer reported (${buffer} bytes)`);

  // Sent while this process, receive thread and all, is stopped: the buffer of a datagram or two must overflow.
  const sent = 300;
  await sendWhileStopped(to, sent);
  const drops = async (): Promise<number> => (await metricValue(h.registry, `dockflow_receive_udp_kernel_drops${label}`)) ?? -1;
  await until(async () => h.sink.messages.length + (await drops()) === sent);
  t.ok((await drops()) > 0, `the kernel's drops are visible (${await drops()} of ${sent})`);
  t.ok(h.sink.messages.length > 0, 'what the buffer held was received');
});

each('a buffer past net.core.rmem_max: forced by the batched reader as root, else capped; reported as granted', async (t, udpReader) => {
  const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
  const asked = 4 * rmemMax;
  const h = await startHarness({ udpReader, udp: [{ host: '::1', port: 0 }], tcp: [], receiveBufferBytes: asked });
  t.teardown(() => h.receivers.close());
  const label = `{listen="[::1]:${h.at('udp', '::1').port}"}`;
  const buffer = (await metricValue(h.registry, `dockflow_receive_udp_buffer_bytes${label}`)) ?? 0;
  // Linux reports twice what it grants (the rest is its bookkeeping).
  if (bufferForced(udpReader)) t.ok(buffer >= asked, `SO_RCVBUFFORCE: ${buffer} bytes for ${asked} asked, rmem_max ${rmemMax}`);
  else t.ok(buffer > 0 && buffer <= 2 * rmemMax, `capped by net.core.rmem_max (${buffer} bytes for ${asked} asked)`);
});

/**
 * Sends `count` datagrams from another process that stops this one (SIGSTOP) first and lets it go on (SIGCONT) once
 * they are all sent: nothing here reads the socket meanwhile, whatever the machine's load. The sender resumes this
 * process however it ends (exit, a signal, its own 5 s limit), and a detached watchdog does so after 10 s even if the
 * sender is killed outright, so a failure cannot leave the test stopped.
 */
async function sendWhileStopped(to: BoundAddress, count: number): Promise<void> {
  const code = `
    const { readFileSync } = require('node:fs');
    const { spawn } = require('node:child_process');
    const parent = process.ppid;
    spawn('sh', ['-c', 'sleep 10; kill -CONT ' + parent], { detached: true, stdio: 'ignore' }).unref();
    process.on('exit', () => process.kill(parent, 'SIGCONT'));
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => process.exit(1));
    setTimeout(() => process.exit(1), 5000).unref();
    process.kill(parent, 'SIGSTOP');
    const deadline = Date.now() + 2000;
    while (!/^[Tt]/.test(readFileSync('/proc/' + parent + '/stat', 'utf8').split(') ')[1]) && Date.now() < deadline);
    const s = require('node:dgram').createSocket('udp4');
    let left = ${count};
    for (let i = 0; i < ${count}; i++) s.send(Buffer.alloc(400, 0x61), ${to.port}, '${to.address}', () => --left === 0 && s.close());`;
  const child = spawn(process.execPath, ['-e', code], { stdio: 'inherit' });
  await once(child, 'exit');
}

/** A sink that takes `costUs` of CPU per message: an ingest thread slower than the sender. */
class SlowSink extends CollectingSink {
  constructor(private readonly costUs: number) {
    super();
  }
  override accept(message: string, meta: MessageMeta): boolean {
    const until = performance.now() + this.costUs / 1000;
    while (performance.now() < until);
    return super.accept(message, meta);
  }
}

/**
 * Sends `count` numbered datagrams (`seq=<n> …`, 300 bytes) from another process at `rate` per second: a sender on
 * another host, as far as this machine's two cores allow (a full-speed sender and a busy ingest thread would leave the
 * receive thread no core).
 */
function burst(to: BoundAddress, count: number, rate: number, from = 0): Promise<void> {
  const code = `
    const s = require('node:dgram').createSocket('udp4');
    const pad = 'x'.repeat(280);
    const start = Date.now();
    let i = ${from};
    (function next() {
      const due = Math.min(${from + count}, ${from} + Math.floor(((Date.now() - start) / 1000) * ${rate}) + 1);
      for (; i < due; i++) s.send('seq=' + i + ' ' + pad, ${to.port}, '${to.address}');
      if (i < ${from + count}) setTimeout(next, 1);
      else setTimeout(() => s.close(), 200);
    })();`;
  const child = spawn(process.execPath, ['-e', code], { stdio: 'inherit' });
  return once(child, 'exit').then(() => undefined);
}

const seqs = (messages: string[]): number[] => messages.map((m) => Number(/^seq=(\d+)/.exec(m)?.[1]));

async function slowReceivers(t: Test, sink: MessageSink, dir: string | undefined, udpReader: UdpReader): Promise<{ receivers: Receivers; registry: Registry; to: BoundAddress }> {
  const registry = new Registry();
  const receivers = await startReceivers(
    // 64 KiB of memory: the burst can only survive on disk. The kernel buffer is asked big enough for the whole burst:
    // where it is granted (the batched reader as root forces it), no scheduling of the receive thread can make the
    // kernel drop; elsewhere net.core.rmem_max caps it, and what the kernel drops is counted.
    { ...TEST_OPTIONS, udpReader, udp: [{ host: '127.0.0.1', port: 0 }], tcp: [], receiveBufferBytes: 64 * 1024 * 1024, udpBacklogMemoryBytes: 64 * 1024, udpBacklogDir: dir, udpBacklogDiskBytes: dir ? 1 << 30 : 0 },
    sink,
    { logger: pino({ level: 'silent' }), registry },
  );
  t.teardown(() => receivers.close());
  const to = receivers.addresses().find((a) => a.transport === 'udp')!;
  return { receivers, registry, to };
}

each('a burst faster than the ingest thread waits in the backlog, on disk, and arrives in order', async (t, udpReader) => {
  const dir = tempDir(t, 'udp-backlog');
  // 10,000 datagrams in one second to an ingest thread that takes 2,000 a second.
  const sink = new SlowSink(500);
  const { registry, to } = await slowReceivers(t, sink, dir, udpReader);
  const sent = 10_000;
  const sending = burst(to, sent, 10_000);
  const backlogBytes = async (): Promise<number> => (await metricValue(registry, 'dockflow_receive_udp_backlog_bytes')) ?? 0;
  await until(async () => (await backlogBytes()) > 64 * 1024);
  t.pass('the backlog went past memory, to disk');
  await sending;
  const kernelDrops = async (): Promise<number> => (await metricValue(registry, `dockflow_receive_udp_kernel_drops{listen="127.0.0.1:${to.port}"}`)) ?? 0;
  await until(async () => sink.messages.length + (await kernelDrops()) === sent);
  const got = seqs(sink.messages);
  t.ok(
    got.every((n, i) => i === 0 || n > got[i - 1]!),
    'in the order sent',
  );
  // How many the kernel drops from a capped buffer depends on how long this machine's load keeps the receive thread
  // off a core, so only the forced buffer can promise none; either way every datagram is received or counted (above).
  if (bufferForced(udpReader)) t.equal(sink.messages.length, sent, 'every datagram received: the forced buffer held the burst');
  else t.comment(`${sink.messages.length} of ${sent} received, ${await kernelDrops()} dropped by the kernel from a capped buffer`);
  t.equal(await backlogBytes(), 0, 'the backlog is empty again');
  t.equal(await metricValue(registry, 'dockflow_receive_dropped_total{transport="udp",reason="backlog-full"}'), 0);
});

each('closing with a backlog keeps it on disk; the next start hands it on first, nothing twice', async (t, udpReader) => {
  const dir = tempDir(t, 'udp-backlog');
  const first = new SlowSink(500);
  const a = await slowReceivers(t, first, dir, udpReader);
  const sent = 10_000;
  await burst(a.to, sent, 10_000);
  const kernelDrops = (await metricValue(a.registry, `dockflow_receive_udp_kernel_drops{listen="127.0.0.1:${a.to.port}"}`)) ?? 0;
  await a.receivers.close();
  t.ok(readdirSync(dir).some((f) => f.endsWith('.udp')), `the rest is on disk (${first.messages.length} handed on before the close)`);

  const second = new CollectingSink();
  const b = await slowReceivers(t, second, dir, udpReader);
  await burst(b.to, 100, 10_000, sent);
  await until(() => second.messages.some((m) => m.startsWith(`seq=${sent + 99} `)));
  const all = [...seqs(first.messages), ...seqs(second.messages)];
  t.equal(new Set(all).size, all.length, 'nothing twice');
  t.ok(
    all.every((n, i) => i === 0 || n > all[i - 1]!),
    'the kept backlog comes before what the new start receives',
  );
  t.ok(all.length >= sent - kernelDrops, `${all.length} of ${sent + 100} handed on, ${kernelDrops} dropped by the kernel in the first run`);
  t.same(readdirSync(dir).filter((f) => f.endsWith('.udp')), [], 'the disk backlog is consumed');
});

each('with no disk, a full memory backlog drops datagrams and counts them', async (t, udpReader) => {
  const sink = new SlowSink(500);
  const { registry, to } = await slowReceivers(t, sink, undefined, udpReader);
  await burst(to, 10_000, 10_000);
  const dropped = async (): Promise<number> => (await metricValue(registry, 'dockflow_receive_dropped_total{transport="udp",reason="backlog-full"}')) ?? 0;
  await until(async () => (await dropped()) > 0);
  t.pass(`${await dropped()} dropped for a full backlog, counted`);
});

/** The batched reader as root asks with SO_RCVBUFFORCE, past net.core.rmem_max. */
function bufferForced(udpReader: UdpReader): boolean {
  return udpReader === 'batch' && process.getuid?.() === 0;
}

/** A UDP receiver alone on 127.0.0.1, its thread reachable as the tests below need it. */
async function udpReceiverAlone(udpReader: UdpReader): Promise<{ receiver: UdpReceiver; sink: CollectingSink; registry: Registry; thread: () => Worker }> {
  const sink = new CollectingSink();
  const registry = new Registry();
  const ctx = { sink, logger: pino({ level: 'silent' }), metrics: new ReceiveMetrics(registry), allowlist: Allowlist.parse([]), maxMessageBytes: 8192 };
  const receiver = new UdpReceiver({ listen: [{ host: '127.0.0.1', port: 0 }], reader: udpReader, receiveBufferBytes: 1 << 20, backlogMemoryBytes: 1 << 20, backlogDir: undefined, backlogDiskBytes: 0 }, ctx);
  await receiver.listen();
  return { receiver, sink, registry, thread: () => (receiver as unknown as { worker: Worker }).worker };
}

each('a receive thread that stops unasked is replaced on the same port, and counted', async (t, udpReader) => {
  const { receiver, sink, registry, thread } = await udpReceiverAlone(udpReader);
  t.teardown(() => receiver.close());
  const [to] = receiver.addresses();
  await sendDatagrams(to!, [Buffer.from('before')]);
  await sink.waitFor(1);
  t.ok(receiver.running);

  // What a crash or an exhausted heap does to the thread, from the outside.
  await thread().terminate();
  t.notOk(receiver.running, 'down: the health check says so');
  await until(() => receiver.running);
  t.same(receiver.addresses(), [to], 'the same address and port');
  await sendDatagrams(to!, [Buffer.from('after')]);
  await sink.waitFor(2);
  t.same(sink.messages, ['before', 'after']);
  t.equal(await metricValue(registry, 'dockflow_receive_udp_thread_restarts_total'), 1);
});

each('closing while a replacement thread starts closes that one too', async (t, udpReader) => {
  const { receiver, thread } = await udpReceiverAlone(udpReader);
  const [to] = receiver.addresses();
  await thread().terminate();
  // The replacement starts 100 ms later: close meanwhile, then as it starts.
  await new Promise((resolve) => setTimeout(resolve, 120));
  await receiver.close();
  t.notOk(receiver.running);
  const s = dgram.createSocket('udp4');
  s.bind(to!.port, '127.0.0.1');
  await once(s, 'listening');
  t.pass('the port is free: no thread was left behind');
  s.close();
});
