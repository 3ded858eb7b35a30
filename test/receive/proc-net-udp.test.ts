import t from 'tap';
import { readFileSync } from 'node:fs';
import { parseUdpDrops, readUdpDrops, type UdpSocketId } from '../../src/receive/proc-net-udp.js';
import { fixture } from '../helpers/paths.js';

// Captured on this machine with sockets bound to 127.0.0.1:5514 and ::1:5514 (each flooded through a tiny receive
// buffer), 0.0.0.0:5515 and [::]:5516.
const udp = readFileSync(fixture('receive', 'proc-net-udp.txt'), 'utf8');
const udp6 = readFileSync(fixture('receive', 'proc-net-udp6.txt'), 'utf8');

const cases: Array<[UdpSocketId, number | undefined]> = [
  [{ family: 4, address: '127.0.0.1', port: 5514 }, 199],
  [{ family: 4, address: '0.0.0.0', port: 5515 }, 0],
  [{ family: 4, address: '127.0.0.1', port: 5515 }, undefined],
  [{ family: 4, address: '127.0.0.1', port: 5516 }, undefined],
  [{ family: 6, address: '::1', port: 5514 }, 99],
  [{ family: 6, address: '0:0:0:0:0:0:0:1', port: 5514 }, 99],
  [{ family: 6, address: '::', port: 5516 }, 0],
  [{ family: 6, address: '::', port: 5514 }, undefined],
];

t.test('drops column of the line with the socket’s local address and port', async (t) => {
  for (const [id, drops] of cases) {
    t.equal(parseUdpDrops(id.family === 4 ? udp : udp6, id, true), drops, `${id.address} ${id.port}`);
  }
});

t.test('words are read in host byte order', async (t) => {
  t.equal(parseUdpDrops(udp, { family: 4, address: '1.0.0.127', port: 5514 }, false), 199);
  t.equal(parseUdpDrops(udp, { family: 4, address: '127.0.0.1', port: 5514 }, false), undefined);
});

t.test('junk and empty text match nothing', async (t) => {
  for (const text of ['', 'garbage\n', '  sl  local_address\n 1: zz:zz\n']) {
    t.equal(parseUdpDrops(text, { family: 4, address: '127.0.0.1', port: 5514 }), undefined);
  }
});

t.test('reads the files named by family from a proc directory', async (t) => {
  const dir = t.testdir({ udp, udp6 });
  t.equal(await readUdpDrops(dir, { family: 4, address: '127.0.0.1', port: 5514 }), 199);
  t.equal(await readUdpDrops(dir, { family: 6, address: '::1', port: 5514 }), 99);
  await t.rejects(readUdpDrops(t.testdir({}), { family: 4, address: '127.0.0.1', port: 5514 }));
});
