import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, waitForPort } from './redis.js';

const run = promisify(execFile);

export interface ClusterNodeProcess {
  port: number;
  /** `127.0.0.1:<port>`, as the cluster names the node. */
  address: string;
  pid: number;
  dir: string;
  /** SIGKILL: an outage. */
  kill(): Promise<void>;
  readonly running: boolean;
}

export interface TestRedisCluster {
  nodes: ClusterNodeProcess[];
  /** `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…` (every node, as dockflow takes it). */
  url: string;
  /** The node serving `slot` as master now (asked of a running node). */
  masterOf(slot: number): Promise<ClusterNodeProcess>;
  /** Resolves once every running node reports `cluster_state:ok` and one master per slot range. */
  waitOk(timeoutMs?: number): Promise<void>;
  /** Runs redis-cli against one node; resolves with its output. */
  cli(node: ClusterNodeProcess, ...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** One replica per master (six servers) so a killed master's replica can take over. Default false. */
  replicas?: boolean;
  /** `cluster-node-timeout`: how soon a dead master is failed over. Default 1000 ms. */
  nodeTimeoutMs?: number;
}

/**
 * A real Redis Cluster on loopback: three masters (and optionally a replica each) from the Debian `redis-server`, each
 * on a free port in a temporary directory of its own, joined with `redis-cli --cluster create`. stop() kills every
 * server by PID and removes the directories.
 */
export async function startRedisCluster(opts: ClusterOptions = {}): Promise<TestRedisCluster> {
  const count = opts.replicas ? 6 : 3;
  const root = mkdtempSync(join(tmpdir(), 'dockflow-cluster-'));
  const nodes: ClusterNodeProcess[] = [];
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.kill()));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      // The bus port defaults to port + 10000, which may be taken or past 65535.
      const busPort = await freePort();
      const dir = join(root, String(port));
      mkdirSync(dir);
      // prettier-ignore
      const child = spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
        '--cluster-enabled', 'yes', '--cluster-port', String(busPort), '--cluster-config-file', join(dir, 'nodes.conf'),
        '--cluster-node-timeout', String(opts.nodeTimeoutMs ?? 1000),
        // A replica that lost its master a while ago may still take over (the test kills masters on purpose).
        '--cluster-replica-validity-factor', '0',
      ], { stdio: 'ignore' });
      children.push(child);
      const exited = once(child, 'exit');
      const node: ClusterNodeProcess = {
        port,
        address: `127.0.0.1:${port}`,
        pid: child.pid as number,
        dir,
        get running() {
          return child.exitCode === null && child.signalCode === null;
        },
        async kill() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          process.kill(child.pid as number, 'SIGKILL');
          await exited;
        },
      };
      nodes.push(node);
    }
    await Promise.all(nodes.map((n) => waitForPort(n.port, 10_000)));
    const create = ['--cluster', 'create', ...nodes.map((n) => n.address), '--cluster-yes'];
    if (opts.replicas) create.push('--cluster-replicas', '1');
    await run('redis-cli', create, { timeout: 60_000 });
  } catch (err) {
    await stop();
    throw err;
  }

  const cli = async (node: ClusterNodeProcess, ...args: string[]): Promise<string> =>
    (await run('redis-cli', ['-h', '127.0.0.1', '-p', String(node.port), ...args], { timeout: 10_000 })).stdout;

  const anyRunning = (): ClusterNodeProcess => {
    const n = nodes.find((x) => x.running);
    if (!n) throw new Error('no cluster node is running');
    return n;
  };

  const masterOf = async (slot: number): Promise<ClusterNodeProcess> => {
    // CLUSTER NODES: `<id> <ip:port@cport> <flags> <master id> <ping> <pong> <epoch> <link> <slot ranges>…` per node.
    for (const line of (await cli(anyRunning(), 'CLUSTER', 'NODES')).trim().split('\n')) {
      const f = line.split(' ');
      if (!(f[2] ?? '').split(',').includes('master') || (f[2] ?? '').includes('fail')) continue;
      for (const range of f.slice(8)) {
        const [a, b] = range.split('-').map(Number);
        if (a !== undefined && slot >= a && slot <= (b ?? a)) {
          const port = Number((f[1] ?? '').split('@')[0]!.split(':')[1]);
          const node = nodes.find((n) => n.port === port);
          if (!node) throw new Error(`slot ${slot} is served by unknown port ${port}`);
          return node;
        }
      }
    }
    throw new Error(`no master serves slot ${slot}`);
  };

  const waitOk = async (timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const running = nodes.filter((n) => n.running);
      const states = await Promise.all(running.map((n) => cli(n, 'CLUSTER', 'INFO').catch(() => '')));
      if (states.every((s) => /cluster_state:ok/.test(s) && /cluster_slots_ok:16384/.test(s))) return;
      if (Date.now() > deadline) throw new Error(`cluster not ok after ${timeoutMs} ms:\n${states.join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  await waitOk();
  if (opts.replicas) {
    // A replica that has not synced yet cannot take over: wait until every replica's link to its master is up.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const infos = await Promise.all(nodes.map((n) => cli(n, 'INFO', 'replication')));
      const replicas = infos.filter((s) => /role:slave/.test(s));
      if (replicas.length === 3 && replicas.every((s) => /master_link_status:up/.test(s))) break;
      if (Date.now() > deadline) throw new Error(`replicas not in sync:\n${infos.join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  return {
    nodes,
    url: `redis+cluster://${nodes.map((n) => n.address).join(',')}`,
    masterOf,
    waitOk,
    cli,
    stop,
  };
}
