import t from 'tap';
import { classifyAddress, parseIPv4, parseIPv6 } from '../../src/enrich/address-class.js';

// Each row: address → class (undefined = ordinary global address, looked up). Edges of every range included.
const cases: Array<[string, string | undefined]> = [
  // IPv4
  ['8.8.8.8', undefined],
  ['81.2.69.160', undefined],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'this-network'],
  ['10.0.0.0', 'private'],
  ['10.255.255.255', 'private'],
  ['11.0.0.0', undefined],
  ['100.63.255.255', undefined],
  ['100.64.0.1', 'cgnat'],
  ['100.127.255.255', 'cgnat'],
  ['100.128.0.0', undefined],
  ['127.0.0.1', 'loopback'],
  ['169.254.169.254', 'link-local'],
  ['169.255.0.1', undefined],
  ['172.15.255.255', undefined],
  ['172.16.0.0', 'private'],
  ['172.17.0.2', 'private'], // docker0 container, as in the corpus
  ['172.31.255.255', 'private'],
  ['172.32.0.0', undefined],
  ['192.0.0.8', 'ietf-protocol'],
  ['192.0.1.1', undefined],
  ['192.0.2.1', 'documentation'],
  ['192.88.99.1', undefined],
  ['192.168.0.1', 'private'],
  ['198.17.255.255', undefined],
  ['198.18.0.0', 'benchmarking'],
  ['198.19.255.255', 'benchmarking'],
  ['198.20.0.0', undefined],
  ['198.51.100.2', 'documentation'], // the corpus's "internet"
  ['203.0.113.255', 'documentation'],
  ['203.0.114.0', undefined],
  ['223.255.255.255', undefined],
  ['224.0.0.251', 'multicast'],
  ['239.255.255.255', 'multicast'],
  ['240.0.0.1', 'reserved'],
  ['255.255.255.254', 'reserved'],
  ['255.255.255.255', 'broadcast'],
  // IPv6, compressed and as the kernel prints them (fully expanded)
  ['::', 'unspecified'],
  ['0000:0000:0000:0000:0000:0000:0000:0000', 'unspecified'],
  ['::1', 'loopback'],
  ['::2', 'reserved'],
  ['::ffff:8.8.8.8', 'ipv4-mapped'],
  ['0000:0000:0000:0000:0000:ffff:0808:0808', 'ipv4-mapped'],
  ['64:ff9b::8.8.8.8', 'nat64'],
  ['64:ff9b:1::1', 'nat64'],
  ['100::1', 'discard'],
  ['100:0:0:1::1', 'reserved'],
  ['2001::1', 'teredo'],
  ['2001:0:ffff::1', 'teredo'],
  ['2001:2::1', 'benchmarking'],
  ['2001:2:1::1', 'ietf-protocol'],
  ['2001:3::1', undefined],
  ['2001:4:112::1', undefined],
  ['2001:20::1', 'ietf-protocol'],
  ['2001:1ff:ffff::1', 'ietf-protocol'],
  ['2001:200::1', undefined],
  ['2001:218::1', undefined],
  ['2001:db8::2', 'documentation'],
  ['2001:0db8:0000:0000:0000:0000:0000:0002', 'documentation'],
  ['2001:db9::1', undefined],
  ['2002:c000:204::1', '6to4'],
  ['2606:4700:4700::1111', undefined],
  ['3fff::1', 'documentation'],
  ['3fff:0fff::1', 'documentation'],
  ['3fff:1000::1', undefined],
  ['4000::1', 'reserved'],
  ['fc00::1', 'unique-local'],
  ['fd00:0017:0000:0000:0000:0000:0000:0002', 'unique-local'], // docker0 IPv6 in the corpus
  ['fe80::1', 'link-local'],
  ['fe80::1%eth0', 'link-local'],
  ['febf:ffff::1', 'link-local'],
  ['fec0::1', 'site-local'],
  ['ff02::1', 'multicast'],
  ['FF02::1', 'multicast'],
  // not addresses
  ['', 'invalid'],
  ['1.2.3', 'invalid'],
  ['1.2.3.4.5', 'invalid'],
  ['256.1.1.1', 'invalid'],
  ['1..2.3', 'invalid'],
  ['1.2.3.4 ', 'invalid'],
  ['02:42:ac:11:00:03', 'invalid'], // a MAC where an IP was expected
  ['1:2:3:4:5:6:7', 'invalid'],
  ['1:2:3:4:5:6:7:8:9', 'invalid'],
  ['1::2::3', 'invalid'],
  [':1', 'invalid'],
  ['1:', 'invalid'],
  ['12345::1', 'invalid'],
  ['g::1', 'invalid'],
  ['::ffff:1.2.3.256', 'invalid'],
];

t.test('classifies special-purpose ranges (IANA registries) and leaves global addresses alone', async (t) => {
  for (const [ip, want] of cases) t.equal(classifyAddress(ip), want, JSON.stringify(ip));
});

t.test('parsers agree with the textual forms', async (t) => {
  t.equal(parseIPv4('81.2.69.160'), 0x510245a0);
  t.equal(parseIPv4('255.255.255.255'), 0xffffffff);
  t.equal(parseIPv4('1.2.3.-4'), -1);
  const words = (s: string): string[] | undefined => {
    const w = parseIPv6(s);
    return w && Array.from(w, (x) => x.toString(16));
  };
  const rows: Array<[string, string[] | undefined]> = [
    ['2606:4700:4700::1111', ['26064700', '47000000', '0', '1111']],
    ['2606:4700:4700:0000:0000:0000:0000:1111', ['26064700', '47000000', '0', '1111']],
    ['::ffff:1.2.3.4', ['0', '0', 'ffff', '1020304']],
    ['1::', ['10000', '0', '0', '0']],
    ['::', ['0', '0', '0', '0']],
    ['1:2:3:4:5:6:7::', ['10002', '30004', '50006', '70000']],
    ['1:2:3:4:5:6:1.2.3.4', ['10002', '30004', '50006', '1020304']],
    ['1:2:3:4:5:6:7:1.2.3.4', undefined],
    ['1:2:3:4:5:6:7:8::', undefined],
  ];
  for (const [s, want] of rows) t.same(words(s), want, s);
});
