import t, { type Test } from 'tap';
import { DIRECTIONS } from '../../src/record.js';
import { storeKeys } from '../../src/store/keys.js';

t.test('one stream per direction under the prefix', async (t) => {
  const cases: Array<[string | undefined, string]> = [
    [undefined, 'dockflow'],
    ['test-123', 'test-123'],
  ];
  for (const [prefix, expected] of cases) {
    const keys = storeKeys(prefix);
    t.equal(keys.prefix, expected);
    t.same(
      keys.streams,
      DIRECTIONS.map((d) => `${expected}:flows:${d}`),
    );
    t.equal(keys.stream('container-to-host'), `${expected}:flows:container-to-host`);
    t.equal(keys.key('index', 'ip'), `${expected}:index:ip`);
  }
});
