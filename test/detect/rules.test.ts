import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { compileCondition } from '../../src/detect/condition.js';
import { ipv4ToNumber, ipv6ToWords, parseCidr, rangeMatcher } from '../../src/detect/ip.js';
import { loadRules, parseDuration } from '../../src/detect/rules.js';
import { tempDir } from '../helpers/temp.js';
import { MAIL, record, WEB } from './lines.js';

const T0 = Date.parse('2026-12-01T10:00:00Z');
const smtp = record({ kind: 'egressTcp', timeMs: T0, dst: '198.51.100.2', dpt: 25 }, WEB);
const dns = record({ kind: 'egressUdp', timeMs: T0, dst: '10.1.2.3', dpt: 53 }, MAIL);
const ingress22 = record({ kind: 'ingressTcp', timeMs: T0, src: '203.0.113.7', dpt: 22 }, WEB);
const unattributed = record({ kind: 'egressTcp', timeMs: T0, dst: '198.51.100.2', dpt: 443 });
const scope = { lists: new Map([['smtp', ['25', '465', '587']], ['nets', ['10.0.0.0/8', '198.51.100.0/24']]]), macros: new Map([['egress', 'network.direction = egress']]) };

t.test('conditions compile and match record fields', async (t) => {
  const cases: [string, typeof smtp, boolean][] = [
    ['network.direction = egress', smtp, true],
    ['network.direction = egress', ingress22, false],
    ['egress and destination.port in (smtp)', smtp, true],
    ['egress and destination.port in (smtp)', dns, false],
    ['destination.port in (20-30)', smtp, true],
    ['destination.port not in (20-30, 53)', dns, false],
    ['destination.port > 24 and destination.port <= 25', smtp, true],
    ['destination.port >= 26 or source.port < 1024', smtp, false],
    ['destination.ip in (nets)', smtp, true],
    ['destination.ip = 198.51.100.0/25', smtp, true],
    ['destination.ip = 198.51.100.128/25', smtp, false],
    ['destination.ip != 10.0.0.0/8', dns, false],
    ['remote.ip = 203.0.113.7 and local.port = 22', ingress22, true],
    ['network.transport = udp and network.new_connection = true', dns, true],
    ['container.name = shop-web-1', smtp, true],
    ["container.name = 'shop-web-1'", smtp, true],
    ['container.name startswith shop- and container.image.name endswith :1.27', smtp, true],
    ['container.name contains mail', dns, true],
    ['container.service = web', smtp, true],
    ['container.labels.com.docker.compose.project = shop', smtp, true],
    ['container.labels.dockflow.role = mail', dns, true],
    ['container.labels.dockflow.role exists', smtp, false],
    ['container.attributed = true', unattributed, false],
    ['container.name exists', unattributed, false],
    ['container.name != x', unattributed, true],
    ['container.port_published = false', ingress22, true],
    ['not (egress or network.direction = ingress)', smtp, false],
    ['not egress and not network.direction = egress', ingress22, true],
    ['log.prefix = dockflow: and host.name = dockerhost', smtp, true],
    ['destination.port in ()', smtp, false],
  ];
  for (const [cond, r, want] of cases) t.equal(compileCondition(cond, scope)(r), want, cond);
});

t.test('a bad condition says what and where', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /empty condition/],
    ['network.direction', /expected an operator/],
    ['nope = 1', /unknown field or macro 'nope'/],
    ['destination.port = http', /destination.port is a number, 'http' is not/],
    ['destination.ip = 300.1.1.1', /not an address or CIDR/],
    ['destination.ip > 1.2.3.4', /only =, != and in apply/],
    ['container.name < a', /only =, !=, in/],
    ['destination.port startswith 2', /needs a text field/],
    ['(egress', /expected '\)'/],
    ['egress egress', /unexpected 'egress'/],
    ['container.name = "open', /unterminated string/],
    ['container.attributed = maybe', /true or false/],
    ['destination.port ~ 1', /unknown operator/],
  ];
  for (const [cond, err] of cases) t.throws(() => compileCondition(cond, scope), err, cond || '(empty)');
  t.throws(() => compileCondition('a', { lists: new Map(), macros: new Map([['a', 'b'], ['b', 'a']]) }), /in macro a: in macro b: macro a refers to itself/);
});

t.test('addresses and CIDRs as numbers', async (t) => {
  t.equal(ipv4ToNumber('255.255.255.255'), 4294967295);
  for (const bad of ['1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', 'a.b.c.d', '']) t.equal(ipv4ToNumber(bad), -1, bad);
  t.same(ipv6ToWords('2001:db8::1'), [0x20010db8, 0, 0, 1]);
  t.same(ipv6ToWords('2001:0db8:0000:0000:0000:0000:0000:0001'), [0x20010db8, 0, 0, 1], 'as the kernel prints it');
  t.same(ipv6ToWords('::ffff:1.2.3.4'), [0, 0, 0xffff, 0x01020304]);
  t.equal(ipv6ToWords('1::2::3'), undefined);
  t.equal(parseCidr('10.0.0.0/33'), undefined);
  const m = rangeMatcher(['10.0.0.0/8', '192.168.1.0/24', '10.1.0.0/16', '2001:db8::/32', 'fe80::/10'].map((c) => parseCidr(c)!));
  const cases: [string, boolean][] = [
    ['10.200.0.1', true],
    ['11.0.0.0', false],
    ['192.168.1.255', true],
    ['192.168.2.0', false],
    ['2001:db8:ffff::1', true],
    ['2001:db9::1', false],
    ['fe80:0000:0000:0000:0202:b3ff:fe1e:8329', true],
    ['not-an-ip', false],
  ];
  for (const [ip, want] of cases) t.equal(m(ip), want, ip);
});

t.test('durations', async (t) => {
  t.same(['500ms', '30s', '10m', '24h', '7d', '1.5h', 90, 'soon', '10 parsecs'].map((d) => parseDuration(d)), [500, 30_000, 600_000, 86_400_000, 604_800_000, 5_400_000, 90, undefined, undefined]);
});

t.test('rule files: lists, macros, overrides, exceptions and errors', async (t) => {
  const dir = tempDir(t, 'rules');
  const write = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const base = write(
    'a.yaml',
    `- list: ports\n  items: [25]\n- macro: out\n  condition: network.direction = egress\n- rule: r1\n  description: d\n  severity: high\n  condition: out and destination.port in (ports)\n  exceptions:\n    - name: mail\n      condition: container.labels.dockflow.role = mail\n- rule: r2\n  condition: out\n  rate: {more_than: 5, over: 10s}\n`,
  );
  const set = loadRules([base]);
  t.same(set.rules.map((r) => [r.id, r.severity, r.stateful?.kind]), [['r1', 'high', undefined], ['r2', 'medium', 'rate']]);
  t.ok(set.rules[0]!.matches(smtp));
  t.notOk(set.rules[0]!.matches(record({ kind: 'egressTcp', timeMs: T0, dpt: 25 }, MAIL)), 'the exception holds');

  const user = write('b.yaml', `- list: ports\n  items: [443]\n  append: true\n- rule: r2\n  enabled: false\n- rule: r1\n  severity: low\n`);
  const merged = loadRules([base, user]);
  t.same(merged.rules.map((r) => [r.id, r.severity, r.source]), [['r1', 'low', user]], 'r2 off, r1 changed in the later file');
  t.ok(merged.rules[0]!.matches(record({ kind: 'egressTcp', timeMs: T0, dpt: 443 }, WEB)), 'the appended list item applies');

  const bad: [string, RegExp][] = [
    ['- rule: x\n  condition: [oops\n', /c\.yaml: /],
    ['rule: x\n', /expected a list of rule, macro and list items/],
    ['- rule: x\n  condition: nope = 1\n', /c\.yaml item 1: rule x: unknown field or macro 'nope'/],
    ['- rule: x\n  severity: huge\n  condition: network.direction = egress\n', /item 1: severity/],
    ['- rule: x\n  condition: network.direction = egress\n  beacon: {min_repeats: 1, max_jitter: 1s}\n', /item 1: beacon.min_repeats/],
    ['- rule: x\n  condition: network.direction = egress\n  rate: {more_than: 5, over: soon}\n', /not a duration/],
    ['- rule: x\n  condition: network.direction = egress\n  rate: {more_than: 5, over: 1s}\n  fan_out: {distinct: remote.ip, more_than: 5, over: 1s}\n', /one stateful condition per rule/],
    ['- rule: x\n  condition: network.direction = egress\n  fan_out: {distinct: remote.nope, more_than: 5, over: 1s}\n', /unknown field 'remote.nope'/],
    ['- rule: x\n', /rule x has no condition/],
    ['- something: else\n', /expected a rule, macro or list/],
    ['- rule: x\n  condition: network.direction = egress\n  colour: red\n', /item 1: /],
  ];
  for (const [text, err] of bad) t.throws(() => loadRules([write('c.yaml', text)]), err, text.split('\n')[0] ?? '');
  t.throws(() => loadRules([join(dir, 'missing.yaml')]), /missing\.yaml: ENOENT/);
});
