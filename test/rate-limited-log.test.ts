import t from 'tap';
import { RateLimitedLog } from '../src/rate-limited-log.js';

t.test('one report per reason per interval, the rest summed into the next', async (t) => {
  let now = 0;
  const out: string[] = [];
  const log = new RateLimitedLog<string>(1000, (reason, count, detail) => out.push(`${reason} ${count} ${detail}`), () => now);
  for (let i = 0; i < 3086; i++) log.report('write', `e${i}`);
  log.report('fsync', 'f');
  t.same(out, ['write 1 e0', 'fsync 1 f'], 'the first of each reason at once');
  now = 1500;
  log.flush();
  t.same(out.slice(2), ['write 3085 e3085'], 'then one line with the count and the latest detail');
  log.report('write', 'later', 5);
  t.equal(out.length, 3, 'within the interval of the summary: held');
  now = 3000;
  log.flush();
  t.same(out.slice(3), ['write 5 later']);
});

t.test('a pending summary is emitted at the end of its interval without another report', async (t) => {
  const out: number[] = [];
  const log = new RateLimitedLog<null>(30, (_r, count) => out.push(count));
  log.report('x', null);
  log.report('x', null);
  log.report('x', null);
  await new Promise((r) => setTimeout(r, 100));
  t.same(out, [1, 2]);
});
