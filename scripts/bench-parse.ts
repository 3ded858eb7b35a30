/**
 * Parsing throughput on the burst corpus (5,000 TCP connections, 50,000 LOG lines per format): envelope alone, and
 * envelope + netfilter into records (`parseLine`, what the service and `dockflow parse` run per line). One core,
 * in-process, no I/O in the timed loop. Prints the median of several runs per input format.
 *
 *   npm run bench:parse                       (builds, then runs dist/scripts/bench-parse.js)
 *   node dist/scripts/bench-parse.js --runs 5 --passes 3
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { createLineOptions, parseLine } from '../src/parse/line.js';
import { parseEnvelope } from '../src/parse/syslog.js';

const INPUTS = [
  { format: 'rfc3164 frames', file: 'burst-5000.rsyslog-rfc3164-tcp-lf.bin.gz' },
  { format: 'rfc5424 frames', file: 'burst-5000.rsyslog-rfc5424-tcp-lf.bin.gz' },
  { format: 'kmsg records', file: 'burst-5000.kmsg.txt.gz' },
];

/** The fixtures sit at the repo root whether this runs from scripts/ (TS loader) or dist/scripts/ (built). */
function benchDir(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const candidate = join(dir, 'test', 'fixtures', 'bench');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('test/fixtures/bench not found above this script');
}

/**
 * The baseline measured beside dockflow in the same run: the naive scanner the project's calibration figure describes
 * (split on spaces, one object of KEY=VALUE strings per line, no envelope, no types, no record).
 */
function naiveKeyValue(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const token of line.split(' ')) {
    const eq = token.indexOf('=');
    if (eq > 0) out[token.slice(0, eq)] = token.slice(eq + 1);
  }
  return out;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

/** Lines per second of `fn` over all lines, `passes` times per run; median of `runs`. */
function measure(lines: string[], runs: number, passes: number, fn: (line: string) => unknown): number {
  const rates: number[] = [];
  let sink = 0;
  for (let r = 0; r < runs; r++) {
    const start = process.hrtime.bigint();
    for (let p = 0; p < passes; p++) for (const line of lines) if (fn(line) !== undefined) sink++;
    const ns = Number(process.hrtime.bigint() - start);
    rates.push((lines.length * passes) / (ns / 1e9));
  }
  if (sink === 0) throw new Error('nothing parsed');
  return median(rates);
}

function main(): void {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, passes: { type: 'string', default: '3' } } });
  const runs = Number(values.runs);
  const passes = Number(values.passes);
  const dir = benchDir();
  console.log(`node ${process.version}, ${runs} runs × ${passes} passes, median; one core\n`);
  console.log('format           lines   envelope lines/s   parseLine lines/s   ns/line   records   naive k=v lines/s   parseLine/naive');
  for (const input of INPUTS) {
    const lines = gunzipSync(readFileSync(join(dir, input.file))).toString('utf8').split('\n').filter((l) => l !== '');
    // A fixed reference inside the capture keeps year inference on its memoised path, as in a live stream.
    const opts = createLineOptions({ referenceMs: Date.parse('2026-11-27T07:00:00Z') });
    let records = 0;
    for (const line of lines) if (typeof parseLine(line, opts) !== 'string') records++;
    const envelope = (line: string): unknown => parseEnvelope(line, opts, undefined, opts.envelope);
    const full = (line: string): unknown => parseLine(line, opts);
    // Warm-up: let the JIT settle on both paths before timing.
    measure(lines, 2, 1, envelope);
    measure(lines, 2, 1, full);
    measure(lines, 2, 1, naiveKeyValue);
    const envRate = measure(lines, runs, passes, envelope);
    const rate = measure(lines, runs, passes, full);
    const naive = measure(lines, runs, passes, naiveKeyValue);
    const fmt = (n: number, w: number): string => Math.round(n).toLocaleString('en-US').padStart(w);
    console.log(
      `${input.format.padEnd(15)} ${String(lines.length).padStart(6)}   ${fmt(envRate, 16)}   ${fmt(rate, 17)}   ${(1e9 / rate).toFixed(0).padStart(7)}   ${String(records).padStart(7)}   ${fmt(naive, 17)}   ${(rate / naive).toFixed(2).padStart(15)}`,
    );
  }
}

main();
