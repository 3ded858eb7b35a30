import t from 'tap';
import { formatIPv6, parseIPv6 } from '../../src/net/ip.js';
import { communityId, communityIdV4 } from '../../src/parse/community-id.js';

// Published vectors: corelight/community-id-spec baseline/README.md (defaults and seed=1 tables) and
// corelight/pycommunityid tests/communityid_test.py.
const sip6 = 'fe80:0001:0203:0405:0607:0809:0A0B:0C0D';
const dip6 = 'fe80:1011:1213:1415:1617:1819:1A1B:1C1D';
type Vector = [string, number, string, number | undefined, string, number | undefined, number, string];
// [name, proto, src, sport|type, dst, dport|code, seed, id]; for ICMP the "ports" are type and code.
const vectors: Vector[] = [
  ['tcp out', 6, '1.2.3.4', 1122, '5.6.7.8', 3344, 0, '1:wCb3OG7yAFWelaUydu0D+125CLM='],
  ['tcp back', 6, '5.6.7.8', 3344, '1.2.3.4', 1122, 0, '1:wCb3OG7yAFWelaUydu0D+125CLM='],
  ['udp out', 17, '1.2.3.4', 1122, '5.6.7.8', 3344, 0, '1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg='],
  ['udp back', 17, '5.6.7.8', 3344, '1.2.3.4', 1122, 0, '1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg='],
  ['sctp out', 132, '1.2.3.4', 1122, '5.6.7.8', 3344, 0, '1:EKt4MsxuyaE6mL+hmrEkQ9csDD8='],
  ['icmp echo request', 1, '1.2.3.4', 8, '5.6.7.8', 0, 0, '1:crodRHL2FEsHjbv3UkRrfbs4bZ0='],
  ['icmp echo reply', 1, '5.6.7.8', 0, '1.2.3.4', 0, 0, '1:crodRHL2FEsHjbv3UkRrfbs4bZ0='],
  ['icmp one-way', 1, '1.2.3.4', 11, '5.6.7.8', 0, 0, '1:f/YiSyWqczrTgfUCZlBUnvHRcPk='],
  ['icmpv6 echo request', 58, sip6, 128, dip6, 0, 0, '1:0bf7hyMJUwt3fMED7z8LIfRpBeo='],
  ['icmpv6 echo reply', 58, dip6, 129, sip6, 0, 0, '1:0bf7hyMJUwt3fMED7z8LIfRpBeo='],
  ['icmpv6 one-way', 58, sip6, 146, dip6, 0, 0, '1:fYC8+pz24E+EhANP1EZhpX0Dw10='],
  ['rsvp v4', 46, '1.2.3.4', undefined, '5.6.7.8', undefined, 0, '1:ikv3kmf89luf73WPz1jOs49S768='],
  ['rsvp v4 back', 46, '5.6.7.8', undefined, '1.2.3.4', undefined, 0, '1:ikv3kmf89luf73WPz1jOs49S768='],
  ['rsvp v6', 46, sip6, undefined, dip6, undefined, 0, '1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0='],
  ['tcp seed 1', 6, '1.2.3.4', 1122, '5.6.7.8', 3344, 1, '1:HhA1B+6CoLbiKPEs5nhNYN4XWfk='],
  ['icmp seed 1', 1, '1.2.3.4', 8, '5.6.7.8', 0, 1, '1:9pr4ZGTICiuZoIh90RRYE2RyXpU='],
  ['icmpv6 seed 1', 58, sip6, 128, dip6, 0, 1, '1:IO27GQzPuCtNnwFvjWALMHu5tJE='],
  // pycommunityid
  ['tcp', 6, '128.232.110.120', 34855, '66.35.250.204', 80, 0, '1:LQU9qZlK+B5F3KDmev6m5PMibrg='],
  ['tcp low port', 6, '10.0.0.1', 10, '10.0.0.2', 11569, 0, '1:SXBGMX1lBOwhhoDrZynfROxnhnM='],
  ['udp dns', 17, '8.8.8.8', 53, '192.168.1.52', 54585, 0, '1:d/FP5EW3wiY1vCndhwleRRKHowQ='],
  ['icmp type 20 code 0', 1, '192.168.0.89', 20, '192.168.0.1', 0, 0, '1:3o2RFccXzUgjl7zDpqmY7yJi8rI='],
  ['icmp type 20 code 1', 1, '192.168.0.89', 20, '192.168.0.1', 1, 0, '1:tz/fHIDUHs19NkixVVoOZywde+I='],
  ['icmp reply ignores code', 1, '192.168.0.1', 0, '192.168.0.89', 20, 0, '1:X0snYXpgwiv9TZtqg64sgzUn6Dk='],
  ['icmpv6 NS', 58, 'fe80::200:86ff:fe05:80da', 135, 'fe80::260:97ff:fe07:69ea', 0, 0, '1:dGHyGvjMfljg6Bppwm3bg0LO8TY='],
  ['icmpv6 NA', 58, 'fe80::260:97ff:fe07:69ea', 136, 'fe80::200:86ff:fe05:80da', 0, 0, '1:dGHyGvjMfljg6Bppwm3bg0LO8TY='],
  ['icmpv6 time exceeded', 58, '3ffe:507:0:1:260:97ff:fe07:69ea', 3, '3ffe:507:0:1:200:86ff:fe05:80da', 0, 0, '1:NdobDX8PQNJbAyfkWxhtL2Pqp5w='],
  ['icmpv6 time exceeded other way', 58, '3ffe:507:0:1:200:86ff:fe05:80da', 3, '3ffe:507:0:1:260:97ff:fe07:69ea', 0, 0, '1:/OGBt9BN1ofenrmSPWYicpij2Vc='],
  // baseline/baseline_deflt.json (from pcaps/combined.pcap.gz)
  ['ipv6 tcp', 6, '2001:470:e5bf:dead:4957:2174:e82c:4887', 63943, '2607:f8b0:400c:c03::1a', 25, 0, '1:/qFaeAR+gFe1KYjMzVDsMv+wgU4='],
  ['ipv6 tcp back', 6, '2607:f8b0:400c:c03::1a', 25, '2001:470:e5bf:dead:4957:2174:e82c:4887', 63943, 0, '1:/qFaeAR+gFe1KYjMzVDsMv+wgU4='],
  ['icmpv6 router solicitation', 58, 'fe80::200:86ff:fe05:80da', 133, 'ff02::2', 134, 0, '1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0='],
  ['icmp v4 echo pcap', 1, '192.168.0.89', 8, '192.168.0.1', 0, 0, '1:X0snYXpgwiv9TZtqg64sgzUn6Dk='],
];

t.test('published vectors', async (t) => {
  for (const [name, proto, src, sp, dst, dp, seed, id] of vectors) {
    const icmp = proto === 1 || proto === 58;
    const got = icmp
      ? communityId(proto, src, undefined, dst, undefined, sp, dp, seed)
      : communityId(proto, src, sp, dst, dp, undefined, undefined, seed);
    t.equal(got, id, name);
  }
});

t.test('communityIdV4 agrees with the string form', async (t) => {
  const u32 = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
  for (const [name, proto, src, sp, dst, dp, seed, id] of vectors) {
    if (src.includes(':')) continue;
    const icmp = proto === 1;
    const got = icmp
      ? communityIdV4(proto, u32(src), undefined, u32(dst), undefined, sp, dp, seed)
      : communityIdV4(proto, u32(src), sp, u32(dst), dp, undefined, undefined, seed);
    t.equal(got, id, name);
  }
  t.equal(communityIdV4(6, 0xffffffff, 1, 0, 2), communityId(6, '255.255.255.255', 1, '0.0.0.0', 2));
});

t.test('undefined when the tuple is incomplete or unparsable', async (t) => {
  t.equal(communityId(6, '1.2.3.4', undefined, '5.6.7.8', 80), undefined, 'tcp without a port');
  t.equal(communityId(17, '1.2.3.4', 53, '5.6.7.8', undefined), undefined, 'udp without a port');
  t.equal(communityId(1, '1.2.3.4', undefined, '5.6.7.8', undefined), undefined, 'icmp without a type');
  t.equal(communityId(6, '1.2.3.4', 1, '::1', 2), undefined, 'mixed families');
  t.equal(communityId(6, 'example.org', 1, '5.6.7.8', 2), undefined, 'not an address');
  t.equal(communityId(6, '1.2.3.256', 1, '5.6.7.8', 2), undefined, 'octet out of range');
  t.equal(communityId(6, '1::2::3', 1, '::1', 2), undefined, 'two gaps');
});

t.test('IPv6 parsing and RFC 5952 formatting', async (t) => {
  const cases: [string, string | undefined][] = [
    ['fd00:0017:0000:0000:0000:0000:0000:0002', 'fd00:17::2'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['0000:0000:0000:0000:0000:0000:0000:0000', '::'],
    ['0000:0000:0000:0000:0000:0000:0000:0001', '::1'],
    ['fe80:0000:0000:0000:0084:88ff:feae:790a', 'fe80::84:88ff:feae:790a'],
    ['2001:0db8:0000:0001:0000:0000:0000:0001', '2001:db8:0:1::1'], // longest run wins
    ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'], // first of equal runs
    ['2001:0db8:0001:0001:0001:0000:0001:0001', '2001:db8:1:1:1:0:1:1'], // a lone zero stays
    ['0000:0000:0000:0000:0000:ffff:c633:6402', '::ffff:198.51.100.2'],
    ['::ffff:198.51.100.2', '::ffff:198.51.100.2'],
    ['2001:db8::', '2001:db8::'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:2:3:4:5:6:7:8:9', undefined],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'], // a dotted tail takes the last two groups
    ['1:2:3:4:5:6:7:1.2.3.4', undefined],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['1:2:3:4:5:6:7:8::', undefined],
    ['1::', '1::'],
    ['::', '::'],
    ['1:2:3', undefined],
    ['12345::1', undefined],
    [':1::2', undefined],
    ['1::2:', undefined],
    ['', undefined],
    ['g::1', undefined],
  ];
  const buf = new Uint16Array(8);
  for (const [input, want] of cases) {
    const ok = parseIPv6(input, 0, input.length, buf, 0);
    t.equal(ok ? formatIPv6(buf, 0) : undefined, want, input);
  }
});
