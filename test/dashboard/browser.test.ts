/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core) against a running dockflow: the real
 * service on free loopback ports with its own redis-server and a fake Docker API for attribution, fed the real
 * rsyslog captures and the 50,000-line burst over syslog TCP. The page must ask for the token, fill the table,
 * narrow it by a filter kept in the URL, show a record sent while it watches, pause on scroll, show a container's
 * inventory and timeline, the top talkers, the map and the loss panel, and render hostile text as text; the service's
 * own page (loopback, no token) adds what the Docker API says of a container.
 *
 * Screenshots go to a temporary directory; `UPDATE_SCREENSHOTS=1` writes them to docs/screenshots/ instead.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import t from 'tap';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { buildApp, type LossReport } from '../../src/api/app.js';
import { defaultApiLimits } from '../../src/api/limits.js';
import { DASHBOARD_PUBLIC_PATHS, dashboardRoutes } from '../../src/api/static.js';
import { loadConfig } from '../../src/config/index.js';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { startService } from '../../src/service.js';
import { statusRoutes, type ServiceStatus } from '../../src/api/status.js';
import { FakeDocker } from '../helpers/fake-docker.js';
import { fixture, repoRoot } from '../helpers/paths.js';
import { startRedis } from '../helpers/redis.js';
import { storedCount } from '../helpers/streams.js';
import { deframe, messages, SCENARIOS } from '../fixtures/syslog/corpus.js';
import { tempDir } from '../helpers/temp.js';

const CHROMIUM = '/usr/bin/chromium';
const TOKEN = 'dashboard-test-token-0123456789';
const OFF = { name: 'attribution', on: false, detail: 'no Docker endpoint (set DOCKER_HOST)' } as const;
const OFF_STATUS: ServiceStatus = { syslog: [], api: '', docs: '', dashboard: '', enrichments: [OFF, { name: 'geoip', on: true, detail: 'country' }] };

/** What the checks below call in the page (this file is type-checked with the server's libraries, without the DOM). */
interface BrowserGlobals {
  getComputedStyle(element: unknown): { fill: string };
}

/** The captures were made between 06:43 and 06:45 UTC that day; the views look at this window. */
const T0 = '2026-11-27T06:40:00Z';
const T1 = '2026-11-27T06:50:00Z';
const CAPTURE_START_MS = Date.parse(T0) - 3_600_000;
const HOSTILE = '<img src=x onerror=alert(1)>';

const silent = pino({ level: 'silent' });

/** An RFC 5424 message shaped like rsyslog's (imkmsg) for a container's egress SYN, as in the captures. */
function egressLine(o: { at: string; prefix?: string; src?: string; mac?: string; dst: string; dpt: number; spt: number }): string {
  const mac = o.mac ?? '02:42:ac:11:00:02';
  return (
    `<4>1 ${o.at} vm kernel - - - ${o.prefix ?? 'dockflow: '}IN=docker0 OUT=eth0 PHYSIN=fxveth6c17be9 MAC=02:42:5d:3c:1a:7e:${mac}:08:00 ` +
    `SRC=${o.src ?? '172.17.0.2'} DST=${o.dst} LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=${o.spt} DF PROTO=TCP SPT=${o.spt} DPT=${o.dpt} WINDOW=64240 RES=0x00 SYN URGP=0 \n`
  );
}

const octet = (msgs: readonly string[]): Buffer => Buffer.concat(msgs.map((m) => Buffer.from(`${Buffer.byteLength(m)} ${m}`)));

async function sendTcp(port: number, payload: Buffer): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  for (let off = 0; off < payload.length; off += 64 * 1024) {
    if (!socket.write(payload.subarray(off, off + 64 * 1024))) await once(socket, 'drain');
  }
  socket.end();
  await once(socket, 'close');
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const recordsIn = (msgs: readonly string[]): number => {
  const opts = createLineOptions({});
  return msgs.filter((m) => typeof parseLine(m, opts, Date.now()) !== 'string').length;
};

if (!existsSync(CHROMIUM)) {
  t.plan(0, `skip: no ${CHROMIUM} (apt-get install -y chromium)`);
} else {
  t.test('the dashboard in Chromium against a running dockflow', async (t) => {
    const work = tempDir(t, 'dashboard');
    const shots = process.env.UPDATE_SCREENSHOTS ? join(repoRoot, 'docs', 'screenshots') : join(work, 'screenshots');
    mkdirSync(shots, { recursive: true });

    const distDir = join(work, 'dist');
    const built = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build-dashboard.mjs'), '--outdir', distDir], { encoding: 'utf8' });
    t.equal(built.status, 0, `the bundle builds${built.stderr ? `: ${built.stderr}` : ''}`);
    t.same(readdirSync(join(distDir, 'assets')).sort(), ['app.css', 'app.js'], 'one script and one stylesheet');

    const redis = await startRedis();
    t.teardown(() => redis.stop());
    const client = new Redis(redis.url);
    t.teardown(() => client.disconnect());

    // Attribution: the two capture containers, running since before the captures; a hostile compose label.
    const docker = await FakeDocker.start();
    t.teardown(() => docker.dispose());
    docker.run({ name: 'web', image: 'nginx:1.27', labels: { 'com.docker.compose.service': HOSTILE }, networks: { bridge: { ip: '172.17.0.2', mac: '02:42:ac:11:00:02' } } }, CAPTURE_START_MS);
    docker.run({ name: 'burst', image: 'busybox:1.36', networks: { bridge: { ip: '172.17.0.3', mac: '02:42:ac:11:00:03' } } }, CAPTURE_START_MS);

    const service = await startService(
      loadConfig({
        file: {
          syslog: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
          http: { port: 0 },
          redis: { url: redis.url },
          store: { spoolDir: join(work, 'spool'), flushIntervalMs: 5, retentionMs: 0 },
          docker: { defaultEndpoint: `unix://${docker.socketPath}` },
          // Converting the embedded AS data on a first run takes seconds of this process' CPU; the pages need no AS.
          geo: { embeddedAsn: false },
          logLevel: 'silent',
        },
      }),
      { logger: silent },
    );
    t.teardown(() => service.close());
    const serviceHttp = service.httpAddress();
    const tcpPort = service.syslogAddresses().find((a) => a.transport === 'tcp')!.port;

    // A server for the dashboard with a token it requires: the service requires its token only off loopback, and the
    // tests stay on loopback. The API over the same Redis, the bundle built above, the service's own loss report.
    const app = await buildApp({
      limits: defaultApiLimits(),
      redis: client,
      logger: silent,
      keyPrefix: 'dockflow',
      auth: { token: TOKEN, required: true, publicPaths: ['/healthz', ...DASHBOARD_PUBLIC_PATHS] },
      lossReport: async () => {
        const res = await fetch(`http://127.0.0.1:${serviceHttp.port}/api/flows?limit=1`);
        return ((await res.json()) as { loss: LossReport }).loss;
      },
      // What a service without a Docker endpoint says of itself, for the banner.
      plugins: [dashboardRoutes({ distDir }), statusRoutes(() => OFF_STATUS)],
      liveHeartbeatMs: 1000,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => app.close());
    const base = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}/`;

    // Real records: every capture, the burst, egress to public addresses (for the map), a hostile LOG prefix,
    // and one line that is not netfilter at all (counted as not stored, for the loss panel).
    const captured = SCENARIOS.flatMap((sc) => messages(`${sc}.rsyslog-rfc5424-tcp-octet.bin`));
    const burst = gunzipSync(readFileSync(fixture('bench', 'burst-5000.rsyslog-rfc5424-tcp-octet.bin.gz')));
    const burstMsgs = deframe(burst);
    const publicDsts: [string, number][] = [['8.8.8.8', 53], ['1.1.1.1', 443], ['193.0.6.139', 443], ['200.160.2.3', 443], ['133.11.0.1', 80], ['81.2.69.142', 443], ['185.199.108.153', 443]];
    const crafted = [
      ...publicDsts.map(([dst, dpt], i) => egressLine({ at: `2026-11-27T06:46:0${i}.000000+00:00`, dst, dpt, spt: 50_000 + i })),
      egressLine({ at: '2026-11-27T06:46:30.000000+00:00', prefix: HOSTILE, dst: '8.8.4.4', dpt: 443, spt: 50_100 }),
      '<13>1 2026-11-27T06:46:40.000000+00:00 vm app - - - not a netfilter line\n',
    ];
    const started = Date.now();
    await sendTcp(tcpPort, Buffer.concat([octet(captured), burst, octet(crafted)]));
    const expected = recordsIn(captured) + recordsIn(burstMsgs) + recordsIn(crafted);
    t.equal(recordsIn(burstMsgs), 50_000, 'the burst holds 50,000 LOG lines');
    await waitFor('every record stored', async () => (await storedCount(client)) >= expected);
    t.comment(`${expected} records stored in ${Date.now() - started} ms`);

    const root = await fetch(base);
    t.equal(root.status, 200, '/ serves the page without a token');
    t.match(root.headers.get('content-security-policy'), /script-src 'self'/, 'with the CSP');
    t.equal((await fetch(`${base}api/flows`)).status, 401, 'the API still wants the token');

    const context: BrowserContext = await chromium.launchPersistentContext(join(work, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 800 },
    });
    t.teardown(() => context.close());
    const page: Page = context.pages()[0] ?? (await context.newPage());
    const problems: string[] = [];
    page.on('dialog', (d) => {
      problems.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (m) => {
      // Chromium logs every non-2xx fetch; the statuses themselves are checked where they matter.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
    });
    page.setDefaultTimeout(15_000);
    const rows = page.locator('#flow-rows tr.flow');

    await t.test('asks for the token, refuses a wrong one, then fills the table', async (t) => {
      await page.goto(`${base}?view=flows&since=${T0}`);
      await page.locator('#token-dialog').waitFor();
      await page.screenshot({ path: join(shots, 'token.png') });
      await page.fill('#token-input', 'not-the-token-at-all');
      await page.press('#token-input', 'Enter');
      await page.locator('#token-dialog', { hasText: 'refused' }).waitFor();
      t.pass('a wrong token is refused and asked again');
      await page.fill('#token-input', TOKEN);
      await page.press('#token-input', 'Enter');
      await page.locator('#live-state[data-state="live"]').waitFor();
      await rows.nth(199).waitFor();
      t.equal(await rows.count(), 200, 'the first page of 200 records');
      t.match(await page.textContent('#row-count'), /200 records shown, older ones stored/);
      t.equal(await page.evaluate("sessionStorage.getItem('dockflow.token')"), TOKEN, 'the token is kept for the tab');
      t.match(await page.textContent('#loss summary'), /not stored|loss/i, 'the loss panel is shown');
      t.match(await page.textContent('#loss'), /not-netfilter 1/, 'with the line that was not stored, by reason');
      await page.screenshot({ path: join(shots, 'flows.png') });
    });

    await t.test('hostile text from records renders as text', async (t) => {
      await page.goto(`${base}?view=flows&since=${T0}&ip=8.8.4.4`);
      const cell = page.locator('#flow-rows td.prefix');
      await cell.first().waitFor();
      t.equal(await cell.first().textContent(), HOSTILE, 'the LOG prefix shows as typed');
      t.equal(await page.locator('main img').count(), 0, 'no element was made from it');
      await rows.first().locator('td.time').click();
      t.match(await page.textContent('#flow-rows tr.detail pre'), '"prefix": "<img src=x onerror=alert(1)>"', 'the detail shows the record as JSON text');
    });

    await t.test('a filter narrows the table and lives in the URL', async (t) => {
      await page.goto(`${base}?view=flows&since=${T0}`);
      await rows.nth(199).waitFor();
      await page.selectOption('#f-direction', 'ingress');
      await page.fill('#f-container', 'web');
      await page.click('#apply');
      await page.waitForURL(/direction=ingress/);
      const url = new URL(page.url());
      t.equal(url.searchParams.get('container'), 'web', 'the container filter is in the URL');
      t.equal(url.searchParams.get('since'), T0, 'and the range');
      await page.locator('#row-count', { hasText: /^\d+ records shown$/ }).waitFor();
      const n = await rows.count();
      t.ok(n > 0 && n < 200, `fewer rows (${n})`);
      const dirs = await page.locator('#flow-rows tr.flow td:nth-child(2)').allTextContents();
      t.same([...new Set(dirs)], ['ingress'], 'every row is ingress');
      const containers = await page.locator('#flow-rows tr.flow td.container').allTextContents();
      t.same([...new Set(containers)], ['web'], 'every row is the container web');
      // The same address opened in a new tab (which has no token yet: it is kept per tab) shows the same view.
      const fresh = await context.newPage();
      await fresh.goto(url.toString());
      await fresh.fill('#token-input', TOKEN);
      await fresh.press('#token-input', 'Enter');
      await fresh.locator('#live-state[data-state="live"]').waitFor();
      t.equal(await fresh.inputValue('#f-container'), 'web', 'a shared address restores the filters');
      await fresh.locator('#flow-rows tr.flow').nth(n - 1).waitFor();
      t.equal(await fresh.locator('#flow-rows tr.flow').count(), n, 'and the same rows');
      await fresh.close();

      await page.goto(`${base}?view=flows&ip=300.1.2.3`);
      t.match(await page.textContent('.error'), 'not an IP address or CIDR', "a filter the API refuses says why");
      t.equal(await page.getAttribute('#live-state', 'data-state'), 'failed', 'and the live view stops');
    });

    await t.test('the live view shows a record sent while watching, and holds records back when scrolled', async (t) => {
      await page.goto(`${base}?view=flows&since=${T0}&container=web`);
      await page.locator('#live-state[data-state="live"]').waitFor();
      await page.locator('#row-count', { hasText: 'records shown' }).waitFor();
      const before = await rows.count();
      const now = new Date().toISOString().replace('Z', '000+00:00');
      await sendTcp(tcpPort, octet([egressLine({ at: now, dst: '9.9.9.9', dpt: 853, spt: 51_000 })]));
      await page.locator('#flow-rows tr.flow').first().filter({ hasText: '9.9.9.9:853' }).waitFor();
      t.equal(await rows.count(), before + 1, 'one row more, on top');

      // Scrolled down, a new record waits above instead of moving the rows being read.
      await page.goto(`${base}?view=flows&since=${T0}`);
      await page.locator('#live-state[data-state="live"]').waitFor();
      await rows.nth(199).waitFor();
      await page.locator('#flow-table').evaluate((el) => el.scrollTo(0, 2000));
      await sendTcp(tcpPort, octet([egressLine({ at: new Date().toISOString().replace('Z', '000+00:00'), dst: '9.9.9.9', dpt: 5353, spt: 51_001 })]));
      await page.locator('#paused', { hasText: '1 new' }).waitFor();
      t.equal(await page.locator('#flow-rows', { hasText: '9.9.9.9:5353' }).count(), 0, 'not shown while scrolled');
      await page.screenshot({ path: join(shots, 'flows-paused.png') });
      await page.click('#paused');
      await page.locator('#flow-rows tr.flow').first().filter({ hasText: '9.9.9.9:5353' }).waitFor();
      t.pass('shown on top once back at the top');
    });

    await t.test('the container page: inventory, what is new, timeline', async (t) => {
      await page.goto(`${base}?view=flows&since=${T0}&container=web`);
      await page.locator('#flow-rows td.container a').first().click();
      await page.waitForURL(/view=container/);
      t.equal(new URL(page.url()).searchParams.get('key'), 'web', 'the container link leads to its page');
      // New since the end of the captures: what the test sent afterwards. The timeline shows the capture window.
      await page.goto(`${base}?view=container&key=web&since=${T0}&until=${T1}&new_since=2026-11-27T06:45:30Z`);
      const inventory = page.locator('table.inventory tbody tr');
      await inventory.first().waitFor();
      const remotes = await page.locator('table.inventory tbody td:nth-child(2)').allTextContents();
      for (const ip of ['198.51.100.2', '8.8.8.8', '9.9.9.9']) t.ok(remotes.includes(ip), `${ip} is in the inventory`);
      t.match(await page.textContent('#new-count'), /^10 new since 2026-11-27 06:45:30\.000$/, 'what is new since the given time');
      const fresh = await page.locator('table.inventory tr.new td:nth-child(2)').allTextContents();
      t.same([...new Set(fresh)].sort(), ['1.1.1.1', '133.11.0.1', '185.199.108.153', '193.0.6.139', '200.160.2.3', '8.8.4.4', '8.8.8.8', '81.2.69.142', '9.9.9.9'], 'the new ones are marked');
      t.notOk(fresh.includes('198.51.100.2'), 'what the captures reached is not new');
      t.equal(await page.textContent('.service-name'), HOSTILE, 'the compose label shows as text');
      t.equal(await page.locator('main img').count(), 0, 'and makes no element');
      t.ok((await page.locator('#timeline rect.bar').count()) > 0, 'the timeline draws connections');
      t.equal(await page.locator('table.inventory tbody td:nth-child(3)', { hasText: 'undefined' }).count(), 0, 'ICMP has no port to show');
      await page.screenshot({ path: join(shots, 'container.png') });
      await page.locator('#timeline').scrollIntoViewIfNeeded();
      await page.screenshot({ path: join(shots, 'container-timeline.png') });
    });

    await t.test('the container list', async (t) => {
      await page.click('nav a[data-view="container"]');
      await page.waitForURL(/view=container$/);
      await page.goto(`${base}?view=container&since=${T0}&until=${T1}`);
      await page.locator('table.containers').waitFor();
      const names = await page.locator('table.containers tbody td:first-child').allTextContents();
      t.same(names, ['burst', 'web'], 'the containers of the range, busiest first');
      t.equal(await page.textContent('#status-banner'), 'attribution off: no Docker endpoint (set DOCKER_HOST)', 'the banner says what is off and why');
      await page.goto(`${base}?view=container&since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z`);
      t.match(await page.locator('#attribution-off').textContent(), /^attribution off: no Docker endpoint .*stored without container names/, 'an empty list says why');
    });

    await t.test('top talkers as charts', async (t) => {
      await page.goto(`${base}?view=top&since=${T0}&until=${T1}`);
      await page.locator('#top-dst svg.bars').waitFor();
      t.match(await page.textContent('#top-dst'), '198.51.100.2', 'the capture destination leads');
      await page.locator('#top-container svg.bars').waitFor();
      t.match(await page.textContent('#top-container'), /burst[\s\S]*web/, 'both containers, the busier first');
      await page.locator('#top-country svg.bars').waitFor();
      await page.screenshot({ path: join(shots, 'top.png') });
      await page.locator('#top-port a').first().click();
      await page.waitForURL(/view=flows/);
      const url = new URL(page.url());
      t.same([url.searchParams.get('transport'), url.searchParams.get('port')], ['tcp', '443'], 'a bar leads to its flows');
    });

    await t.test('egress destinations on the world map', async (t) => {
      await page.goto(`${base}?view=map&since=${T0}&until=${T1}`);
      await page.locator('#world-map').waitFor();
      const hit = await page.locator('#world-map path.hit').evaluateAll((ps) => ps.map((p) => p.getAttribute('data-country')).sort());
      t.same(hit, ['AU', 'BR', 'GB', 'JP', 'NL', 'US'], 'every country with egress is shaded');
      const fills = await page.locator('#world-map path.hit').evaluateAll((ps) => ps.map((p) => (globalThis as unknown as BrowserGlobals).getComputedStyle(p).fill));
      const plain = await page.locator('#world-map path.country:not(.hit)').first().evaluate((p) => (globalThis as unknown as BrowserGlobals).getComputedStyle(p).fill);
      t.notOk(fills.includes(plain), 'shaded unlike the others');
      t.match(await page.textContent('#country-table'), /US United States of America\s*3/, 'and listed with its count');
      t.ok((await page.locator('#world-map path.country').count()) > 150, 'the bundled country shapes are drawn');
      await page.screenshot({ path: join(shots, 'map.png') });
    });

    await t.test("the service's own page, on loopback without a token: what Docker says of a container", async (t) => {
      const own = await context.newPage();
      own.on('pageerror', (err) => problems.push(`page error (service's page): ${err.message}`));
      await own.goto(`http://127.0.0.1:${serviceHttp.port}/?view=container&key=web&since=${T0}&until=${T1}`);
      const facts = own.locator('.facts');
      await facts.waitFor();
      t.equal(await own.locator('#token-dialog').count(), 0, 'no token asked on loopback');
      const fact = (label: string): Promise<string | null> =>
        facts.evaluate((el, label) => [...el.querySelectorAll('dt')].find((dt) => dt.textContent === label)?.nextElementSibling?.textContent ?? null, label);
      t.equal(await fact('Image'), 'nginx:1.27', 'the image, from /api/containers');
      t.match((await fact('Addresses')) ?? '', /^172\.17\.0\.2 on bridge, /, 'the address and its network, since when');
      t.ok(
        (await facts.locator('.label-pair').allTextContents()).includes(`com.docker.compose.service=${HOSTILE}`),
        'the labels, the hostile one as text',
      );
      t.equal(await own.locator('main img').count(), 0, 'and no element made from it');
      await own.close();
    });

    t.same(problems, [], 'no script error, no dialog');
  });
}
