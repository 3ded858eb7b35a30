#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runParse } from './cli/parse-command.js';

const USAGE = `Usage: dockflow <command> [options]

Commands:
  parse [FILE...]   netfilter LOG lines from syslog files, captures or stdin → NDJSON flow records
  hunt [-]          run detection rules over stored records (or NDJSON records on stdin) and print what fires
  serve             receive syslog over UDP/TCP, enrich and store flow records in Redis, serve them over HTTP
  migrate           convert a store of the version 1 layout into the current one (docs/storage.md)
  export -o FILE    records matching a query from a running dockflow, as NDJSON with a SHA-256 hash chain
  verify FILE       check an export: every line as exported, none removed, added or moved

Options:
  -h, --help        show this help (dockflow <command> --help for a command's options)
  --version         print the version
`;

/** The package version, from the package.json above this file (src/ when run from source, dist/src/ built). */
function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'dockflow' && pkg.version !== undefined) return pkg.version;
    } catch {
      // not at this level
    }
  }
  return 'unknown';
}

async function main(argv: string[]): Promise<number> {
  const { tokens } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: false,
    tokens: true,
    options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' } },
  });
  // Options before the command are global; everything from the command on belongs to it.
  const command = tokens.find((t) => t.kind === 'positional');
  const globals = tokens.filter((t) => t.kind === 'option' && (command === undefined || t.index < command.index));
  for (const t of globals) {
    if (t.kind === 'option' && t.name !== 'help' && t.name !== 'version') {
      process.stderr.write(`dockflow: unknown option ${t.rawName}\n\n${USAGE}`);
      return 2;
    }
  }
  const has = (name: string): boolean => globals.some((t) => t.kind === 'option' && t.name === name);
  if (has('help')) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (has('version')) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (command === undefined || command.kind !== 'positional') {
    process.stderr.write(`dockflow: missing command\n\n${USAGE}`);
    return 2;
  }
  const rest = argv.slice(command.index + 1);
  switch (command.value) {
    case 'parse':
      return runParse(rest);
    case 'hunt': {
      const { runHunt } = await import('./cli/hunt.js');
      return runHunt(rest);
    }
    case 'serve': {
      // Loaded on demand: `parse` must not pull in the service's dependencies (Redis, HTTP, GeoIP). The runtime fix
      // goes first, before anything the service loads runs.
      await import('./runtime/string-prototype.js');
      const { runServe } = await import('./cli/serve.js');
      return runServe(rest);
    }
    case 'export':
    case 'verify': {
      const { runExport, runVerify } = await import('./cli/export.js');
      return command.value === 'export' ? runExport(rest) : runVerify(rest);
    }
    case 'migrate': {
      const { runMigrate } = await import('./cli/migrate.js');
      return runMigrate(rest);
    }
    default:
      process.stderr.write(`dockflow: unknown command "${command.value}"\n\n${USAGE}`);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
