/**
 * Cost of the embedded AS data (@ip-location-db/asn): converting the CSVs into the table file (first start), reading
 * the table (every later start, in the background), the resident memory it adds, and lookups per second.
 *
 *   npm run bench:asn              (builds, then runs dist/scripts/bench-asn.js; run with --expose-gc for RSS)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ASN_TABLE_FILE, convertAsnCsv, embeddedAsnSource, readAsnTable } from '../src/enrich/asn-table.js';

const gc = (globalThis as { gc?: () => void }).gc;

function rssMb(): number {
  gc?.();
  return process.memoryUsage().rss / 1e6;
}

/** In a fresh process: RSS before and after reading the table, and the read time. */
async function measureRead(path: string, version: string): Promise<void> {
  const before = rssMb();
  const t = performance.now();
  const table = await readAsnTable(path, version);
  const readMs = performance.now() - t;
  table?.lookup('8.8.8.8');
  const after = rssMb();
  if (table === undefined) throw new Error('table does not read back');
  console.log(`read table (fresh process): ${readMs.toFixed(1)} ms; RSS ${before.toFixed(1)} → ${after.toFixed(1)} MB (+${(after - before).toFixed(1)} MB)`);
  const ips = Array.from({ length: 200_000 }, (_, i) => `${((i * 7919) % 223) + 1}.${i % 256}.${(i >> 8) % 256}.${(i * 13) % 256}`);
  for (const ip of ips.slice(0, 20_000)) table.lookup(ip);
  const t2 = performance.now();
  let hits = 0;
  for (const ip of ips) if (table.lookup(ip) !== undefined) hits++;
  const ms = performance.now() - t2;
  console.log(`lookups: ${Math.round(ips.length / (ms / 1000)).toLocaleString('en-US')}/s (${hits} of ${ips.length} random IPv4 found)`);
}

async function main(): Promise<void> {
  const readAt = process.argv.indexOf('--read');
  if (readAt > 0) return measureRead(process.argv[readAt + 1]!, process.argv[readAt + 2]!);
  const source = embeddedAsnSource();
  if (source === undefined) throw new Error('@ip-location-db/asn is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'dockflow-bench-asn-'));
  try {
    const path = join(dir, ASN_TABLE_FILE);
    let t = performance.now();
    const converted = await convertAsnCsv(source, path);
    const convertMs = performance.now() - t;
    console.log(`node ${process.version}, @ip-location-db/asn ${source.version}${gc ? '' : ' (no --expose-gc: RSS figures include garbage)'}`);
    console.log(`convert CSV → table: ${convertMs.toFixed(0)} ms, ${(converted.bytes / 1e6).toFixed(1)} MB, ${converted.v4Ranges} IPv4 + ${converted.v6Ranges} IPv6 ranges`);
    // Reading is what every later start does: measured in a process of its own, so conversion garbage is not counted.
    process.stdout.write(execFileSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--read', path, source.version]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
