/**
 * Cost of detections per record: the shipped rules, and 100 rules (the shipped ones plus 92 generated field
 * conditions of the same shapes), over real-shaped records (the burst sample's lines, attributed to a container).
 *
 *   npm run bench:detect -- [--records 200000] [--runs 5] [--only none,fields,shipped,100]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Detector } from '../src/detect/engine.js';
import { loadRulePaths, shippedRulesDir } from '../src/detect/live.js';
import { loadRules } from '../src/detect/rules.js';
import { createLineOptions, parseLine } from '../src/parse/line.js';
import type { FlowRecord } from '../src/record.js';

const { values } = parseArgs({
  options: { records: { type: 'string', default: '200000' }, runs: { type: 'string', default: '5' }, only: { type: 'string', default: 'none,fields,shipped,100' } },
});
const only = new Set(values.only.split(','));
const N = Number(values.records);
const RUNS = Number(values.runs);

const root = join(shippedRulesDir(), '..', '..');
const lines = readFileSync(join(root, 'test', 'fixtures', 'netfilter', 'burst-5000-sample.kmsg.txt'), 'utf8').split('\n').filter(Boolean);
const opts = createLineOptions({});
const base: FlowRecord[] = [];
const CONTAINER = Object.freeze({ id: 'a'.repeat(64), name: 'shop-web-1', image: Object.freeze({ name: 'nginx' }), labels: Object.freeze({ 'com.docker.compose.service': 'web' }), ports: Object.freeze(['80/tcp']), match: 'ip' });
for (const l of lines) {
  const r = parseLine(`<4>Dec  1 10:00:00 h kernel: ${l.slice(l.indexOf(';') + 1)}`, opts, Date.now());
  if (typeof r === 'string') continue;
  r.container = CONTAINER;
  base.push(r);
}
const records = Array.from({ length: Math.min(N, 50_000) }, (_, i) => base[i % base.length]!);

const extraRules = (n: number): string => {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const shape = i % 4;
    const cond =
      shape === 0
        ? `network.direction = egress and destination.port = ${20000 + i}`
        : shape === 1
          ? `remote.ip in (203.${i}.0.0/16, 198.18.${i}.0/24) and network.transport = tcp`
          : shape === 2
            ? `container.labels.app = x${i} and destination.port in (${i}, ${i + 1000}, 7000-7100)`
            : `container.name startswith z${i} or remote.geo.country_iso_code in (XA, XB)`;
    out.push(`- rule: extra-${i}\n  condition: ${cond}`);
  }
  return out.join('\n');
};

function bench(label: string, set: ReturnType<typeof loadRules>): void {
  const results: number[] = [];
  let alerts = 0;
  for (let run = 0; run < RUNS; run++) {
    const d = new Detector({ groupWindowMs: 600_000, maxGroups: 10_000, maxStateKeys: 100_000, onAlert: () => alerts++ });
    d.setRules(set);
    const t0 = process.hrtime.bigint();
    let done = 0;
    const now = Date.now();
    while (done < N) {
      for (let i = 0; i < records.length && done < N; i++, done++) d.observe(records[i]!, now);
    }
    results.push(Number(process.hrtime.bigint() - t0) / N);
  }
  results.sort((a, b) => a - b);
  console.log(`| ${label} | ${set.rules.length} | ${results[Math.floor(results.length / 2)]!.toFixed(0)} | ${results[0]!.toFixed(0)}–${results[results.length - 1]!.toFixed(0)} |`);
}

const shipped = loadRulePaths([shippedRulesDir()]);
const tmp = join(process.env.TMPDIR ?? '/tmp', `dockflow-bench-rules-${process.pid}.yaml`);
const { writeFileSync, unlinkSync, readdirSync } = await import('node:fs');
writeFileSync(tmp, extraRules(100 - shipped.rules.length));
const hundred = loadRules([...readdirSync(shippedRulesDir()).map((f) => join(shippedRulesDir(), f)), tmp]);
unlinkSync(tmp);
console.log(`records: ${N} per run (${base.length} distinct real-shaped records, attributed), runs: ${RUNS}`);
console.log('| rules | count | ns/record (median) | range |');
console.log('|---|---:|---:|---:|');
if (only.has('none')) bench('none (the loop alone)', { rules: [], files: [] });
if (only.has('fields')) bench('shipped, field conditions only', { rules: shipped.rules.filter((r) => r.stateful === undefined), files: shipped.files });
if (only.has('shipped')) bench('shipped', shipped);
if (only.has('100')) bench('100 rules', hundred);
