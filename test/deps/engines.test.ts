import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

// The machines run Node.js 20 (package.json `engines`): no installed package may ask for a newer one.
const lock = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { version?: string; engines?: { node?: string } }>;
};

t.test('no package in the lockfile declares a Node.js newer than 20', async (t) => {
  const tooNew = Object.entries(lock.packages)
    .filter(([, p]) => /^\s*>=?\s*v?(2[1-9]|[3-9]\d)/.test(p.engines?.node ?? ''))
    .map(([name, p]) => `${name}@${p.version ?? '?'} (${p.engines?.node ?? ''})`);
  t.same(tooNew, []);
});
