/** DNS rebinding: with no API token, only loopback Host names (or configured ones) are answered. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { defaultApiLimits } from '../../src/api/limits.js';
import { appFor } from './app-helper.js';
import { startEnv, type Env } from './store-helper.js';

let env: Env;
t.before(async () => {
  env = await startEnv();
});
t.teardown(() => env.close());

/** A real request with a Host header of our choosing. */
function getWithHost(port: number, host: string | undefined, path = '/api/stats/top?by=dst'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, setHost: host !== undefined, headers: host !== undefined ? { host } : {} }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
  });
}

t.test('no token: loopback names on our port and configured names only; 421 otherwise', async (t) => {
  const app = await appFor(env, { limits: defaultApiLimits({ allowedHosts: ['dockflow.lan', 'proxy.example:8443'] }) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const { port } = app.server.address() as AddressInfo;
  const cases: Array<[string | undefined, number]> = [
    [`localhost:${port}`, 200],
    [`LOCALHOST:${port}`, 200],
    [`127.0.0.1:${port}`, 200],
    [`[::1]:${port}`, 200],
    ['dockflow.lan', 200],
    [`dockflow.lan:${port}`, 200],
    ['proxy.example:8443', 200],
    ['proxy.example', 421],
    ['proxy.example:8444', 421],
    [`localhost:${port + 1}`, 421],
    ['localhost', 421], // port 80 implied, not ours
    [`evil.example:${port}`, 421],
    [`localhost.evil.example:${port}`, 421],
    [`127.0.0.1.nip.io:${port}`, 421],
    [`10.0.0.1:${port}`, 421],
    [undefined, 400], // node:http refuses an HTTP/1.1 request without Host before any route sees it
    [`localhost:${port}@evil`, 421],
  ];
  for (const [host, want] of cases) {
    const got = await getWithHost(port, host);
    t.equal(got, want, `Host: ${host ?? '(none)'} → ${got}`);
  }
  const body = await app.inject({ method: 'GET', url: '/api/stats/top?by=dst', headers: { host: 'evil.example' } });
  t.match(body.json(), { error: 'misdirected' });
  // node:http's client fills an empty Host in itself; inject sends it as is.
  t.equal((await app.inject({ method: 'GET', url: '/api/stats/top?by=dst', headers: { host: '' } })).statusCode, 421, 'empty Host');
});

t.test('with a token, Host is not checked (the token is the defence)', async (t) => {
  const app = await appFor(env, { auth: { token: 'x'.repeat(24), required: true } });
  const res = await app.inject({ method: 'GET', url: '/api/stats/top?by=dst', headers: { host: 'dockflow.example.org', authorization: `Bearer ${'x'.repeat(24)}` } });
  t.equal(res.statusCode, 200);
  await app.close();
});
