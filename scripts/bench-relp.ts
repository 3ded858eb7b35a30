/**
 * RELP throughput with a real rsyslog: rsyslogd reads the 50,000-line burst (real rsyslog lines) with imfile and sends
 * it with omrelp to `dockflow serve` (a child process with its own redis-server); the rate is lines stored per second
 * from the moment the file is written to the moment the last record is in Redis. The same with omfwd over plain TCP
 * (octet-counted), for comparison. rsyslogd, redis-server and dockflow share the machine.
 *
 *   npm run bench:relp -- [--runs 3] [--window 128]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { repoRoot } from '../test/helpers/paths.js';
import { freePort, startRedis } from '../test/helpers/redis.js';
import { storedCount } from '../test/helpers/streams.js';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '3' }, window: { type: 'string', default: '128' } } });
const lines = gunzipSync(readFileSync(join(repoRoot, 'test', 'fixtures', 'bench', 'burst-5000.rsyslog-rfc5424-tcp-lf.bin.gz')))
  .toString('utf8')
  .split('\n')
  .filter((l) => l !== '');

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

async function run(transport: 'relp' | 'tcp'): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'dockflow-bench-relp-'));
  const redis = await startRedis();
  const client = new Redis(redis.url);
  const [port, httpPort] = [await freePort(), await freePort()];
  const service = spawn(process.execPath, ['--import', '@tapjs/typescript/import', 'src/cli.ts', 'serve'], {
    cwd: repoRoot,
    env: {
      ...process.env,
      TS_NODE_TRANSPILE_ONLY: '1',
      LOG_LEVEL: 'warn',
      REDIS_URL: redis.url,
      SYSLOG_HOST: '127.0.0.1',
      SYSLOG_UDP: 'false',
      SYSLOG_TCP: transport === 'tcp' ? 'true' : 'false',
      SYSLOG_TCP_PORT: String(port),
      SYSLOG_RELP: transport === 'relp' ? 'true' : 'false',
      SYSLOG_RELP_PORT: String(port),
      HTTP_PORT: String(httpPort),
      DOCKFLOW_SPOOL_DIR: join(dir, 'spool'),
      DOCKFLOW_DOCKER: 'false',
      GEOIP: 'false',
    },
    stdio: 'ignore',
  });
  for (;;) {
    const up = await fetch(`http://127.0.0.1:${httpPort}/healthz`).then(
      () => true,
      () => false,
    );
    if (up) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const input = join(dir, 'in.log');
  writeFileSync(input, '');
  const action =
    transport === 'relp'
      ? `action(type="omrelp" target="127.0.0.1" port="${port}" template="raw" windowSize="${args.window}" action.resumeRetryCount="-1")`
      : `action(type="omfwd" target="127.0.0.1" port="${port}" protocol="tcp" TCP_Framing="octet-counted" template="raw" action.resumeRetryCount="-1")`;
  const conf = join(dir, 'rsyslog.conf');
  writeFileSync(
    conf,
    [
      `global(workDirectory="${dir}")`,
      'module(load="imfile")',
      ...(transport === 'relp' ? ['module(load="omrelp")'] : []),
      'template(name="raw" type="string" string="%rawmsg%")',
      `input(type="imfile" file="${input}" tag="bench" ruleset="send")`,
      `ruleset(name="send") { ${action} }`,
    ].join('\n'),
  );
  const rsyslog = spawn('rsyslogd', ['-n', '-f', conf, '-i', join(dir, 'pid')], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 1000));
  const started = process.hrtime.bigint();
  appendFileSync(input, lines.join('\n') + '\n');
  while ((await storedCount(client)) < lines.length) await new Promise((r) => setTimeout(r, 50));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await stop(rsyslog);
  await stop(service);
  client.disconnect();
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
  return lines.length / seconds;
}

const model = spawnSync('sh', ['-c', "lscpu | grep 'Model name'"], { encoding: 'utf8' }).stdout.trim();
console.log(`${model}; ${lines.length} lines per run; omrelp windowSize ${args.window}`);
const rates: Record<string, number[]> = { relp: [], tcp: [] };
for (let i = 0; i < Number(args.runs); i++) {
  for (const transport of ['relp', 'tcp'] as const) {
    const rate = await run(transport);
    rates[transport]!.push(rate);
    console.log(`run ${i + 1} ${transport}: ${Math.round(rate)} lines/s`);
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [transport, xs] of Object.entries(rates)) console.log(`${transport}: median ${Math.round(median(xs))} lines/s (${xs.map(Math.round).join(', ')})`);
