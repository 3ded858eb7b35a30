import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import Fastify, { type FastifyInstance } from 'fastify';
import { bearerAuth } from '../../src/api/auth.js';
import { DASHBOARD_CSP, DASHBOARD_PUBLIC_PATHS, dashboardRoutes, defaultDashboardDir } from '../../src/api/static.js';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/temp.js';

const TOKEN = 'a-token-of-sixteen-chars';

async function serve(t: Test, distDir: string): Promise<FastifyInstance> {
  const app = Fastify();
  const auth = bearerAuth({ token: TOKEN, required: true, publicPaths: ['/healthz', ...DASHBOARD_PUBLIC_PATHS] })!;
  app.addHook('onRequest', auth);
  app.get('/api/secret', async () => ({ ok: true }));
  await app.register(dashboardRoutes({ distDir }));
  t.teardown(() => app.close());
  return app;
}

function bundle(t: Test): string {
  const dir = tempDir(t, 'dash');
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>dockflow</title>');
  writeFileSync(join(dir, 'assets', 'app.js'), 'console.log(1)');
  writeFileSync(join(dir, 'assets', 'app.css'), 'body{}');
  writeFileSync(join(dir, 'secret.txt'), 'outside assets');
  return dir;
}

t.test('serves the bundle with its content types and the CSP, without a token', async (t) => {
  const app = await serve(t, bundle(t));
  const cases: [string, number, string][] = [
    ['/', 200, 'text/html; charset=utf-8'],
    ['/?view=flows&direction=egress', 200, 'text/html; charset=utf-8'],
    ['/assets/app.js', 200, 'text/javascript; charset=utf-8'],
    ['/assets/app.css', 200, 'text/css; charset=utf-8'],
  ];
  for (const [url, status, type] of cases) {
    const res = await app.inject({ url });
    t.equal(res.statusCode, status, `${url}: ${status}`);
    t.equal(res.headers['content-type'], type, `${url}: ${type}`);
    t.equal(res.headers['content-security-policy'], DASHBOARD_CSP, `${url}: CSP`);
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${url}: nosniff`);
  }
  t.notMatch(DASHBOARD_CSP, /unsafe-inline|unsafe-eval/, 'no inline scripts or eval');
  t.equal((await app.inject({ url: '/api/secret' })).statusCode, 401, 'the API itself still wants the token');
});

t.test('revalidation by ETag', async (t) => {
  const app = await serve(t, bundle(t));
  const first = await app.inject({ url: '/assets/app.js' });
  const etag = first.headers.etag as string;
  t.match(etag, /^"[\w-]+"$/);
  t.equal(first.headers['cache-control'], 'no-cache');
  t.equal((await app.inject({ url: '/assets/app.js', headers: { 'if-none-match': etag } })).statusCode, 304);
  t.equal((await app.inject({ url: '/assets/app.js', headers: { 'if-none-match': '"other"' } })).statusCode, 200);
});

t.test('nothing outside assets/, nothing unknown', async (t) => {
  const app = await serve(t, bundle(t));
  const cases = ['/assets/missing.js', '/assets/..%2Fsecret.txt', '/assets/%2E%2E%2Fsecret.txt', '/assets/.hidden', '/assets/a%00.js', '/assets/..%2F..%2Fpackage.json', '/index.html', '/assets/sub/app.js'];
  for (const url of cases) {
    const res = await app.inject({ url, headers: { authorization: `Bearer ${TOKEN}` } });
    t.ok([401, 404].includes(res.statusCode), `${url}: ${res.statusCode}`);
    t.notMatch(res.body, 'outside assets', `${url}: not served`);
  }
});

t.test('without a built bundle, / says how to build it', async (t) => {
  const app = await serve(t, join(tmpdir(), 'dockflow-no-such-bundle'));
  const res = await app.inject({ url: '/' });
  t.equal(res.statusCode, 503);
  t.match(res.body, 'run npm run build');
  t.equal((await app.inject({ url: '/assets/app.js' })).statusCode, 404);
});

t.test('the default directory is dist/dashboard of the checkout, from src/ or dist/src/', async (t) => {
  t.equal(defaultDashboardDir(join(repoRoot, 'src', 'api', 'static.ts')), join(repoRoot, 'dist', 'dashboard'));
  t.equal(defaultDashboardDir(join(repoRoot, 'dist', 'src', 'api', 'dashboard.js')), join(repoRoot, 'dist', 'dashboard'));
  t.equal(defaultDashboardDir(), join(repoRoot, 'dist', 'dashboard'));
});
