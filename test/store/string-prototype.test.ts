import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Whether `String.prototype` has fast properties after `script` ran, as V8 itself says (`%HasFastProperties`), in a
 * process of its own: the state is per isolate, and this test's own imports must not decide it.
 */
async function stringPrototypeFastAfter(script: string): Promise<{ before: boolean; after: boolean }> {
  const code = `
    await import('ioredis');
    const before = %HasFastProperties(String.prototype);
    ${script}
    console.log(JSON.stringify({ before, after: %HasFastProperties(String.prototype) }));`;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--allow-natives-syntax', '--import', '@tapjs/typescript/import', '--input-type=module', '-e', code],
    { cwd: repoRoot, timeout: 60_000 },
  );
  return JSON.parse(stdout.trim().split('\n').pop() as string) as { before: boolean; after: boolean };
}

const CONNECT = `
    const { connectRedis } = await import('./src/store/connect.ts');
    const { default: pino } = await import('pino');
    connectRedis('redis://127.0.0.1:1', pino({ level: 'silent' }), { lazyConnect: true }).disconnect();`;

t.test('after connectRedis, String.prototype is fast again whatever importing ioredis did to it', async (t) => {
  const { before, after } = await stringPrototypeFastAfter(CONNECT);
  // Slow before with the ioredis this was written against (its VerbatimString); a later one may no longer do that.
  t.comment(`String.prototype fast right after importing ioredis: ${before}`);
  t.equal(after, true);
});

t.test('with the whole service module graph imported too, as `dockflow serve` runs it', async (t) => {
  const { after } = await stringPrototypeFastAfter(`await import('./src/service.ts');${CONNECT}`);
  t.equal(after, true);
});
