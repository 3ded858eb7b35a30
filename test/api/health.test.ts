/** `/healthz`: status for anyone, the detail (Redis URL, listeners, counters) only with the token or, without one, to loopback peers. */
import t from 'tap';
import { Registry } from 'prom-client';
import { healthRoutes } from '../../src/api/health.js';
import { appFor } from './app-helper.js';
import { startEnv, type Env } from './store-helper.js';

const TOKEN = 't'.repeat(32);
let env: Env;
let healthy = true;
const health = {
  checks: () => ({ redis: { ok: healthy, detail: 'redis://127.0.0.1:6379' }, receivers: { ok: true, detail: 'tcp/0.0.0.0:5514' } }),
};
t.before(async () => {
  env = await startEnv();
});
t.teardown(() => env.close());

t.test('who sees what', async (t) => {
  const open = await appFor(env, { plugins: [healthRoutes({ health, registry: new Registry() })] });
  const locked = await appFor(env, { auth: { token: TOKEN, required: true }, plugins: [healthRoutes({ health, registry: new Registry(), token: TOKEN })] });
  t.teardown(async () => {
    await open.close();
    await locked.close();
  });
  const cases: Array<[string, typeof open, Record<string, string>, string, boolean]> = [
    ['no token, loopback peer', open, {}, '127.0.0.1', true],
    ['no token, IPv6 loopback peer', open, {}, '::1', true],
    ['no token, mapped loopback peer', open, {}, '::ffff:127.0.0.1', true],
    ['no token, remote peer', open, {}, '192.0.2.10', false],
    ['token set, none presented, loopback', locked, {}, '127.0.0.1', false],
    ['token set, wrong one', locked, { authorization: 'Bearer nope' }, '127.0.0.1', false],
    ['token set, presented', locked, { authorization: `Bearer ${TOKEN}` }, '192.0.2.10', true],
  ];
  for (const h of [true, false]) {
    healthy = h;
    for (const [name, app, headers, remoteAddress, detail] of cases) {
      const res = await app.inject({ method: 'GET', url: '/healthz', headers, remoteAddress });
      t.equal(res.statusCode, h ? 200 : 503, `${name}: status code`);
      const body = res.json() as { status: string; checks?: unknown };
      t.equal(body.status, h ? 'ok' : 'degraded', `${name}: status`);
      if (detail) t.match(body.checks, { redis: { detail: 'redis://127.0.0.1:6379' } }, `${name}: detail`);
      else {
        t.same(Object.keys(body), ['status'], `${name}: status only`);
        t.notMatch(res.body, /redis:|tcp\//, `${name}: nothing of the setup`);
      }
    }
  }
  healthy = true;
});
