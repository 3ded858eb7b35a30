import t from 'tap';
import { bearerAuth, tokenMatches } from '../../src/api/auth.js';
import { appFor } from './app-helper.js';
import { startEnv, type Env } from './store-helper.js';

let env: Env;
t.before(async () => {
  env = await startEnv();
});
t.teardown(() => env.close());

t.test('bearer token: missing or wrong is 401, right is 200', async (t) => {
  const app = await appFor(env, { auth: { token: 's3cret-token', required: true } });
  t.teardown(() => app.close());
  const cases: [string, Record<string, string>, number][] = [
    ['no header', {}, 401],
    ['wrong token', { authorization: 'Bearer nope' }, 401],
    ['longer wrong token', { authorization: 'Bearer s3cret-token-and-more' }, 401],
    ['basic scheme', { authorization: 'Basic czNjcmV0LXRva2Vu' }, 401],
    ['right token', { authorization: 'Bearer s3cret-token' }, 200],
    ['scheme is case-insensitive', { authorization: 'bearer s3cret-token' }, 200],
  ];
  for (const [name, headers, status] of cases) {
    for (const url of ['/api/flows', '/api/stats/top?by=dst', '/docs/json']) {
      const res = await app.inject({ method: 'GET', url, headers });
      t.equal(res.statusCode, status, `${name}: ${url}`);
      if (status === 401) t.match(res.headers['www-authenticate'], /^Bearer/);
    }
  }
  const health = await app.inject({ method: 'GET', url: '/healthz' });
  t.not(health.statusCode, 401, '/healthz stays open');
});

t.test('a required token that is not configured is a configuration error', async (t) => {
  await t.rejects(appFor(env, { auth: { required: true } }), { code: 'DOCKFLOW_CONFIG_INVALID' });
  t.equal(bearerAuth({ required: false }), undefined, 'loopback without a token: no check');
});

t.test('token comparison', async (t) => {
  t.ok(tokenMatches('abc', 'abc'));
  t.notOk(tokenMatches('abc', 'abcd'));
  t.notOk(tokenMatches('', 'abc'));
});
