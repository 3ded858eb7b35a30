import t from 'tap';
import { unmapIPv4 } from '../../src/net/ip.js';
import { Allowlist } from '../../src/receive/allowlist.js';
import { DockflowError, ErrorCode } from '../../src/errors.js';

const cases: Array<{ allow: string[]; yes: string[]; no: string[] }> = [
  { allow: [], yes: ['127.0.0.1', '::1', '203.0.113.9', '::ffff:10.0.0.1'], no: [] },
  { allow: ['10.0.0.0/8'], yes: ['10.1.2.3', '::ffff:10.1.2.3'], no: ['11.0.0.1', '::1', '::ffff:11.0.0.1', 'not-an-ip', ''] },
  { allow: ['127.0.0.1'], yes: ['127.0.0.1'], no: ['127.0.0.2', '::1'] },
  { allow: ['fd00::/8', '::1'], yes: ['fd00:17::2', 'fd00:0017:0000:0000:0000:0000:0000:0002', '::1'], no: ['fe80::1', '127.0.0.1', '::2'] },
  { allow: ['::ffff:192.0.2.0/120'], yes: ['192.0.2.77', '::ffff:192.0.2.77'], no: ['192.0.3.1'] },
  { allow: ['0.0.0.0/0'], yes: ['198.51.100.2', '::ffff:198.51.100.2'], no: ['2001:db8::2'] },
];

t.test('allows exactly the listed senders, IPv4-mapped peers matched against IPv4 ranges and back', async (t) => {
  for (const c of cases) {
    const list = Allowlist.parse(c.allow);
    for (const a of c.yes) t.ok(list.allows(a), `[${c.allow.join(', ')}] allows ${a}`);
    for (const a of c.no) t.notOk(list.allows(a), `[${c.allow.join(', ')}] refuses ${a || '(empty)'}`);
  }
});

t.test('bad entries are configuration errors', async (t) => {
  for (const bad of ['10.0.0.0/33', '::1/129', '10.0.0/8', 'example.com', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', '']) {
    t.throws(() => Allowlist.parse([bad]), new DockflowError(ErrorCode.CONFIG_INVALID, `allowlist entry "${bad}" is not an IPv4 or IPv6 CIDR`), bad);
  }
});

t.test('unmapIPv4', async (t) => {
  const table: Array<[string, string]> = [
    ['::ffff:127.0.0.1', '127.0.0.1'],
    ['::FFFF:127.0.0.1', '::FFFF:127.0.0.1'],
    ['::ffff:7f00:1', '::ffff:7f00:1'],
    ['::ffff:', '::ffff:'],
    ['127.0.0.1', '127.0.0.1'],
    ['::1', '::1'],
  ];
  for (const [input, want] of table) t.equal(unmapIPv4(input), want, input);
});
