/**
 * End to end: syslog lines in over TCP, through the real service (attribution from the stand-in Docker API, the
 * shipped rules), to alerts in the stream, the API, the SSE feed and a webhook receiver on loopback; then `dockflow
 * hunt` over the stored records finds the same rules. A bad user rule file keeps the previous rules.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { chromium } from 'playwright-core';
import { alertRoutes } from '../../src/api/alerts.js';
import { buildApp } from '../../src/api/app.js';
import { defaultApiLimits } from '../../src/api/limits.js';
import { DASHBOARD_PUBLIC_PATHS, dashboardRoutes } from '../../src/api/static.js';
import { runHunt } from '../../src/cli/hunt.js';
import { loadConfig } from '../../src/config/index.js';
import { startService } from '../../src/service.js';
import { FakeDocker } from '../helpers/fake-docker.js';
import { startRedis } from '../helpers/redis.js';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/temp.js';
import { syslogLine, type LineSpec } from './lines.js';

const SHIPPED = [
  'beaconing',
  'fan-out-scan',
  'first-egress-after-learning',
  'ingress-unpublished-port',
  'irc-egress',
  'mining-pool-port',
  'smtp-egress-non-mail',
  'tor-egress',
];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, get: () => Promise<T> | T, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v).slice(0, 500)}`);
    await sleep(100);
  }
}

/** The scenario's lines: one per shipped rule's traffic, stamped over the last day (seconds, as RFC 3164 has). */
export function scenarioLines(nowMs: number): string[] {
  const N = Math.floor(nowMs / 1000) * 1000;
  const specs: LineSpec[] = [
    // Seen 26 h ago (ingress to its published port): its learning period starts there, with no egress in it.
    { kind: 'ingressTcp', timeMs: N - 26 * 3600_000, src: '203.0.113.7', dpt: 80 },
    { kind: 'egressTcp', timeMs: N - 300_000, dst: '198.51.100.2', dpt: 25 },
    { kind: 'egressTcp', timeMs: N - 299_000, dst: '203.0.113.50', dpt: 3333 },
    { kind: 'egressTcp', timeMs: N - 298_000, dst: '203.0.113.6', dpt: 6667 },
    { kind: 'egressTcp', timeMs: N - 297_000, dst: '203.0.113.90', dpt: 9001 },
    { kind: 'ingressTcp', timeMs: N - 296_000, src: '203.0.113.7', dpt: 22 },
    ...Array.from({ length: 101 }, (_, i): LineSpec => ({ kind: 'egressTcp', timeMs: N - 200_000 + i * 200, dst: `192.0.2.${i + 1}`, dpt: 8443, spt: 30000 + i })),
    ...Array.from({ length: 7 }, (_, i): LineSpec => ({ kind: 'egressTcp', timeMs: N - 900_000 + i * 60_000, dst: '203.0.113.9', dpt: 443, spt: 41000 + i })),
  ];
  return specs.map(syslogLine);
}

export const WEB_SPEC = {
  name: 'shop-web-1',
  image: 'nginx:1.27',
  labels: { 'com.docker.compose.project': 'shop', 'com.docker.compose.service': 'web' },
  networks: { bridge: { ip: '172.17.0.2', mac: '02:42:ac:11:00:02' } },
  ports: { '80/tcp': '8080' },
};

t.test('shipped rules fire end to end and hunt finds them again in the stored records', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const now = Date.now();
  const docker = await FakeDocker.start({ style: 'docker', clock: () => now - 3 * 86_400_000 });
  t.teardown(() => docker.dispose());
  docker.run(WEB_SPEC);

  // A webhook receiver that fails the first POST, so the retry path runs.
  const hooked: Record<string, unknown>[] = [];
  let posts = 0;
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (posts++ === 0) {
        res.writeHead(500).end();
        return;
      }
      hooked.push(JSON.parse(body) as Record<string, unknown>);
      res.writeHead(204).end();
    });
  });
  receiver.listen(0, '127.0.0.1');
  await once(receiver, 'listening');
  t.teardown(() => new Promise<void>((r) => receiver.close(() => r())));
  const hookPort = (receiver.address() as net.AddressInfo).port;

  const rulesDir = tempDir(t, 'rules');
  writeFileSync(join(rulesDir, 'custom.yaml'), '- rule: custom-dns\n  severity: info\n  condition: destination.port = 53 and container.name startswith shop\n');

  const config = loadConfig({
    file: {
      syslog: { host: '127.0.0.1', udpEnabled: false, tcpPort: 0 },
      http: { port: 0 },
      redis: { url: redis.url },
      store: { spoolDir: tempDir(t, 'spool'), flushIntervalMs: 5 },
      docker: { defaultEndpoint: docker.unixHost },
      geo: { enabled: false },
      detect: { rules: [rulesDir], webhookUrl: `http://127.0.0.1:${hookPort}/hook`, webhookBackoffMs: 50, reloadDebounceMs: 50 },
      logLevel: 'silent',
    },
  });
  const service = await startService(config, { logger: pino({ level: 'silent' }) });
  t.teardown(() => service.close());
  const { port: httpPort } = service.httpAddress();
  const api = (path: string): Promise<Response> => fetch(`http://127.0.0.1:${httpPort}${path}`);
  const client = new Redis(redis.url);
  t.teardown(() => client.quit());

  // Wait until attribution knows the container.
  await until('attribution', async () => (await (await api('/api/containers')).json()) as unknown, (v) => JSON.stringify(v).includes('shop-web-1'));

  // Follow the live feed before anything is sent.
  const sse = await api('/api/alerts/live');
  t.equal(sse.status, 200);
  const live: Record<string, unknown>[] = [];
  void (async () => {
    const reader = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done) return;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = /^data: (.*)$/m.exec(ev);
        if (/^event: alert$/m.test(ev) && data) live.push(JSON.parse(data[1]!) as Record<string, unknown>);
      }
    }
  })();

  const socket = net.connect(service.syslogAddresses().find((a) => a.transport === 'tcp')!.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.end(scenarioLines(now).join('\n') + '\n');

  const rulesOf = (xs: { rule?: unknown; kind?: unknown }[]): string[] => [...new Set(xs.filter((x) => x.kind === 'new').map((x) => String(x.rule)))].sort();

  // The stream.
  const entries = await until('alerts in the stream', () => client.xrange('dockflow:alerts', '-', '+'), (e) => rulesOf(e.map(([, f]) => ({ rule: f[f.indexOf('rule') + 1], kind: f[f.indexOf('kind') + 1] }))).length >= SHIPPED.length);
  t.same(rulesOf(entries.map(([, f]) => ({ rule: f[f.indexOf('rule') + 1], kind: f[f.indexOf('kind') + 1] }))), SHIPPED);

  // The API, with filters and a cursor.
  const all = (await (await api('/api/alerts?limit=1000')).json()) as { items: Record<string, unknown>[] };
  t.same(rulesOf(all.items), SHIPPED);
  const smtp = (await (await api('/api/alerts?rule=smtp-egress-non-mail')).json()) as { items: Record<string, unknown>[] };
  t.match(smtp.items, [{ rule: 'smtp-egress-non-mail', kind: 'new', container_name: 'shop-web-1', service: 'web', remote_ip: '198.51.100.2', dst_port: 25, severity: 'high' }]);
  const page1 = (await (await api('/api/alerts?limit=3')).json()) as { items: { id: string }[]; next_cursor: string };
  const page2 = (await (await api(`/api/alerts?limit=3&cursor=${page1.next_cursor}`)).json()) as { items: { id: string }[] };
  t.equal(page1.items.length, 3);
  t.ok(page2.items.every((a) => page1.items.every((b) => b.id > a.id)), 'the next page is older');
  t.equal((await api('/api/alerts?severity=critical')).status, 200);
  t.equal((await api('/api/alerts?cursor=nope')).status, 400);

  // The SSE feed and the webhook.
  await until('alerts on the live feed', () => rulesOf(live), (r) => r.length >= SHIPPED.length);
  t.same(rulesOf(live), SHIPPED);
  await until('alerts at the webhook', () => rulesOf(hooked), (r) => r.length >= SHIPPED.length);
  t.same(rulesOf(hooked), SHIPPED);

  // Metrics and health.
  const metrics = await (await api('/metrics')).text();
  t.match(metrics, /dockflow_alerts_total\{rule="smtp-egress-non-mail"\} 1/);
  t.match(metrics, /dockflow_alerts_undelivered_total\{output="webhook",reason="failed-attempt"\} 1/);
  const health = (await (await api('/healthz')).json()) as { checks: { detections: { ok: boolean; detail: string } } };
  t.match(health.checks.detections, { ok: true, detail: /^9 rules/ });

  // A broken user file: the previous rules stay, and /healthz and the metrics say why.
  writeFileSync(join(rulesDir, 'custom.yaml'), '- rule: custom-dns\n  condition: destination.port = = 53\n');
  const broken = await until(
    'the failed reload',
    async () => ((await (await api('/healthz')).json()) as typeof health).checks.detections.detail,
    (d) => d.includes('previous rules kept'),
  );
  t.match(broken, /^9 rules.*custom\.yaml item 1: rule custom-dns/);
  t.match(await (await api('/metrics')).text(), /dockflow_rules_load_errors_total 1/);

  // The Alerts page in Chromium (the bundle built here, served over the same Redis), then one more alert live.
  if (existsSync('/usr/bin/chromium')) {
    const distDir = tempDir(t, 'dist');
    const built = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build-dashboard.mjs'), '--outdir', distDir], { encoding: 'utf8' });
    t.equal(built.status, 0, built.stderr);
    const silent = pino({ level: 'silent' });
    const app = await buildApp({
      redis: client,
      logger: silent,
      keyPrefix: 'dockflow',
      auth: { required: false, publicPaths: ['/healthz', ...DASHBOARD_PUBLIC_PATHS] },
      lossReport: () => ({ dropped: {}, spooled: 0, pending: 0 }),
      limits: defaultApiLimits(),
      plugins: [dashboardRoutes({ distDir }), alertRoutes({ redis: client, key: 'dockflow:alerts', logger: silent, maxClients: 4, heartbeatMs: 1000 })],
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => app.close());
    const base = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}/`;
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    t.teardown(() => browser.close());
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    await page.goto(`${base}?view=alerts`);
    for (const rule of SHIPPED) await page.locator(`#alert-rows tr[data-rule="${rule}"]`).first().waitFor();
    await page.locator('#alert-live-state[data-state="live"]').waitFor();
    const smtpRow = page.locator('#alert-rows tr[data-rule="smtp-egress-non-mail"]').first();
    t.equal(await smtpRow.locator('a', { hasText: 'shop-web-1' }).getAttribute('href'), '?view=container&key=shop-web-1', 'links to the container');
    t.match(await smtpRow.locator('a', { hasText: 'flows' }).getAttribute('href'), /view=flows.*container=shop-web-1.*ip=198\.51\.100\.2/, 'and to its flows');
    const more = net.connect(service.syslogAddresses().find((a) => a.transport === 'tcp')!.port, '127.0.0.1');
    await once(more, 'connect');
    more.end(syslogLine({ kind: 'egressTcp', timeMs: Math.floor(Date.now() / 1000) * 1000, dst: '198.51.100.77', dpt: 465 }) + '\n');
    await page.locator('#alert-rows tr[data-rule="smtp-egress-non-mail"]', { hasText: '198.51.100.77' }).waitFor();
    await page.screenshot({ path: join(tempDir(t, 'shots'), 'alerts.png'), fullPage: true });
    t.same(problems, [], 'no page errors');
  } else {
    t.comment('skip the Chromium part: no /usr/bin/chromium');
  }

  // Hunt over the stored history finds the same rules.
  await client.xlen('dockflow:flows:egress');
  const out = new PassThrough();
  let printed = '';
  out.on('data', (c: Buffer) => (printed += c.toString()));
  const err = new PassThrough();
  let complaints = '';
  err.on('data', (c: Buffer) => (complaints += c.toString()));
  const code = await runHunt(['--since', '3d', '--redis-url', redis.url], { stdin: new PassThrough(), stdout: out, stderr: err, env: {} });
  t.equal(code, 1, `exit 1: something fired (${complaints.trim()})`);
  const hunted = printed.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(rulesOf(hunted), SHIPPED);
  // v2 stored IDs: `<partition>/<entry id>` (docs/storage.md).
  t.match(hunted.find((a) => a.rule === 'smtp-egress-non-mail'), { container_name: 'shop-web-1', flow: /^\d+\.[A-Za-z0-9_-]+\/\d+-\d+$/ });
});
