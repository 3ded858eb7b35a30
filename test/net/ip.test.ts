import { BlockList, isIP } from 'node:net';
import t from 'tap';
import {
  canonicalIp,
  ipFromSortable,
  isLoopbackIp,
  parseCidr,
  rangeContains,
  sortableIp,
  unmapIPv4,
} from '../../src/net/ip.js';

// address → canonical text, sortable form (undefined: not an address)
const ADDRESSES: Array<[string, string | undefined, string | undefined]> = [
  ['0.0.0.0', '0.0.0.0', '400000000'],
  ['8.8.8.8', '8.8.8.8', '408080808'],
  ['172.17.0.2', '172.17.0.2', '4ac110002'],
  ['255.255.255.255', '255.255.255.255', '4ffffffff'],
  ['::', '::', `6${'0'.repeat(32)}`],
  ['::1', '::1', `6${'0'.repeat(31)}1`],
  ['2001:db8::2', '2001:db8::2', '620010db8000000000000000000000002'],
  ['2001:0DB8:0000:0000:0000:0000:0000:0002', '2001:db8::2', '620010db8000000000000000000000002'],
  ['fd00:0017:0000:0000:0000:0000:0000:0002', 'fd00:17::2', '6fd000017000000000000000000000002'],
  ['::ffff:198.51.100.2', '::ffff:198.51.100.2', '600000000000000000000ffffc6336402'],
  ['1:0:0:1:0:0:0:1', '1:0:0:1::1', '600010000000000010000000000000001'],
  ['1.2.3', undefined, undefined],
  ['1.2.3.256', undefined, undefined],
  ['1.2.3.4.5', undefined, undefined],
  ['1234.1.1.1', undefined, undefined],
  ['fe80::1%eth0', undefined, undefined],
  ['1::2::3', undefined, undefined],
  ['12345::', undefined, undefined],
  ['1:2:3:4:5:6:7:8:9', undefined, undefined],
  ['host.example', undefined, undefined],
  ['', undefined, undefined],
];

t.test('canonical text and sortable form of each address, and back', async (t) => {
  for (const [input, canonical, sortable] of ADDRESSES) {
    t.equal(canonicalIp(input), canonical, `canonical ${input}`);
    t.equal(sortableIp(input), sortable, `sortable ${input}`);
    if (sortable !== undefined) t.equal(ipFromSortable(sortable), canonical, `back from ${sortable}`);
  }
  for (const bad of ['', '4', '5000000000', '40808080', '4080808080', '4zzzzzzzz', `6${'0'.repeat(31)}`]) t.equal(ipFromSortable(bad), undefined, `not sortable: ${bad}`);
});

t.test('the sortable order is the numeric order within a family', async (t) => {
  const v4 = ['0.0.0.0', '0.0.0.255', '0.0.1.0', '9.255.255.255', '10.0.0.0', '100.0.0.0', '255.255.255.255'];
  const v6 = ['::', '::1', '::ffff:0.0.0.1', '1::', '2001:db8::', '2001:db8::ffff', 'fe80::', 'ffff::'];
  for (const list of [v4, v6]) {
    const sorted = [...list].sort((a, b) => (sortableIp(a)! < sortableIp(b)! ? -1 : 1));
    t.same(sorted, list);
  }
});

// CIDR → first, last (sortable) and exact
const CIDRS: Array<[string, { first: string; last: string; prefixLength: number; exact?: string } | undefined]> = [
  ['10.0.0.0/8', { first: '40a000000', last: '40affffff', prefixLength: 8 }],
  ['10.1.2.3/8', { first: '40a000000', last: '40affffff', prefixLength: 8 }],
  ['0.0.0.0/0', { first: '400000000', last: '4ffffffff', prefixLength: 0 }],
  ['8.8.0.0/16', { first: '408080000', last: '40808ffff', prefixLength: 16 }],
  ['192.168.1.77/31', { first: '4c0a8014c', last: '4c0a8014d', prefixLength: 31 }],
  ['203.0.113.7', { first: '4cb007107', last: '4cb007107', prefixLength: 32, exact: '203.0.113.7' }],
  ['203.0.113.7/32', { first: '4cb007107', last: '4cb007107', prefixLength: 32, exact: '203.0.113.7' }],
  ['2001:db8::/32', { first: '620010db8000000000000000000000000', last: '620010db8ffffffffffffffffffffffff', prefixLength: 32 }],
  ['fd00:17::/71', { first: '6fd000017000000000000000000000000', last: '6fd0000170000000001ffffffffffffff', prefixLength: 71 }],
  ['::/0', { first: `6${'0'.repeat(32)}`, last: `6${'f'.repeat(32)}`, prefixLength: 0 }],
  ['2001:DB8::2/128', { first: '620010db8000000000000000000000002', last: '620010db8000000000000000000000002', prefixLength: 128, exact: '2001:db8::2' }],
  ['1.2.3', undefined],
  ['1.2.3.4/33', undefined],
  ['::1/129', undefined],
  ['fe80::1%eth0', undefined],
  ['host.example', undefined],
  ['1.2.3.4/', undefined],
  ['1.2.3.4/a', undefined],
  ['1.2.3.4/-1', undefined],
  ['1.2.3.4/8/8', undefined],
  ['1.2.3.4/0008', undefined],
];

t.test('CIDR → range of sortable forms', async (t) => {
  for (const [text, want] of CIDRS) {
    const r = parseCidr(text);
    if (want === undefined) {
      t.equal(r, undefined, `rejects ${text}`);
      continue;
    }
    t.match(r, { ...want, version: want.first.startsWith('4') ? 4 : 6 }, text);
    if (want.exact === undefined) t.equal(r?.exact, undefined, `${text} is not one host`);
  }
});

t.test('rangeContains agrees with node:net BlockList (same family) over a grid of addresses', async (t) => {
  const cidrs = ['10.0.0.0/8', '10.128.0.0/9', '172.16.0.0/12', '0.0.0.0/0', '1.2.3.4/32', '2001:db8::/32', 'fd00::/8', '::/0', '2001:db8:1::/48', 'fe80::/10'];
  const addresses = ['10.0.0.0', '10.255.255.255', '11.0.0.0', '9.255.255.255', '10.128.0.1', '172.31.255.255', '172.32.0.0', '1.2.3.4', '1.2.3.5',
    '2001:db8::', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', '2001:db9::', '2001:db8:1::1', '2001:db8:2::1', 'fd12::1', 'fe80::1', 'febf::1', 'fec0::1', '::1'];
  for (const cidr of cidrs) {
    const r = parseCidr(cidr)!;
    const [net, bits] = cidr.split('/');
    const bl = new BlockList();
    bl.addSubnet(net!, Number(bits), isIP(net!) === 4 ? 'ipv4' : 'ipv6');
    for (const a of addresses) {
      const family = isIP(a);
      const want = family === (r.version === 4 ? 4 : 6) && bl.check(a, family === 4 ? 'ipv4' : 'ipv6');
      t.equal(rangeContains(r, a), want, `${cidr} contains ${a}`);
    }
  }
  t.notOk(rangeContains(parseCidr('0.0.0.0/0')!, undefined), 'no address');
  t.notOk(rangeContains(parseCidr('0.0.0.0/0')!, 'junk'), 'not an address');
  t.notOk(rangeContains(parseCidr('0.0.0.0/0')!, '::ffff:1.2.3.4'), 'a mapped address is IPv6');
});

t.test('unmapIPv4 and isLoopbackIp', async (t) => {
  const unmap: Array<[string, string]> = [
    ['::ffff:127.0.0.1', '127.0.0.1'],
    ['::FFFF:127.0.0.1', '::FFFF:127.0.0.1'],
    ['::ffff:7f00:1', '::ffff:7f00:1'],
    ['::ffff:', '::ffff:'],
    ['::ffff:1.2.3', '::ffff:1.2.3'],
    ['127.0.0.1', '127.0.0.1'],
    ['::1', '::1'],
  ];
  for (const [input, want] of unmap) t.equal(unmapIPv4(input), want, `unmap ${input}`);
  const loopback: Array<[string, boolean]> = [
    ['127.0.0.1', true],
    ['127.255.255.254', true],
    ['::ffff:127.0.0.1', true],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['128.0.0.1', false],
    ['::2', false],
    ['10.0.0.1', false],
    ['localhost', false],
    ['', false],
  ];
  for (const [input, want] of loopback) t.equal(isLoopbackIp(input), want, `loopback ${input}`);
});
