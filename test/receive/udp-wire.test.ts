import t from 'tap';
import { forEachDatagram, writeDatagram } from '../../src/receive/udp-wire.js';

// Runs of one sender (where the reader reuses the address string), senders alternating, address lengths that differ
// by one, and the address forms Node prints: IPv4, IPv6, IPv4-mapped and scoped.
const datagrams: Array<{ from: string; bytes: Buffer; receivedAtMs: number }> = [
  { from: '127.0.0.1', bytes: Buffer.from('<4>kernel: IN=docker0 OUT=eth0 SRC=172.17.0.4 DST=1.1.1.1\n'), receivedAtMs: 1_795_000_000_123 },
  { from: '127.0.0.1', bytes: Buffer.from('<4>second from the same sender'), receivedAtMs: 1_795_000_000_124 },
  { from: '127.0.0.11', bytes: Buffer.from('<4>a longer address, same prefix'), receivedAtMs: 1_795_000_000_125 },
  { from: '127.0.0.2', bytes: Buffer.from('<4>same length as the first, other bytes'), receivedAtMs: 1_795_000_000_126 },
  { from: '127.0.0.1', bytes: Buffer.alloc(0), receivedAtMs: 1_795_000_000_127 },
  { from: '::ffff:10.0.0.7', bytes: Buffer.from([0, 1, 2, 0xff, 0xfe, 10, 13]), receivedAtMs: 1.5 },
  { from: 'fe80::1%eth0', bytes: Buffer.from('é ünïcode'), receivedAtMs: 0 },
  { from: '2001:db8::42', bytes: Buffer.alloc(65_507, 0x61), receivedAtMs: 2 },
];

t.test('datagrams come back out of a chunk as they went in, with their sender and time', async (t) => {
  const chunk = Buffer.alloc(200_000);
  let used = 0;
  for (const d of datagrams) used = writeDatagram(chunk, used, d.bytes, d.from, d.receivedAtMs);
  const out: typeof datagrams = [];
  forEachDatagram(chunk.subarray(0, used), (start, end, from, receivedAtMs) => out.push({ from, bytes: Buffer.from(chunk.subarray(start, end)), receivedAtMs }));
  t.equal(out.length, datagrams.length);
  for (const [i, d] of datagrams.entries()) {
    t.equal(out[i]?.from, d.from, `sender of #${i}`);
    t.equal(out[i]?.receivedAtMs, d.receivedAtMs, `time of #${i}`);
    t.ok(out[i]?.bytes.equals(d.bytes), `bytes of #${i}`);
  }
});
