/**
 * End to end with the real kernel: a Docker-like host in network namespaces, scripts/install-iptables-rule.sh run
 * inside it, a real rsyslogd reading the kernel log and forwarding over TCP (octet-counted RFC 5424) to dockflow
 * on 127.0.0.1, and real traffic. Every flow must arrive exactly once (one LOG line per new connection) with the
 * right direction, addresses and ports. Then the same with --nft, and --uninstall must leave the host as it was.
 * Skips where it cannot run (not root, no netns, tools missing).
 *
 * The receiving end is the real `dockflow serve` with its own redis-server, and every flow is read back through
 * `GET /api/flows`; regenerating the fixture files (DOCKFLOW_E2E_SAVE_FIXTURES=1) uses a plain collector instead.
 */
import t, { type Test } from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { isRecord, type Direction, type FlowRecord } from '../../src/record.js';
import { repoRoot, fixture } from '../helpers/paths.js';
import { ADDR, createDockerLikeHost, netnsUnsupported, setSysctl, startReaper, startRsyslog, type Netns } from '../helpers/netns.js';
import { startCollector } from './collector.js';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/index.js';
import { startService } from '../../src/service.js';
import { startRedis } from '../helpers/redis.js';
import { tempDir } from '../helpers/temp.js';

const SCRIPT = join(repoRoot, 'scripts', 'install-iptables-rule.sh');
/** Lines go kernel → rsyslog → TCP; a generous bound for a loaded 2-core CI machine, not a timing assertion. */
const ARRIVAL_TIMEOUT_MS = 30_000;

/** IPv6 in one spelling (the kernel prints it fully expanded). */
const canon = (ip: string | undefined): string | undefined => (ip?.includes(':') ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip);

/** What one connection must produce. Source ports, and ping sizes per phase, make every flow of the run unique. */
interface Flow {
  name: string;
  direction: Direction;
  transport: string;
  source: { ip: string; port?: number };
  destination: { ip: string; port?: number };
  icmpType?: number;
  /** IP packet length, to tell one phase's echo request from the other's. */
  length?: number;
  /** With DOCKFLOW_E2E_SAVE_FIXTURES=1 its line goes to test/fixtures/e2e/observed-[nft-]<fixture>.txt. */
  fixture?: 'ipv6' | 'internal';
}

function matches(rec: FlowRecord, f: Flow): boolean {
  return (
    rec.network.transport === f.transport &&
    canon(rec.source.ip) === canon(f.source.ip) &&
    canon(rec.destination.ip) === canon(f.destination.ip) &&
    (f.source.port === undefined || rec.source.port === f.source.port) &&
    (f.destination.port === undefined || rec.destination.port === f.destination.port) &&
    (f.icmpType === undefined || rec.iptables.icmp?.type === f.icmpType) &&
    (f.length === undefined || rec.iptables.length === f.length)
  );
}

/** Where rsyslog forwards to, and how the test reads back what arrived (this run's prefix only). */
interface ReceivingEnd {
  syslogPort: number;
  flows(): Promise<FlowRecord[]>;
  waitForFlow(what: string, done: (r: FlowRecord) => boolean): Promise<void>;
  /** Frames that were not octet-counted, or lines that did not parse. */
  badFrames(): number;
  /** The raw messages with their records, where the end keeps them (for the fixture files). */
  received?: () => Array<{ message: string; record: FlowRecord }>;
}

async function serviceEnd(t: Test, prefix: string, dir: string): Promise<ReceivingEnd> {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const config = loadConfig({
    file: {
      syslog: { host: '127.0.0.1', udpEnabled: false, tcpPort: 0 },
      http: { port: 0 },
      redis: { url: redis.url },
      store: { spoolDir: join(dir, 'dockflow-spool'), flushIntervalMs: 5 },
      docker: { enabled: false },
      logLevel: 'silent',
    },
  });
  const service = await startService(config, { logger: pino({ level: 'silent' }) });
  t.teardown(() => service.close());
  const api = `http://127.0.0.1:${service.httpAddress().port}/api/flows?prefix=${encodeURIComponent(prefix.trim())}&limit=5000`;
  const flows = async (): Promise<FlowRecord[]> => {
    const out: FlowRecord[] = [];
    for (let cursor: string | null = null; ; ) {
      const res = await fetch(cursor === null ? api : `${api}&cursor=${cursor}`);
      const body = (await res.json()) as { items: FlowRecord[]; next_cursor: string | null };
      out.push(...body.items);
      if (body.next_cursor === null || body.items.length === 0) return out;
      cursor = body.next_cursor;
    }
  };
  return {
    syslogPort: service.syslogAddresses().find((a) => a.transport === 'tcp')!.port,
    flows,
    async waitForFlow(what, done) {
      const deadline = Date.now() + ARRIVAL_TIMEOUT_MS;
      while (!(await flows()).some(done)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    badFrames: () => 0,
  };
}

async function collectorEnd(prefix: string): Promise<ReceivingEnd> {
  const collector = await startCollector();
  t.teardown(() => collector.close());
  const parseOpts = createLineOptions({});
  const received = (): Array<{ message: string; record: FlowRecord }> =>
    collector.messages.flatMap((message) => {
      const record = parseLine(message, parseOpts);
      return isRecord(record) && record.log?.prefix === prefix.trim() ? [{ message, record }] : [];
    });
  return {
    syslogPort: collector.port,
    flows: async () => received().map((r) => r.record),
    waitForFlow: (what, done) => collector.waitFor(what, () => received().some((r) => done(r.record)), ARRIVAL_TIMEOUT_MS),
    badFrames: () => collector.badFrames,
    received,
  };
}

const unsupported = await netnsUnsupported();
if (unsupported !== undefined) {
  t.plan(0, `end-to-end host test skipped: ${unsupported}`);
} else {
  t.test('a Docker-like host: LOG rules from the script, real rsyslog, every flow arrives once', async (t) => {
    // Teardowns run last-registered first; the reaper, disarmed last, covers a process killed before they run.
    const reaper = startReaper();
    t.teardown(() => reaper.disarm());
    t.teardown(setSysctl('net.netfilter.nf_log_all_netns', '1', reaper));
    const dir = tempDir(t, 'e2e');
    reaper.dir(dir);
    const dropinDir = join(dir, 'rsyslog.d');
    mkdirSync(dropinDir);
    const h = await createDockerLikeHost(reaper);
    t.teardown(() => h.destroy());

    // A prefix unique to the run selects this run's lines: imkmsg replays the whole ring buffer at start, and other
    // runs or tests may log at the same time. iptables caps prefixes at 29 characters.
    const prefix = `dfe${randomBytes(3).toString('hex')}: `;

    // --- the receiving end: the real `dockflow serve` (its own Redis), read back through the HTTP API; with
    // DOCKFLOW_E2E_SAVE_FIXTURES=1 a plain collector instead, which keeps the raw frames for the fixture files ---
    const end = process.env.DOCKFLOW_E2E_SAVE_FIXTURES === '1' ? await collectorEnd(prefix) : await serviceEnd(t, prefix, dir);
    const syslogPort = end.syslogPort;
    const flows = (): Promise<FlowRecord[]> => end.flows();
    // ---

    const script = (...args: string[]) => h.host.exec(['bash', SCRIPT, ...args]);
    const forwarding = ['--prefix', prefix, '--host-traffic', '--target', `127.0.0.1:${syslogPort}`, '--rsyslog-dir', dropinDir, '--spool-dir', join(dir, 'spool'), '--no-reload'];
    // Rules, not tables: iptables-nft creates an empty table the first time a command looks at one.
    const ruleset = async () => {
      const rules: Record<string, string> = {};
      for (const cmd of ['iptables', 'ip6tables']) {
        for (const table of ['filter', 'nat']) rules[`${cmd} ${table}`] = (await h.host.exec([cmd, '-t', table, '-S'])).stdout;
      }
      rules.nft = (await h.host.exec(['nft', 'list', 'tables'])).stdout.split('\n').filter((l) => l.includes('dockflow')).join('\n');
      return rules;
    };
    const before = await ruleset();
    const ours = async (cmd: string) => (await h.host.exec([cmd, '-S'])).stdout.split('\n').filter((l) => / --comment "?dockflow"?( |$)/.test(l));

    await t.test('install: DOCKER-USER for IPv4, FORWARD fallback for IPv6, idempotent', async (t) => {
      const first = await script(...forwarding);
      t.match(first.stderr, /IPv6: chain DOCKER-USER does not exist.*using FORWARD/);
      t.notMatch(first.stderr, /IPv4: chain DOCKER-USER/);
      const second = await script(...forwarding);
      t.match(second.stdout, /IPv4: already installed \(5 rules\)/);
      t.match(second.stdout, /IPv6: already installed \(5 rules\)/);
      t.match(second.stdout, /unchanged/);
      const v4 = await ours('iptables');
      const v6 = await ours('ip6tables');
      t.equal(v4.length, 5, 'one forward rule + INPUT and OUTPUT for docker0 and br-+');
      t.equal(v6.length, 5);
      t.equal(v4.filter((l) => l.startsWith('-A DOCKER-USER ')).length, 1);
      t.equal(v6.filter((l) => l.startsWith('-A FORWARD ')).length, 1);
      const dropin = readFileSync(join(dropinDir, '60-dockflow.conf'), 'utf8');
      t.match(dropin, `$msg contains "${prefix}"`);
      t.match(dropin, `port="${syslogPort}"`);
      t.match(dropin, 'TCP_Framing="octet-counted"');
    });

    const rsyslog = await startRsyslog(dir, dropinDir, reaper);
    t.teardown(() => rsyslog.stop());
    await h.serve(h.internet, ['tcp:443', 'udp:53', 'tcp:8443']);
    await h.serve(h.c1, [`tcp:${ADDR.containerPort}`, 'tcp:9000']);
    await h.serve(h.host, ['tcp:7000']);

    /** Makes one phase's traffic and returns the flows it must produce, source ports filled in. */
    const traffic = async (pingPayloadBytes: number): Promise<Flow[]> => {
      const out: Flow[] = [];
      const tcp = async (name: string, ns: Netns, src: string, dst: string, port: number, more: Pick<Flow, 'direction' | 'fixture'>, logged = { ip: dst, port }) => {
        const local = await h.connect(ns, 'tcp', dst, port);
        out.push({ name, transport: 'tcp', source: { ip: src, port: local.port }, destination: logged, ...more });
      };
      await tcp('TCP egress', h.c1, ADDR.c1v4, ADDR.internet4, 443, { direction: 'egress' });
      await tcp('IPv6 TCP egress', h.c1, ADDR.c1v6, ADDR.internet6, 8443, { direction: 'egress', fixture: 'ipv6' });
      const udp = await h.connect(h.c1, 'udp', ADDR.internet4, 53);
      out.push({ name: 'UDP egress', direction: 'egress', transport: 'udp', source: { ip: ADDR.c1v4, port: udp.port }, destination: { ip: ADDR.internet4, port: 53 } });
      const size = String(pingPayloadBytes);
      await h.c1.exec(['ping', '-c', '1', '-W', '5', '-s', size, ADDR.internet4]);
      out.push({ name: 'ICMP echo', direction: 'egress', transport: 'icmp', source: { ip: ADDR.c1v4 }, destination: { ip: ADDR.internet4 }, icmpType: 8, length: pingPayloadBytes + 28 });
      await h.c1.exec(['ping', '-6', '-c', '1', '-W', '5', '-s', size, ADDR.internet6]);
      out.push({ name: 'ICMPv6 echo', direction: 'egress', transport: 'ipv6-icmp', source: { ip: ADDR.c1v6 }, destination: { ip: ADDR.internet6 }, icmpType: 128, length: pingPayloadBytes + 48, fixture: 'ipv6' });
      // The published port: the LOG line shows the container's address and port, never the host's 8080.
      await tcp('inbound to the published port', h.internet, ADDR.internet4, ADDR.uplink4, ADDR.publishedPort, { direction: 'ingress' }, { ip: ADDR.c1v4, port: ADDR.containerPort });
      await tcp('container to container', h.c2, ADDR.c2v4, ADDR.c1v4, 9000, { direction: 'internal', fixture: 'internal' });
      await tcp('IPv6 container to container', h.c2, ADDR.c2v6, ADDR.c1v6, 9000, { direction: 'internal', fixture: 'internal' });
      await tcp('container to host', h.c1, ADDR.c1v4, ADDR.bridge4, 7000, { direction: 'container-to-host' });
      await tcp('host to container', h.host, ADDR.bridge4, ADDR.c1v4, 9000, { direction: 'host-to-container' });
      await tcp('IPv6 host to container', h.host, ADDR.bridge6, ADDR.c1v6, 9000, { direction: 'host-to-container', fixture: 'ipv6' });
      return out;
    };

    /**
     * Runs --check: its datagram is logged after all the phase's traffic, and the kernel log, rsyslog's queue and
     * the TCP connection keep order, so once its line is here every earlier line is too. Then each flow must be
     * there exactly once.
     */
    const verify = async (t: Test, expected: Flow[]): Promise<void> => {
      const check = await script('--check', '--prefix', prefix, '--rsyslog-dir', dropinDir);
      const port = Number(/127\.0\.0\.1:(\d+)/.exec(check.stdout)?.[1]);
      t.ok(port > 0, 'check reports the port of its test datagram');
      t.match(check.stdout, /kernel logged: .*DPT=\d+/, 'check saw its line in the kernel log');
      t.match(check.stdout, `target="127.0.0.1" port="${syslogPort}"`);
      await end.waitForFlow('the --check line', (r) => r.destination.port === port && r.observer?.egress?.interface?.name === 'lo');
      const got = await flows();
      const checkFlow = got.find((r) => r.destination.port === port && r.destination.ip === '127.0.0.1');
      t.equal(checkFlow?.network.direction, 'other', 'the check datagram on lo is neither container side');
      for (const f of expected) {
        const hits = got.filter((r) => matches(r, f));
        t.equal(hits.length, 1, `${f.name}: exactly one line`, { flows: got.length });
        t.equal(hits[0]?.network.direction, f.direction, `${f.name}: ${f.direction}`);
      }
    };

    const saveFixtures = (expected: Flow[], filePrefix: string): void => {
      if (end.received === undefined) return;
      const byFile = new Map<string, string[]>();
      for (const { message, record } of end.received()) {
        const name = expected.find((f) => matches(record, f))?.fixture;
        if (name !== undefined) byFile.set(name, [...(byFile.get(name) ?? []), message]);
      }
      mkdirSync(fixture('e2e'), { recursive: true });
      for (const [name, lines] of byFile) writeFileSync(fixture('e2e', `${filePrefix}${name}.txt`), lines.join('\n') + '\n');
    };

    await t.test('iptables rules: every flow arrives with its direction, addresses and ports', async (t) => {
      const expected = await traffic(56);
      await verify(t, expected);
      t.equal(end.badFrames(), 0, 'every frame was octet-counted');
      saveFixtures(expected, 'observed-');
    });

    await t.test('uninstall leaves exactly the rules that were there before', async (t) => {
      const out = await script('--uninstall', '--rsyslog-dir', dropinDir, '--no-reload');
      t.match(out.stdout, /IPv4: removed 5 rule\(s\)/);
      t.match(out.stdout, /IPv6: removed 5 rule\(s\)/);
      t.same(await ruleset(), before);
      t.throws(() => readFileSync(join(dropinDir, '60-dockflow.conf')), 'the drop-in is gone');
    });

    await t.test('--nft: the same flows through table inet dockflow', async (t) => {
      t.match((await script('--nft', ...forwarding)).stdout, /table inet dockflow installed/);
      t.match((await script('--nft', ...forwarding)).stdout, /unchanged/, 'the drop-in is rewritten identically, so rsyslog needs no restart');
      t.equal((await ruleset()).nft, 'table inet dockflow');
      t.equal((await ours('iptables')).length, 0, 'no iptables rules alongside');
      const expected = await traffic(64);
      await verify(t, expected);
      saveFixtures(expected, 'observed-nft-');
      await script('--uninstall', '--rsyslog-dir', dropinDir, '--no-reload');
      t.same(await ruleset(), before);
    });

    t.equal(rsyslog.output().match(/error/gi) ?? null, null, 'rsyslogd reported no errors');
  });
}
