import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
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

const RUNTIME = `
    await import('./src/runtime/string-prototype.ts');`;

t.test('after the runtime module, String.prototype is fast again whatever importing ioredis did to it', async (t) => {
  const { before, after } = await stringPrototypeFastAfter(RUNTIME);
  // Slow before with the ioredis this was written against (its VerbatimString); a later one may no longer do that.
  t.comment(`String.prototype fast right after importing ioredis: ${before}`);
  t.equal(after, true);
});

t.test('and stays fast with the whole service module graph imported after it, as `dockflow serve` runs', async (t) => {
  const { after } = await stringPrototypeFastAfter(`${RUNTIME}
    await import('./src/service.ts');
    const { connectRedis } = await import('./src/store/connect.ts');
    const { default: pino } = await import('pino');
    connectRedis('redis://127.0.0.1:1', pino({ level: 'silent' }), { lazyConnect: true }).disconnect();`);
  t.equal(after, true);
});

t.test('the entry point imports the runtime module before the service', async (t) => {
  const cli = await readFile(join(repoRoot, 'src', 'cli.ts'), 'utf8');
  const runtime = cli.indexOf("import('./runtime/string-prototype.js')");
  t.ok(runtime > 0, 'imported by src/cli.ts');
  t.ok(runtime < cli.indexOf("import('./cli/serve.js')"), 'before the serve command is loaded');
});
