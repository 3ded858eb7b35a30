import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig, SETTINGS } from '../../src/config/index.js';
import { ErrorCode } from '../../src/errors.js';
import { repoRoot } from '../helpers/paths.js';

t.test('defaults give a working service', async (t) => {
  const c = loadConfig({});
  t.equal(c.syslog.udpPort, 5514);
  t.equal(c.syslog.tcpPort, 5514);
  t.equal(c.http.host, '127.0.0.1');
  t.equal(c.redis.url, undefined);
  t.equal(c.redis.embeddedAppendFsync, 'everysec');
  t.equal(loadConfig({ env: { DOCKFLOW_REDIS_FSYNC: 'always' } }).redis.embeddedAppendFsync, 'always');
  t.equal(loadConfig({ flags: { 'redis-fsync': 'always' } }).redis.embeddedAppendFsync, 'always');
  t.same(c.parse.bridges, ['docker0', 'br-*']);
  t.ok(Object.isFrozen(c.syslog), 'frozen after start-up');
});

t.test('precedence: file < environment < flags', async (t) => {
  const c = loadConfig({
    file: { syslog: { udpPort: 1000, tcpPort: 1001 }, http: { port: 9000 } },
    env: { SYSLOG_UDP_PORT: '2000', REDIS_URL: 'redis://127.0.0.1:7000', DOCKFLOW_BRIDGES: 'docker0, br-*,cni*' },
    flags: { 'udp-port': '3000' },
  });
  t.equal(c.syslog.udpPort, 3000);
  t.equal(c.syslog.tcpPort, 1001);
  t.equal(c.http.port, 9000);
  t.equal(c.redis.url, 'redis://127.0.0.1:7000');
  t.same(c.parse.bridges, ['docker0', 'br-*', 'cni*']);
});

const invalid: Array<[string, Parameters<typeof loadConfig>[0], RegExp]> = [
  ['port not a number', { env: { SYSLOG_UDP_PORT: 'abc' } }, /SYSLOG_UDP_PORT: expected an integer/],
  ['port out of range', { env: { HTTP_PORT: '70000' } }, /http\.port/],
  ['bad boolean', { env: { GEOIP: 'maybe' } }, /GEOIP: expected true or false/],
  ['unknown key in file', { file: { syslgo: {} } }, /syslgo/],
  ['API off loopback without token', { env: { HTTP_HOST: '0.0.0.0' } }, /API_TOKEN/],
  ['short token', { env: { API_TOKEN: 'short' } }, /apiToken/],
  ['bad endpoint map', { env: { DOCKFLOW_DOCKER_ENDPOINTS: 'nohostname' } }, /name=value/],
  ['unknown AOF fsync policy', { env: { DOCKFLOW_REDIS_FSYNC: 'no' } }, /embeddedAppendFsync/],
];
for (const [name, sources, message] of invalid) {
  t.test(`rejected: ${name}`, async (t) => {
    t.throws(() => loadConfig(sources), { name: 'DockflowError', code: ErrorCode.CONFIG_INVALID, message });
  });
}

t.test('a token makes a non-loopback API acceptable', async (t) => {
  const c = loadConfig({ env: { HTTP_HOST: '0.0.0.0', API_TOKEN: 'x'.repeat(32), DOCKFLOW_DOCKER_ENDPOINTS: 'web1=unix:///a.sock,web2=tcp://10.0.0.2:2375' } });
  t.equal(c.http.host, '0.0.0.0');
  t.same(c.docker.endpoints, { web1: 'unix:///a.sock', web2: 'tcp://10.0.0.2:2375' });
});

t.test("every environment setting is in the configuration table (docs/operations.md) and in the deploy env example", async (t) => {
  const readme = readFileSync(join(repoRoot, 'docs', 'operations.md'), 'utf8');
  const example = readFileSync(join(repoRoot, 'deploy', 'dockflow.env.example'), 'utf8');
  for (const { env } of SETTINGS) {
    if (env === undefined) continue;
    t.match(readme, new RegExp(`^\\|.*\`${env}\``, 'm'), `docs/operations.md: ${env}`);
    t.match(example, new RegExp(`^#?${env}=`, 'm'), `dockflow.env.example: ${env}`);
  }
});
