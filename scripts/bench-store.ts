/**
 * Redis memory per record, all in: the real `dockflow serve` (a child process with its own redis-server) with GeoIP
 * and container attribution (50 containers with compose labels, served by the stand-in Docker Engine API), fed
 * realistic LOG lines over TCP: a few thousand public remotes, TCP/UDP/ICMP, egress/ingress/internal, packet times
 * spread over several hours. Prints `INFO memory` used_memory before and after divided by the records stored, and
 * Redis' CPU (used_cpu_sys + used_cpu_user) per record.
 *
 *   npm run bench:store -- [--records 1000000] [--hours 3] [--remotes 3000] [--variants off,on]
 *                          [--service DIR]   (another build's dist/src/cli.js directory, to compare versions)
 *
 * Variants: `off` stores the flat fields only (the default), `on` keeps each original message too
 * (DOCKFLOW_KEEP_ORIGINAL=true).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { FakeDocker } from '../test/helpers/fake-docker.js';
import { freePort, startRedis, waitForPort, type TestRedis } from '../test/helpers/redis.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: args } = parseArgs({
  options: {
    records: { type: 'string', default: '1000000' },
    hours: { type: 'string', default: '3' },
    remotes: { type: 'string', default: '3000' },
    variants: { type: 'string', default: 'off,on' },
    service: { type: 'string', default: join(root, 'dist', 'src') },
  },
});
const RECORDS = Number(args.records);
const HOURS = Number(args.hours);

/** Deterministic PRNG so two runs send the same lines. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CONTAINERS = Array.from({ length: 50 }, (_, i) => {
  const service = ['web', 'api', 'worker', 'db', 'cache', 'queue', 'mailer', 'search', 'auth', 'cron'][i % 10]!;
  const project = ['shop', 'billing', 'analytics', 'intranet', 'monitoring'][Math.floor(i / 10)]!;
  const n = Math.floor(i / 10) + 1;
  return {
    name: `${project}-${service}-${n}`,
    ip: `172.18.${Math.floor(i / 200)}.${(i % 200) + 2}`,
    mac: `02:42:ac:12:00:${(i + 2).toString(16).padStart(2, '0')}`,
    image: `registry.example.com/${project}/${service}:2.${i % 7}.${i % 3}`,
    labels: {
      'com.docker.compose.project': project,
      'com.docker.compose.service': service,
      'com.docker.compose.container-number': String(n),
      'com.docker.compose.oneoff': 'False',
      'com.docker.compose.version': '2.29.7',
      'com.docker.compose.project.working_dir': `/srv/${project}`,
      'com.docker.compose.project.config_files': `/srv/${project}/compose.yaml`,
      'com.docker.compose.config-hash': (i * 2654435761).toString(16).padStart(8, '0').repeat(8),
      'com.docker.compose.image': `sha256:${(i * 40503).toString(16).padStart(8, '0').repeat(8)}`,
      'com.docker.compose.depends_on': '',
      'org.opencontainers.image.source': `https://git.example.com/${project}/${service}`,
    },
  };
});

/** Public addresses in ranges that GeoIP databases place in many countries and ASes. */
function remotes(n: number, rand: () => number): string[] {
  const firsts = [1, 2, 3, 5, 8, 13, 20, 23, 31, 34, 35, 37, 40, 41, 45, 46, 52, 54, 62, 64, 66, 69, 74, 77, 78, 80, 81, 82, 85, 87, 89, 91, 93, 95, 104, 108, 109, 128, 130, 138, 140, 142, 146, 151, 152, 157, 160, 170, 176, 178, 185, 188, 192, 193, 194, 195, 196, 199, 200, 201, 202, 203, 204, 207, 208, 209, 210, 211, 212, 213, 216, 217];
  const out = new Set<string>();
  while (out.size < n) out.add(`${firsts[Math.floor(rand() * firsts.length)]}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`);
  return [...out];
}

const PORTS = [443, 443, 443, 443, 80, 53, 53, 123, 25, 587, 5432, 6379, 9200, 8080, 22, 993];

/** The LOG lines: RFC 5424 frames with the packet time, in time order. */
function* lines(n: number): Generator<string> {
  const rand = rng(42);
  const skew = (k: number): number => Math.floor(k * rand() ** 3);
  const remote = remotes(Number(args.remotes), rand);
  const end = Date.now() - 60_000;
  const start = end - HOURS * 3_600_000;
  for (let i = 0; i < n; i++) {
    const t = new Date(start + ((end - start) * i) / n).toISOString();
    const c = CONTAINERS[skew(CONTAINERS.length)]!;
    const r = remote[skew(remote.length)]!;
    const roll = rand();
    const kind = roll < 0.7 ? 'egress' : roll < 0.9 ? 'ingress' : 'internal';
    let port = PORTS[Math.floor(rand() * PORTS.length)]!;
    const proto = rand() < 0.03 ? 'ICMP' : port === 53 || port === 123 ? 'UDP' : 'TCP';
    const eph = 32768 + Math.floor(rand() * 28000);
    let src: string;
    let dst: string;
    let inIf: string;
    let outIf: string;
    let sp = eph;
    if (kind === 'egress') [src, dst, inIf, outIf] = [c.ip, r, 'docker0', 'eth0'];
    else if (kind === 'ingress') {
      [src, dst, inIf, outIf] = [r, c.ip, 'eth0', 'docker0'];
      port = [443, 80, 8080][Math.floor(rand() * 3)]!;
    } else {
      const peer = CONTAINERS[skew(CONTAINERS.length)]!;
      [src, dst, inIf, outIf] = [c.ip, peer.ip, 'docker0', 'docker0'];
      port = [5432, 6379, 9200, 8080][Math.floor(rand() * 4)]!;
    }
    if (kind !== 'ingress' && rand() < 0.3) sp = eph; // new connections from ephemeral ports
    const l4 =
      proto === 'TCP'
        ? `PROTO=TCP SPT=${sp} DPT=${port} WINDOW=64240 RES=0x00 ${rand() < 0.3 ? 'SYN' : 'ACK PSH'} URGP=0`
        : proto === 'UDP'
          ? `PROTO=UDP SPT=${sp} DPT=${port} LEN=${40 + Math.floor(rand() * 400)}`
          : `PROTO=ICMP TYPE=8 CODE=0 ID=${Math.floor(rand() * 65535)} SEQ=${Math.floor(rand() * 100)}`;
    yield `<4>1 ${t} docker-host-1 kernel - - - dockflow: IN=${inIf} OUT=${outIf} PHYSIN=veth${c.ip.split('.')[3]} MAC=02:42:5d:3c:1a:7e:${c.mac.slice(6)}:08:00 SRC=${src} DST=${dst} LEN=${60 + Math.floor(rand() * 1400)} TOS=0x00 PREC=0x00 TTL=63 ID=${Math.floor(rand() * 65535)} DF ${l4} \n`;
  }
}

async function info(redis: Redis): Promise<{ memory: number; cpu: number }> {
  const text = await redis.info();
  const num = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1]);
  return { memory: num('used_memory'), cpu: num('used_cpu_sys') + num('used_cpu_user') };
}

async function serviceCounter(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[1]);
  return sum;
}

async function run(variant: string, docker: FakeDocker): Promise<void> {
  const server: TestRedis = await startRedis();
  const redis = new Redis(server.url);
  const syslogPort = await freePort();
  const httpPort = await freePort();
  let child: ChildProcess | undefined;
  try {
    child = spawn(process.execPath, [join(args.service!, 'cli.js'), 'serve'], {
      env: {
        ...process.env,
        REDIS_URL: server.url,
        SYSLOG_HOST: '127.0.0.1',
        SYSLOG_TCP_PORT: String(syslogPort),
        SYSLOG_UDP_PORT: String(syslogPort),
        HTTP_PORT: String(httpPort),
        DOCKFLOW_SPOOL_DIR: join(server.dir, 'spool'),
        LOG_LEVEL: 'warn',
        GEOIP: 'true',
        DOCKFLOW_DOCKER: 'true',
        DOCKER_HOST: docker.unixHost,
        DOCKFLOW_KEEP_ORIGINAL: variant === 'on' ? 'true' : 'false',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    await waitForPort(syslogPort, 30_000);
    await waitForPort(httpPort, 30_000);
    await new Promise((r) => setTimeout(r, 1000));
    const before = await info(redis);
    const s = net.connect(syslogPort, '127.0.0.1');
    await once(s, 'connect');
    let chunk = '';
    let sent = 0;
    for (const line of lines(RECORDS)) {
      chunk += line;
      sent++;
      if (chunk.length > 256 * 1024) {
        if (!s.write(chunk)) await once(s, 'drain');
        chunk = '';
      }
    }
    s.end(chunk);
    await once(s, 'close');
    let stored = 0;
    let last = -1;
    let still = 0;
    for (;;) {
      stored = await serviceCounter(httpPort, 'dockflow_store_records_stored_total');
      if (stored >= sent) break;
      still = stored === last ? still + 1 : 0;
      if (still > 100) break;
      last = stored;
      await new Promise((r) => setTimeout(r, 100));
    }
    const after = await info(redis);
    // Where the memory is, by key family (MEMORY USAGE of every key, sampled in full).
    const families = new Map<string, number>();
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'COUNT', 1000);
      cursor = next;
      const pl = redis.pipeline();
      for (const k of found) pl.call('MEMORY', 'USAGE', k, 'SAMPLES', '0');
      const sizes = (await pl.exec()) ?? [];
      found.forEach((k, i) => {
        const family = k.replace(/\{\d+\.[^}]+\}/, '{part}').replace(/:r:([a-z])\|.*/, ':r:$1').replace(/:([fl]):[0-9a-f]+$/, ':$1').replace(/:(flows|ix|inv|top|reg):.*/, ':$1');
        families.set(family, (families.get(family) ?? 0) + Number(sizes[i]?.[1] ?? 0));
      });
    } while (cursor !== '0');
    const perRecord = (after.memory - before.memory) / stored;
    const cpuUs = ((after.cpu - before.cpu) / stored) * 1e6;
    console.log(
      `original message ${variant === 'on' ? 'kept' : 'off'}: ${stored.toLocaleString('en-US')} of ${sent.toLocaleString('en-US')} records stored; ` +
        `Redis memory ${Math.round(perRecord)} B/record all in (used_memory ${((after.memory - before.memory) / 2 ** 20).toFixed(0)} MiB); ` +
        `Redis CPU ${cpuUs.toFixed(2)} µs/record`,
    );
    const rows = [...families].sort((a, b) => b[1] - a[1]);
    console.log(`  by key family (MEMORY USAGE, B/record): ${rows.map(([f, b]) => `${f} ${(b / stored).toFixed(1)}`).join(', ')}`);
  } finally {
    child?.kill('SIGTERM');
    if (child) await once(child, 'exit');
    redis.disconnect();
    await server.stop();
  }
}

const docker = await FakeDocker.start();
for (const c of CONTAINERS) {
  docker.run({ name: c.name, image: c.image, labels: c.labels, networks: { bridge: { ip: c.ip, mac: c.mac } } }, Date.parse('2026-01-01T00:00:00Z'));
}
console.log(`${RECORDS.toLocaleString('en-US')} records over ${HOURS} h, ${CONTAINERS.length} containers, ${args.remotes} remotes; service ${args.service}`);
for (const variant of args.variants!.split(',')) await run(variant, docker);
await docker.dispose();
