import { pino, type Logger } from 'pino';

/**
 * The service's logger: readable lines (pino-pretty) when `out` is a terminal, one JSON object per line otherwise
 * (systemd, containers, pipes, log shippers). pino-pretty writes synchronously in this thread, so the last lines
 * before an exit are never lost.
 */
export async function serviceLogger(level: string, out: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout): Promise<Logger> {
  if (out.isTTY !== true) return out === process.stdout ? pino({ level, name: 'dockflow' }) : pino({ level, name: 'dockflow' }, out);
  const { default: pretty } = await import('pino-pretty');
  return pino(
    { level, name: 'dockflow' },
    pretty({ destination: out, sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }),
  );
}
