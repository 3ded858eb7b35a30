import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { parseTime } from '../api/filters.js';
import { Detector, type Alert } from '../detect/engine.js';
import { loadRulePaths, rulePaths } from '../detect/live.js';
import { RuleLoadError } from '../detect/rules.js';
import { looksLikeRecord } from '../store/encode.js';

export const HUNT_USAGE = `Usage: dockflow hunt [options] [-]

Runs detection rules over records and prints what would have fired, one alert per line (NDJSON), oldest first.
Reads stored records from Redis (--since/--until), or with "-" NDJSON records from stdin
(dockflow parse FILE | dockflow hunt --rules my.yaml -). State (learning periods, windows) starts empty and
follows the records' own times; repeats are grouped as in the service, each group printed once with its count.

Options:
  --rules PATH       rule file or directory (repeatable; default: the shipped rules)
  --shipped-rules    also load the shipped rules when --rules is given
  --since TIME       from (ISO 8601 or relative: 30d, 12h; default 30d)
  --until TIME       to (default now)
  --redis-url URL    Redis holding the records [REDIS_URL]
  --key-prefix P     prefix of dockflow's keys [DOCKFLOW_KEY_PREFIX] (default dockflow)
  --group-window D   grouping window (default 10m)
  --text             one readable line per alert instead of NDJSON
  -h, --help         show this help

Exit status: 0 nothing fired, 1 something fired, 2 usage or rule error, 3 Redis or input error.
`;

export interface HuntIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
}

function textLine(a: Alert): string {
  const who = a.container_name ?? a.src_ip ?? '?';
  const remote = a.remote_ip !== undefined ? `${a.remote_ip}${a.remote_port !== undefined ? `:${a.remote_port}` : ''}` : '';
  return `${a.time} ${a.severity.padEnd(8)} ${a.rule} ${who} → ${remote} ×${a.count}${a.reason !== undefined ? ` (${a.reason})` : ''}${a.flow !== undefined ? ` [${a.flow}]` : ''}\n`;
}

export async function runHunt(argv: string[], io: HuntIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  let values: Record<string, string | boolean | string[] | undefined>;
  let positionals: string[];
  try {
    const parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        rules: { type: 'string', multiple: true },
        'shipped-rules': { type: 'boolean' },
        since: { type: 'string' },
        until: { type: 'string' },
        'redis-url': { type: 'string' },
        'key-prefix': { type: 'string' },
        'group-window': { type: 'string' },
        text: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    values = parsed.values;
    positionals = parsed.positionals;
  } catch (err) {
    io.stderr.write(`dockflow hunt: ${(err as Error).message}\n\n${HUNT_USAGE}`);
    return 2;
  }
  if (values.help === true) {
    io.stdout.write(HUNT_USAGE);
    return 0;
  }
  if (positionals.length > 1 || (positionals.length === 1 && positionals[0] !== '-')) {
    io.stderr.write(`dockflow hunt: the only input argument is "-" (stdin)\n\n${HUNT_USAGE}`);
    return 2;
  }
  const user = (values.rules as string[] | undefined) ?? [];
  let rules;
  try {
    rules = loadRulePaths(rulePaths({ shipped: user.length === 0 || values['shipped-rules'] === true, rules: user }));
  } catch (err) {
    io.stderr.write(`dockflow hunt: ${err instanceof RuleLoadError ? err.message : String(err)}\n`);
    return 2;
  }
  const { parseDuration } = await import('../detect/rules.js');
  const groupWindowMs = parseDuration((values['group-window'] as string | undefined) ?? '10m');
  if (groupWindowMs === undefined) {
    io.stderr.write('dockflow hunt: --group-window is not a duration (10m, 1h)\n');
    return 2;
  }
  let fired = 0;
  const emit = (a: Alert): void => {
    fired++;
    io.stdout.write(values.text === true ? textLine(a) : `${JSON.stringify(a)}\n`);
  };
  // Each group is printed once, when it closes, with its final count.
  const detector = new Detector({ groupWindowMs, maxGroups: 100_000, maxStateKeys: 1_000_000, onAlert: () => {}, onGroupClosed: emit });
  detector.setRules(rules);
  let lastSweep = -Infinity;
  const observe = (record: Parameters<Detector['observe']>[0], timeMs: number, flow?: string): void => {
    detector.observe(record, timeMs, flow);
    if (timeMs - lastSweep > 1000) {
      detector.sweep(timeMs);
      lastSweep = timeMs;
    }
  };

  if (positionals[0] === '-') {
    let bad = 0;
    const lines = createInterface({ input: io.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.trim() === '') continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        bad++;
        continue;
      }
      if (!looksLikeRecord(v)) {
        bad++;
        continue;
      }
      const t = Date.parse(v['@timestamp']);
      if (!Number.isFinite(t)) {
        bad++;
        continue;
      }
      observe(v, t);
    }
    if (bad > 0) io.stderr.write(`dockflow hunt: ${bad} input lines were not flow records (skipped)\n`);
  } else {
    const url = (values['redis-url'] as string | undefined) ?? io.env.REDIS_URL;
    if (url === undefined) {
      io.stderr.write('dockflow hunt: reading stored records needs --redis-url or REDIS_URL (or "-" to read records from stdin)\n');
      return 2;
    }
    const now = Date.now();
    const sinceMs = parseTime((values.since as string | undefined) ?? '30d', now);
    const untilMs = values.until !== undefined ? parseTime(values.until as string, now) : undefined;
    if (sinceMs === undefined || (values.until !== undefined && untilMs === undefined)) {
      io.stderr.write('dockflow hunt: --since/--until take ISO 8601 or a relative time (30d, 12h)\n');
      return 2;
    }
    const { connectRedis } = await import('../store/connect.js');
    const { storedRecords } = await import('../detect/history.js');
    const { pino } = await import('pino');
    const redis = connectRedis(url, pino({ level: 'silent' }));
    try {
      if (redis.status !== 'ready') await once(redis, 'ready', { signal: AbortSignal.timeout(10_000) });
      const prefix = (values['key-prefix'] as string | undefined) ?? io.env.DOCKFLOW_KEY_PREFIX ?? 'dockflow';
      for await (const s of storedRecords(redis, prefix, { sinceMs, ...(untilMs !== undefined ? { untilMs } : {}) })) observe(s.record, s.timeMs, s.flow);
    } catch (err) {
      io.stderr.write(`dockflow hunt: reading records failed: ${(err as Error).message}\n`);
      return 3;
    } finally {
      redis.disconnect();
    }
  }
  detector.flush();
  io.stderr.write(`dockflow hunt: ${fired} alerts from ${rules.rules.length} rules\n`);
  return fired > 0 ? 1 : 0;
}
