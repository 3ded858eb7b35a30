import { Writable } from 'node:stream';
import Fastify from 'fastify';
import { pino } from 'pino';
import t from 'tap';
import { statusLines, statusRoutes, type ServiceStatus } from '../../src/api/status.js';
import { loadConfig } from '../../src/config/index.js';
import { startService } from '../../src/service.js';
import { startRedis } from '../helpers/redis.js';
import { tempDir } from '../helpers/temp.js';

const STATUS: ServiceStatus = {
  syslog: [
    { transport: 'udp', address: '0.0.0.0', port: 5514 },
    { transport: 'tcp', address: '0.0.0.0', port: 5514 },
    { transport: 'tcp', address: '::', port: 6514 },
  ],
  api: 'http://127.0.0.1:8080/api/',
  docs: 'http://127.0.0.1:8080/docs',
  dashboard: 'http://127.0.0.1:8080/',
  enrichments: [
    { name: 'attribution', on: false, detail: 'no Docker endpoint (no /var/run/docker.sock; set DOCKER_HOST or DOCKFLOW_DOCKER_ENDPOINTS)' },
    { name: 'geoip', on: true, detail: 'country from ipinfo.io (x.mmdb, built 2026-06-17)' },
  ],
};

t.test('GET /api/status answers what runs and where', async (t) => {
  const app = Fastify();
  t.teardown(() => app.close());
  await app.register(statusRoutes(() => STATUS));
  const res = await app.inject({ url: '/api/status' });
  t.equal(res.statusCode, 200);
  t.same(res.json(), STATUS);
});

t.test('the start-up lines say it in plain words', async (t) => {
  t.same(statusLines(STATUS), [
    'syslog: UDP and TCP on 0.0.0.0:5514, TCP on [::]:6514',
    'API: http://127.0.0.1:8080/api/ (reference: http://127.0.0.1:8080/docs)',
    'dashboard: http://127.0.0.1:8080/',
    'attribution off: no Docker endpoint (no /var/run/docker.sock; set DOCKER_HOST or DOCKFLOW_DOCKER_ENDPOINTS)',
    'GeoIP on: country from ipinfo.io (x.mmdb, built 2026-06-17)',
  ]);
  t.same(statusLines({ ...STATUS, syslog: [], enrichments: [] }).slice(0, 1), ['syslog: no listener']);
});

t.test('the service logs its status at start and answers it on /api/status', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  let log = '';
  const logger = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => ((log += c.toString()), cb()) }));
  const config = loadConfig({
    file: {
      syslog: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
      http: { port: 0 },
      redis: { url: redis.url },
      store: { spoolDir: tempDir(t, 'spool') },
      docker: { enabled: false },
    },
  });
  const service = await startService(config, { logger });
  t.teardown(() => service.close());
  const { port } = service.httpAddress();
  const status = (await (await fetch(`http://127.0.0.1:${port}/api/status`)).json()) as ServiceStatus;
  t.equal(status.dashboard, `http://127.0.0.1:${port}/`);
  t.same(status.syslog.map((s) => s.transport).sort(), ['tcp', 'udp']);
  t.same(status.enrichments[0], { name: 'attribution', on: false, detail: 'turned off (DOCKFLOW_DOCKER=false)' });
  t.match(status.enrichments[1], { name: 'geoip', on: true, detail: /^country from .* built \d{4}-\d{2}-\d{2}\)$/ });
  t.equal((await fetch(`http://127.0.0.1:${port}/api/status?verbose=1`)).status, 400, 'no parameters');
  const messages = log.trim().split('\n').map((l) => (JSON.parse(l) as { msg: string }).msg);
  for (const line of statusLines(status)) t.ok(messages.includes(line), `logged: ${line}`);
});
