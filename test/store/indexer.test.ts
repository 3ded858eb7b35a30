import t from 'tap';
import type { FlowRecord } from '../../src/record.js';
import { addressHex } from '../../src/store/encode.js';
import { canonicalIp, indexValues, inventoryMember, validateKeyPrefix } from '../../src/store/indexer.js';
import { parseAddressMatch } from '../../src/store/query.js';
import { BASE_MS, buildDataset, enrich, startEnv, type Env } from '../api/store-helper.js';

let env: Env;
t.before(async () => {
  env = await startEnv();
});
t.teardown(() => env.close());

t.test('addresses as fixed-width hex: lex order is numeric order, a CIDR is one range', async (t) => {
  const ordered = ['0.0.0.0', '9.255.255.255', '10.0.0.0', '10.0.0.1', '172.17.0.2', '198.51.100.2', '255.255.255.255'];
  const hex = ordered.map(addressHex);
  t.same([...hex].sort(), hex);
  t.equal(addressHex('198.51.100.2'), '4c6336402');
  t.equal(addressHex('2001:db8::2'), `620010db8${'0'.repeat(20)}0002`);
  t.equal(addressHex('2001:0DB8:0000::0002'), addressHex('2001:db8::2'), 'any spelling of an address');
  t.equal(addressHex('not-an-ip'), '');
  const net = parseAddressMatch('10.0.0.0/8')!;
  for (const ip of ordered) t.equal(addressHex(ip) >= net.first && addressHex(ip) <= net.last, ip.startsWith('10.'), ip);
  const v6 = parseAddressMatch('2001:db8::/32')!;
  t.ok(addressHex('2001:db8:ffff::1') <= v6.last && addressHex('2001:db8::') >= v6.first);
  t.ok(addressHex('2001:db9::') > v6.last);
  t.equal(canonicalIp('fd00:0017:0000:0000:0000:0000:0000:0002'), 'fd00:17::2');
  for (const ok of ['dockflow', 'a:b', 'x.y-z_1']) t.equal(validateKeyPrefix(ok), ok);
  for (const bad of ['', 'a b', 'a:', ':a', 'a*', 'x'.repeat(65)]) t.throws(() => validateKeyPrefix(bad), { code: 'DOCKFLOW_CONFIG_INVALID' }, JSON.stringify(bad));
});

t.test('index values of a record: both containers, both addresses, service ports, remote country and AS, direction', async (t) => {
  const [syn] = buildDataset();
  t.same(indexValues(syn!).sort(), ['a|4ac110002', 'a|4c6336402', 'c|a1a1a1a1a1a1', 'd|e', 'g|NL', 'n|64500', 'p|25'].sort());
  const internal: FlowRecord = structuredClone(syn!);
  internal.network.direction = 'internal';
  internal.peer_container = { id: 'b2'.repeat(32), name: 'resolver' };
  t.ok(indexValues(internal).includes('c|b2b2b2b2b2b2'), 'the peer container too');
});

t.test('no record value reaches a key name unescaped', async (t) => {
  const base = buildDataset()[0]!;
  const hostile: FlowRecord = enrich(base, BASE_MS, { id: 'f'.repeat(64), name: 'x:y* {z}', service: 'a b:c' });
  hostile.source.ip = 'fd00:0017:0000:0000:0000:0000:0000:0002';
  hostile.destination.geo = { country_iso_code: 'X:Y*' };
  const notHex = enrich(base, BASE_MS, { id: 'zz:*'.repeat(16), name: 'evil' });
  await env.writer.write([hostile, notHex]);
  const keys = await env.redis.keys('*');
  const safe = /^dft:(\{g\}:(parts|ctr|as)|\{\d+\.w1\}:(s|v|r:[acpgnd]\|[0-9A-Za-z]+|n:[a-z]+:[a-z]|[fl]:[0-9a-f]{12}))$/;
  for (const k of keys) t.match(k, safe, k);
  t.notOk(keys.some((k) => k.includes('zz')), 'a container ID that is not hex is not indexed');
  t.notOk(keys.some((k) => k.includes('X:Y')), 'a country that is not a code is not indexed');
  await env.redis.flushall();
});

t.test('inventory members fold answers onto the connection they answer', async (t) => {
  const [syn, , , reply] = buildDataset();
  t.equal(inventoryMember(syn!), 'e|198.51.100.2|tcp|25');
  t.equal(reply!.network.direction, 'ingress');
  t.equal(inventoryMember(reply!), 'e|198.51.100.2|tcp|25');
});
