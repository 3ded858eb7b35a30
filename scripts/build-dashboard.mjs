#!/usr/bin/env node
// Bundles the dashboard (src/dashboard) with esbuild into dist/dashboard: index.html, assets/app.js, assets/app.css.
// Everything it needs (country shapes, projections) comes from npm at build time: the page loads nothing else.
// Usage: node scripts/build-dashboard.mjs [--outdir DIR]
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src', 'dashboard');
const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const outdir = resolve(values.outdir ?? join(root, 'dist', 'dashboard'));

await rm(outdir, { recursive: true, force: true });
await mkdir(join(outdir, 'assets'), { recursive: true });

const result = await build({
  // Fixed names (app.js, app.css): the server lists them as public paths and revalidates them by ETag.
  entryPoints: [
    { in: join(src, 'main.ts'), out: 'app' },
    { in: join(src, 'style.css'), out: 'app' },
  ],
  outdir: join(outdir, 'assets'),
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022', 'chrome111', 'firefox115', 'safari16'],
  platform: 'browser',
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
});
await copyFile(join(src, 'index.html'), join(outdir, 'index.html'));

for (const [file, out] of Object.entries(result.metafile.outputs)) {
  console.log(`${relative(outdir, resolve(root, file)).padEnd(20)} ${(out.bytes / 1024).toFixed(1)} KiB`);
}
