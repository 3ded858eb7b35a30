import { parseArgs } from 'node:util';
import { loadConfig, readConfigFile, SETTINGS } from '../config/index.js';
import { DockflowError } from '../errors.js';
import { startService } from '../service.js';
import { serviceLogger } from './logger.js';

function usage(): string {
  const rows = SETTINGS.filter((s) => s.flag !== undefined).map(
    (s) => `  --${s.flag!.padEnd(22)} ${s.help}${s.env !== undefined ? ` [${s.env}]` : ''}`,
  );
  return [
    'usage: dockflow serve [--config FILE.json] [options]',
    '',
    'Receives syslog (UDP and TCP, RFC 3164/5424, LF or octet-counted) carrying netfilter LOG lines, stores',
    'flow records in Redis streams and serves them over HTTP. Precedence: defaults < --config file <',
    'environment < flags. With no REDIS_URL a local redis-server is started under .dockflow/redis.',
    '',
    ...rows,
    `  --${'no-ingest'.padEnd(22)} same as --ingest false: API and dashboard only, from the shared store`,
    `  --${'config'.padEnd(22)} JSON file with the full configuration schema [DOCKFLOW_CONFIG]`,
  ].join('\n');
}

export async function runServe(argv: string[]): Promise<number> {
  const options: Record<string, { type: 'string' }> = { config: { type: 'string' } };
  for (const s of SETTINGS) if (s.flag !== undefined) options[s.flag] = { type: 'string' };
  let flags: Record<string, string | boolean | undefined>;
  try {
    const parsed = parseArgs({ args: argv, options: { ...options, 'no-ingest': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: false });
    flags = parsed.values as Record<string, string | boolean | undefined>;
    if (flags['no-ingest'] === true) flags.ingest = 'false';
  } catch (err) {
    process.stderr.write(`dockflow serve: ${(err as Error).message}\n\n${usage()}\n`);
    return 2;
  }
  if (flags.help === true) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }

  let config;
  try {
    const configPath = (flags.config as string | undefined) ?? process.env.DOCKFLOW_CONFIG;
    config = loadConfig({
      file: configPath !== undefined ? readConfigFile(configPath) : undefined,
      env: process.env,
      flags: flags as Record<string, string | undefined>,
    });
  } catch (err) {
    process.stderr.write(`dockflow serve: ${(err as Error).message}\n`);
    return 2;
  }

  const logger = await serviceLogger(config.logLevel);
  let service;
  try {
    service = await startService(config, { logger });
  } catch (err) {
    const code = err instanceof DockflowError ? err.code : undefined;
    logger.fatal({ err, code }, `cannot start: ${(err as Error).message}`);
    return 1;
  }

  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(130);
      }
      stopping = true;
      logger.info({ signal, deadlineMs: config.shutdownTimeoutMs }, 'shutting down');
      service.close().then(
        (clean) => resolve(clean ? 0 : 1),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
