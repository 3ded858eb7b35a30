import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { DockflowError, ErrorCode } from '../errors.js';

export interface EmbeddedRedisOptions {
  /** Where the AOF lives (the service passes `.dockflow/redis`); created if missing. */
  dataDir: string;
  /** TCP port on 127.0.0.1; a free one when absent. */
  port?: number;
  logger: Logger;
  /** Default `redis-server` from PATH. */
  binary?: string;
  /** Default 15 s (loading a large AOF takes time). */
  startTimeoutMs?: number;
  /** Default `everysec` (see the config's `redis.embeddedAppendFsync`). */
  appendFsync?: 'everysec' | 'always';
}

export interface EmbeddedRedis {
  url: string;
  port: number;
  pid: number;
  dataDir: string;
  /** SIGTERM (Redis flushes the AOF and exits), SIGKILL after 10 s. */
  stop(): Promise<void>;
}

const INSTALL_HINT = 'install it (Debian/Ubuntu: apt-get install redis-server) or set REDIS_URL to an existing Redis';

/**
 * Starts a private `redis-server` for dockflow: AOF on (fsync every second unless told `always`), no RDB snapshots, bound to 127.0.0.1
 * only, data under `dataDir`, and waits until it answers PING.
 */
export async function startEmbeddedRedis(opts: EmbeddedRedisOptions): Promise<EmbeddedRedis> {
  const { logger } = opts;
  const dataDir = resolve(opts.dataDir);
  const binary = opts.binary ?? 'redis-server';
  mkdirSync(dataDir, { recursive: true });
  refuseIfStillRunning(dataDir);
  const port = opts.port ?? (await freePort());
  if (opts.port !== undefined && !(await portIsFree(port))) {
    throw new DockflowError(
      ErrorCode.LISTEN_FAILED,
      `cannot start the embedded redis-server: 127.0.0.1:${port} is already in use (another Redis?); choose another port, or point REDIS_URL at that server`,
    );
  }
  const appendFsync = opts.appendFsync ?? 'everysec';
  // prettier-ignore
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--protected-mode', 'yes', '--dir', dataDir,
    '--appendonly', 'yes', '--appendfsync', appendFsync, '--save', '', '--daemonize', 'no',
    '--pidfile', join(dataDir, 'redis.pid'),
  ];
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const tail: string[] = [];
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      tail.push(line);
      if (tail.length > 20) tail.shift();
      logger.debug({ redisServer: line }, 'redis-server');
    }
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const spawned = await new Promise<NodeJS.ErrnoException | undefined>((resolveSpawn) => {
    child.once('spawn', () => resolveSpawn(undefined));
    child.once('error', (err) => resolveSpawn(err));
  });
  if (spawned) {
    if (spawned.code === 'ENOENT') throw new DockflowError(ErrorCode.REDIS_SERVER_MISSING, `redis-server was not found (${binary}): ${INSTALL_HINT}`, { cause: spawned });
    throw new DockflowError(ErrorCode.REDIS_UNAVAILABLE, `cannot run ${binary}: ${spawned.message}`, { cause: spawned });
  }
  try {
    await waitForPong(child, port, opts.startTimeoutMs ?? 15_000);
  } catch (err) {
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    const output = tail.join('\n');
    const code = /address already in use/i.test(output) ? ErrorCode.LISTEN_FAILED : ErrorCode.REDIS_UNAVAILABLE;
    throw new DockflowError(code, `the embedded redis-server did not start: ${(err as Error).message}${output ? `\n${output}` : ''}`, { cause: err });
  }
  const url = `redis://127.0.0.1:${port}`;
  logger.info({ url, dataDir, pid: child.pid, appendFsync }, 'embedded redis-server started (AOF on)');
  let stopping: Promise<void> | undefined;
  return {
    url,
    port,
    pid: child.pid as number,
    dataDir,
    stop() {
      stopping ??= stopChild(child, logger);
      return stopping;
    },
  };
}

/** Two servers appending to one AOF would corrupt it: refuse while the pidfile names a live redis-server. */
function refuseIfStillRunning(dataDir: string): void {
  const pidfile = join(dataDir, 'redis.pid');
  if (!existsSync(pidfile)) return;
  const pid = Number(readFileSync(pidfile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return;
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return; // not running
  }
  if (!cmdline.includes('redis-server')) return;
  throw new DockflowError(
    ErrorCode.REDIS_UNAVAILABLE,
    `a redis-server (pid ${pid}) from an earlier run still uses ${dataDir}; stop it first (kill ${pid}) or set REDIS_URL to use it`,
  );
}

async function stopChild(child: ChildProcess, logger: Logger): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
  logger.info({ pid: child.pid }, 'embedded redis-server stopped');
}

async function waitForPong(child: ChildProcess, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode})`);
    if (await ping(port)) return;
    if (Date.now() > deadline) throw new Error(`no PONG on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One inline PING; `true` on `+PONG` (a `-LOADING` reply means not yet). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolvePing) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolvePing(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

function listenOnce(port: number): Promise<net.Server> {
  return new Promise((resolveListen, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolveListen(srv));
  });
}

async function portIsFree(port: number): Promise<boolean> {
  try {
    const srv = await listenOnce(port);
    await new Promise<void>((r) => srv.close(() => r()));
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const srv = await listenOnce(0);
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}
