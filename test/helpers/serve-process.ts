import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Test } from 'tap';
import { repoRoot } from './paths.js';

export interface ServeProcess {
  child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  log(): string;
  /** Its exit code and signal. */
  exited: Promise<[number | null, NodeJS.Signals | null]>;
  /** Resolves once its log contains `text` ('dockflow serving': listening); fails after `timeoutMs` with the log's tail. */
  logged(text: string, timeoutMs?: number): Promise<void>;
}

/**
 * `dockflow serve` from the TypeScript sources under `cwd` (the checkout by default), in a process of its own, with
 * `env` over this process' environment and `args` after `serve`. Killed when the test ends, if it has not exited by then.
 */
export function serveProcess(t: Test, env: NodeJS.ProcessEnv, cwd = repoRoot, args: readonly string[] = []): ServeProcess {
  const child = spawn(process.execPath, ['--import', '@tapjs/typescript/import', 'src/cli.ts', 'serve', ...args], {
    cwd,
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
    killSignal: 'SIGKILL',
  });
  let log = '';
  child.stdout!.on('data', (c: Buffer) => (log += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const logged = async (text: string, timeoutMs = 60_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!log.includes(text)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no "${text}" in the service's log:\n${log.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, log: () => log, exited, logged };
}
