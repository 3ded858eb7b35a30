import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import t from 'tap';
import { buildDataset, startEnv, type Env } from '../api/store-helper.js';
import { remoteSide } from '../../src/store/encode.js';
import { repoRoot as root } from '../helpers/paths.js';

const run = promisify(execFile);
/** Debian's interpreter (python3-redis is installed for it), else whatever python3 is on the PATH. */
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

let env: Env;
t.before(async () => {
  env = await startEnv();
});
t.teardown(() => env.close());

t.test("the storage docs' Python consumer reads every record with redis-py alone", async (t) => {
  const data = buildDataset();
  await env.writer.write(data);
  const { stdout } = await run(python, [`${root}/scripts/consume.py`, `redis://127.0.0.1:${env.server.port}`, 'dft']);
  const want = data.map((r) => {
    const remote = r[remoteSide(r.network.direction)];
    const ep = (e: { ip?: string; port?: number }): string => `${e.ip ?? ''}:${e.port ?? ''}`;
    return `${r['@timestamp'].replace('Z', '+00:00')} ${r.network.direction} ${r.network.transport ?? ''} ${ep(r.source)} -> ${ep(r.destination)} container=${r.container?.name ?? ''} country=${remote.geo?.country_iso_code ?? ''} as=${remote.as?.number ?? ''}`;
  });
  t.same(stdout.trimEnd().split('\n'), want);
});
