/**
 * A Docker-like host built from network namespaces, for end-to-end tests with the real kernel: a host namespace with
 * a `docker0` bridge, two "containers" on veth pairs into it, an "internet" namespace behind MASQUERADE on the
 * host's uplink, and a published port (DNAT host:8080 → c1:80). Every address lives inside namespaces created here;
 * the host namespace's default route points at the internet namespace, which has no route further, so nothing can
 * reach the machine's own network.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { promisify } from 'node:util';
import type { Socket } from 'node:net';

const execFileAsync = promisify(execFile);

export interface ExecResult {
  stdout: string;
  stderr: string;
}

/** Runs a command; a non-zero exit rejects with its stderr in the message. */
export async function sh(argv: readonly string[], input?: string): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('sh: empty command');
  if (input === undefined) {
    try {
      const { stdout, stderr } = await execFileAsync(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
      return { stdout, stderr };
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; code?: number };
      throw new Error(`${argv.join(' ')} failed (exit ${e.code ?? '?'}): ${e.stderr ?? ''}${e.stdout ?? ''}`, { cause: err });
    }
  }
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(input);
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`${argv.join(' ')} failed (exit ${code ?? '?'}): ${stderr}${stdout}`);
  return { stdout, stderr };
}

/** Tools the Docker-like host and the rule script need, with the Debian package that brings each. */
export const NETNS_TOOLS: Readonly<Record<string, string>> = {
  ip: 'iproute2',
  iptables: 'iptables',
  ip6tables: 'iptables',
  nft: 'nftables',
  rsyslogd: 'rsyslog',
  ping: 'iputils-ping',
};

async function onPath(tool: string): Promise<boolean> {
  try {
    await execFileAsync('sh', ['-c', `command -v "$1"`, 'sh', tool]);
    return true;
  } catch {
    return false;
  }
}

/** Why namespace end-to-end tests cannot run on this machine, or `undefined` when they can. */
export async function netnsUnsupported(tools: readonly string[] = Object.keys(NETNS_TOOLS)): Promise<string | undefined> {
  if (process.platform !== 'linux') return `needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, iptables, /dev/kmsg)';
  for (const tool of tools) {
    if (!(await onPath(tool))) return `${tool} is not installed (apt-get install ${NETNS_TOOLS[tool] ?? tool})`;
  }
  if (!existsSync('/proc/sys/net/netfilter/nf_log_all_netns')) return 'the kernel has no net.netfilter.nf_log_all_netns';
  const probe = `dfprobe-${randomBytes(3).toString('hex')}`;
  try {
    await sh(['ip', 'netns', 'add', probe]);
    await sh(['ip', 'netns', 'del', probe]);
  } catch (err) {
    return `ip netns does not work here: ${(err as Error).message.split('\n')[0]}`;
  }
  return undefined;
}

/**
 * Undoes the test's changes to the machine when the test process dies without doing it (a hang killed by tap's
 * timeout with SIGKILL, a crash): a detached shell that outlives it and is told, line by line over a pipe, what to
 * undo. Reading EOF means the test process is gone; `disarm()` after a normal teardown tells it to exit quietly.
 */
export interface Reaper {
  netns(name: string): void;
  pid(pid: number | undefined): void;
  sysctl(name: string, oldValue: string): void;
  dir(path: string): void;
  disarm(): void;
}

const REAPER = `
pids=() nss=() sysctls=() dirs=()
while read -r kind arg; do
  case $kind in
    ns) nss+=("$arg") ;; pid) pids+=("$arg") ;; sysctl) sysctls+=("$arg") ;; dir) dirs+=("$arg") ;;
    done) exit 0 ;;
  esac
done
for p in "\${pids[@]}"; do kill "$p" 2>/dev/null; done
sleep 1
for p in "\${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
for n in "\${nss[@]}"; do ip netns del "$n" 2>/dev/null; done
for s in "\${sysctls[@]}"; do sysctl -qw "$s"; done
for d in "\${dirs[@]}"; do rm -rf -- "$d"; done
`;

export function startReaper(): Reaper {
  const child = spawn('bash', ['-c', REAPER], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  child.unref();
  // A child's stdin pipe is a net.Socket. It must not keep the test process alive; its write end closes when the
  // process exits, however it exits.
  const stdin = child.stdin as Socket | null;
  stdin?.unref();
  const send = (line: string): void => void stdin?.write(`${line}\n`);
  return {
    netns: (name) => send(`ns ${name}`),
    pid: (pid) => pid !== undefined && send(`pid ${pid}`),
    sysctl: (name, oldValue) => send(`sysctl ${name}=${oldValue}`),
    dir: (path) => send(`dir ${path}`),
    disarm: () => stdin?.end('done\n'),
  };
}

/** Sets a global sysctl and returns a function that puts the old value back (the reaper does it if we die). */
export function setSysctl(name: string, value: string, reaper: Reaper): () => void {
  const path = `/proc/sys/${name.replaceAll('.', '/')}`;
  const old = readFileSync(path, 'utf8').trim();
  reaper.sysctl(name, old);
  writeFileSync(path, value);
  return () => writeFileSync(path, old);
}

/** One network namespace, by name. */
export class Netns {
  constructor(readonly name: string) {}

  exec(argv: readonly string[], input?: string): Promise<ExecResult> {
    return sh(['ip', 'netns', 'exec', this.name, ...argv], input);
  }

  /** A long-running process inside the namespace (`ip netns exec` execs it, so the PID is the program's). */
  spawn(argv: readonly string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  }
}

/** The addresses of the layout, as the kernel's LOG lines will show them (IPv6 compressed here). */
export const ADDR = {
  bridge4: '172.17.0.1',
  bridge6: 'fd00:17::1',
  c1v4: '172.17.0.2',
  c1v6: 'fd00:17::2',
  c2v4: '172.17.0.3',
  c2v6: 'fd00:17::3',
  uplink4: '198.51.100.1',
  uplink6: '2001:db8::1',
  internet4: '198.51.100.2',
  internet6: '2001:db8::2',
  publishedPort: 8080,
  containerPort: 80,
} as const;

/**
 * A tiny network agent run inside namespaces with `node -e`: `serve tcp:P udp:P …` answers every TCP connection and
 * UDP datagram (dual-stack) and prints `ready`; `tcp HOST PORT` / `udp HOST PORT` make one exchange and print the
 * local address and port as JSON, so the test knows the exact source port of each flow.
 */
const AGENT = `
import net from 'node:net';
import dgram from 'node:dgram';
const [mode, ...args] = process.argv.slice(1);
const fail = (msg) => { console.error(msg); process.exit(2); };
if (mode !== 'serve') setTimeout(() => fail('timeout'), 5000).unref();
if (mode === 'serve') {
  let pending = args.length;
  const up = () => { if (--pending === 0) console.log('ready'); };
  for (const spec of args) {
    const [proto, port] = spec.split(':');
    if (proto === 'tcp') {
      net.createServer((s) => { s.on('error', () => {}); s.once('data', () => s.end('ok\\n')); })
        .listen({ port: Number(port), host: '::', ipv6Only: false }, up);
    } else {
      const u = dgram.createSocket({ type: 'udp6', ipv6Only: false });
      u.on('message', (m, r) => u.send('ok\\n', r.port, r.address));
      u.bind(Number(port), '::', up);
    }
  }
} else if (mode === 'tcp') {
  const s = net.connect({ host: args[0], port: Number(args[1]) });
  s.on('error', (e) => fail(String(e)));
  s.on('connect', () => s.write('hello\\n'));
  s.once('data', () => { console.log(JSON.stringify({ address: s.localAddress, port: s.localPort })); s.destroy(); process.exit(0); });
} else if (mode === 'udp') {
  const u = dgram.createSocket(net.isIPv6(args[0]) ? 'udp6' : 'udp4');
  u.on('error', (e) => fail(String(e)));
  u.on('message', () => { console.log(JSON.stringify({ address: '', port: u.address().port })); process.exit(0); });
  u.send('hello\\n', Number(args[1]), args[0]);
} else fail('unknown mode ' + mode);
`;

export interface Endpoint {
  address: string;
  port: number;
}

export interface DockerLikeHost {
  /** Random per run, part of every namespace name. */
  readonly suffix: string;
  readonly host: Netns;
  readonly c1: Netns;
  readonly c2: Netns;
  readonly internet: Netns;
  /** Starts the agent's servers in a namespace; resolves once they listen. Stopped by destroy(). */
  serve(ns: Netns, specs: readonly string[]): Promise<void>;
  /** One TCP or UDP exchange from a namespace; resolves with the client's local address and port. */
  connect(ns: Netns, proto: 'tcp' | 'udp', host: string, port: number): Promise<Endpoint>;
  /** Kills what it started, deletes the namespaces. Safe to call twice. */
  destroy(): Promise<void>;
}

const nodeArgv = (args: readonly string[]): string[] => [process.execPath, '--input-type=module', '-e', AGENT, ...args];

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

/** Builds the layout. On any failure it removes what it already made before rejecting. */
export async function createDockerLikeHost(reaper: Reaper): Promise<DockerLikeHost> {
  const suffix = randomBytes(3).toString('hex');
  const host = new Netns(`dfe-${suffix}-host`);
  const c1 = new Netns(`dfe-${suffix}-c1`);
  const c2 = new Netns(`dfe-${suffix}-c2`);
  const internet = new Netns(`dfe-${suffix}-inet`);
  const all = [host, c1, c2, internet];
  const children: ChildProcess[] = [];
  let destroyed = false;

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await Promise.all(children.map(stopChild));
    for (const ns of all) await sh(['ip', 'netns', 'del', ns.name]).catch(() => undefined);
  };

  const H = (...argv: string[]) => host.exec(argv);
  try {
    for (const ns of all) {
      reaper.netns(ns.name);
      await sh(['ip', 'netns', 'add', ns.name]);
      await ns.exec(['ip', 'link', 'set', 'lo', 'up']);
    }
    // Names inside a namespace are its own, so they can be Docker's usual ones.
    await H('ip', 'link', 'add', 'docker0', 'type', 'bridge');
    await H('ip', 'addr', 'add', `${ADDR.bridge4}/16`, 'dev', 'docker0');
    await H('ip', 'addr', 'add', `${ADDR.bridge6}/64`, 'dev', 'docker0', 'nodad');
    await H('ip', 'link', 'set', 'docker0', 'up');
    const containers: Array<[Netns, string, string, string]> = [
      [c1, 'vethc1', ADDR.c1v4, ADDR.c1v6],
      [c2, 'vethc2', ADDR.c2v4, ADDR.c2v6],
    ];
    for (const [ns, veth, v4, v6] of containers) {
      await H('ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name);
      await H('ip', 'link', 'set', veth, 'master', 'docker0');
      await H('ip', 'link', 'set', veth, 'up');
      await ns.exec(['ip', 'addr', 'add', `${v4}/16`, 'dev', 'eth0']);
      await ns.exec(['ip', 'addr', 'add', `${v6}/64`, 'dev', 'eth0', 'nodad']);
      await ns.exec(['ip', 'link', 'set', 'eth0', 'up']);
      await ns.exec(['ip', 'route', 'add', 'default', 'via', ADDR.bridge4]);
      await ns.exec(['ip', '-6', 'route', 'add', 'default', 'via', ADDR.bridge6]);
    }
    await H('ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', internet.name);
    await H('ip', 'addr', 'add', `${ADDR.uplink4}/24`, 'dev', 'eth0');
    await H('ip', 'addr', 'add', `${ADDR.uplink6}/64`, 'dev', 'eth0', 'nodad');
    await H('ip', 'link', 'set', 'eth0', 'up');
    await H('ip', 'route', 'add', 'default', 'via', ADDR.internet4);
    await H('ip', '-6', 'route', 'add', 'default', 'via', ADDR.internet6);
    await internet.exec(['ip', 'addr', 'add', `${ADDR.internet4}/24`, 'dev', 'eth0']);
    await internet.exec(['ip', 'addr', 'add', `${ADDR.internet6}/64`, 'dev', 'eth0', 'nodad']);
    await internet.exec(['ip', 'link', 'set', 'eth0', 'up']);

    // Docker needs br_netfilter so that bridged (container-to-container) packets pass iptables; it is per namespace.
    for (const key of [
      'net.ipv4.ip_forward=1',
      'net.ipv6.conf.all.forwarding=1',
      'net.bridge.bridge-nf-call-iptables=1',
      'net.bridge.bridge-nf-call-ip6tables=1',
    ]) {
      await H('sysctl', '-qw', key);
    }
    // What Docker installs, reduced: DOCKER-USER first in FORWARD, a DROP policy with accepts for container traffic,
    // MASQUERADE out of the bridge and a DNAT for the published port. IPv6 is a Docker without ip6tables support
    // (no DOCKER-USER there), so the script's FORWARD fallback runs too.
    await host.exec(
      ['iptables-restore'],
      [
        '*nat',
        ':PREROUTING ACCEPT [0:0]',
        ':POSTROUTING ACCEPT [0:0]',
        `-A PREROUTING -d ${ADDR.uplink4}/32 -p tcp --dport ${ADDR.publishedPort} -j DNAT --to-destination ${ADDR.c1v4}:${ADDR.containerPort}`,
        '-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE',
        'COMMIT',
        '*filter',
        ':FORWARD DROP [0:0]',
        ':DOCKER-USER - [0:0]',
        '-A FORWARD -j DOCKER-USER',
        '-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        `-A FORWARD -d ${ADDR.c1v4}/32 ! -i docker0 -o docker0 -p tcp --dport ${ADDR.containerPort} -j ACCEPT`,
        '-A FORWARD -i docker0 -j ACCEPT',
        '-A DOCKER-USER -j RETURN',
        'COMMIT',
        '',
      ].join('\n'),
    );
    await host.exec(
      ['ip6tables-restore'],
      ['*nat', ':POSTROUTING ACCEPT [0:0]', '-A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE', 'COMMIT', ''].join('\n'),
    );
  } catch (err) {
    await destroy();
    throw err;
  }

  return {
    suffix,
    host,
    c1,
    c2,
    internet,
    async serve(ns, specs) {
      const child = ns.spawn(nodeArgv(['serve', ...specs]));
      children.push(child);
      reaper.pid(child.pid);
      let out = '';
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      await new Promise<void>((resolve, reject) => {
        child.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('ready')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`agent in ${ns.name} exited (${code}): ${err}`)));
      });
    },
    async connect(ns, proto, hostAddr, port) {
      const { stdout } = await ns.exec(nodeArgv([proto, hostAddr, String(port)]));
      return JSON.parse(stdout) as Endpoint;
    },
    destroy,
  };
}

export interface Rsyslog {
  readonly pid: number;
  /** What rsyslogd printed (its own errors go to stderr when no action takes them). */
  output(): string;
  stop(): Promise<void>;
}

/**
 * A real rsyslogd of the test's own, beside any system one: reads the kernel log with imkmsg and includes the
 * drop-ins of `dropinDir`. It runs in the root namespace, since the kernel log is global. imkmsg replays the whole
 * ring buffer at start, so the drop-in must select the test's lines itself (a prefix unique to the run does).
 */
export async function startRsyslog(dir: string, dropinDir: string, reaper: Reaper): Promise<Rsyslog> {
  const conf = `${dir}/rsyslog.conf`;
  writeFileSync(
    conf,
    [
      `global(workDirectory="${dir}")`,
      'module(load="imkmsg")',
      `include(file="${dropinDir}/*.conf" mode="optional")`,
      '',
    ].join('\n'),
  );
  await sh(['rsyslogd', '-N1', '-f', conf]);
  const child = spawn('rsyslogd', ['-n', '-f', conf, '-i', `${dir}/rsyslogd.pid`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await once(child, 'spawn');
  reaper.pid(child.pid);
  return {
    pid: child.pid ?? -1,
    output: () => out,
    stop: () => stopChild(child),
  };
}
