import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { verifyFile } from '../export/chain.js';

const EXPORT_USAGE = `Usage: dockflow export -o FILE [--url URL] [--token TOKEN] [--FILTER VALUE ...]

Writes the records matching the filters as a verifiable NDJSON export (header, one record per line with its
SHA-256 chain hash, trailer with count, first and last entry IDs, GeoIP/ASN database stamps, loss report and
chain head), read from a running dockflow's GET /api/export. Prints the chain head: keep it apart from the file.

Options:
  -o, --output FILE   where to write (- for stdout)
  --url URL           dockflow's HTTP API (default $DOCKFLOW_URL, else http://127.0.0.1:8080)
  --token TOKEN       bearer token (default $API_TOKEN)
  --FILTER VALUE      any /api/flows filter: --since 2h --container web --ip 203.0.113.0/24 --direction egress …
                      and --order asc|desc, --max-records N (default 1,000,000; at most 10,000,000)
`;

const VERIFY_USAGE = `Usage: dockflow verify FILE

Checks an export written by dockflow export: exits 0 and prints the record count and chain head when every line
is as exported; otherwise exits 1 naming the first line that was changed, removed, added or moved.
`;

/** The trailer is the last line; only the end of the stream is kept to find it. */
const TAIL_BYTES = 1 << 20;

export async function runExport(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  // Every option takes a value (`--name value` or `--name=value`); those not the command's own are query filters.
  const opts = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(EXPORT_USAGE);
      return 0;
    }
    const m = /^(?:-o|--([a-z][a-z0-9-]*))(?:=(.*))?$/.exec(arg);
    if (m === null) {
      process.stderr.write(`dockflow export: unexpected argument ${arg}\n\n${EXPORT_USAGE}`);
      return 2;
    }
    const name = m[1] ?? 'output';
    const value = m[2] ?? argv[++i];
    if (value === undefined) {
      process.stderr.write(`dockflow export: --${name} needs a value\n`);
      return 2;
    }
    opts.set(name, value);
  }
  const output = opts.get('output');
  if (output === undefined) {
    process.stderr.write(`dockflow export: -o FILE is required\n\n${EXPORT_USAGE}`);
    return 2;
  }
  const base = opts.get('url') ?? env.DOCKFLOW_URL ?? 'http://127.0.0.1:8080';
  const token = opts.get('token') ?? env.API_TOKEN;
  const url = new URL('/api/export', base);
  for (const [name, value] of opts) {
    if (name !== 'output' && name !== 'url' && name !== 'token') url.searchParams.set(name.replaceAll('-', '_'), value);
  }
  let res: Response;
  try {
    res = await fetch(url, { headers: token !== undefined ? { authorization: `Bearer ${token}` } : {} });
  } catch (err) {
    process.stderr.write(`dockflow export: cannot reach ${url.origin}: ${(err as Error).message}\n`);
    return 1;
  }
  if (!res.ok || res.body === null) {
    process.stderr.write(`dockflow export: ${res.status} ${await res.text()}\n`);
    return 1;
  }
  let tail = Buffer.alloc(0);
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  body.on('data', (chunk: Buffer) => {
    tail = Buffer.concat([tail, chunk]);
    if (tail.length > TAIL_BYTES) tail = tail.subarray(tail.length - TAIL_BYTES);
  });
  const out = output === '-' ? process.stdout : createWriteStream(output);
  try {
    if (output === '-') {
      for await (const chunk of body) if (!process.stdout.write(chunk as Buffer)) await once(process.stdout, 'drain');
    } else {
      await pipeline(body, out);
    }
  } catch (err) {
    process.stderr.write(`dockflow export: ${(err as Error).message}\n`);
    return 1;
  }
  const lines = tail.toString('utf8').trimEnd().split('\n');
  const last = lines[lines.length - 1] ?? '';
  let trailer: { count?: number; chain_head?: string; truncated?: boolean; reason?: string } | undefined;
  try {
    trailer = (JSON.parse(last) as { dockflow_export_end?: typeof trailer }).dockflow_export_end;
  } catch {
    trailer = undefined;
  }
  if (trailer === undefined) {
    process.stderr.write('dockflow export: the export ended without its trailer (the service stopped, or the connection broke)\n');
    return 1;
  }
  process.stderr.write(`${trailer.count} records; chain head ${trailer.chain_head}\n`);
  if (trailer.truncated === true) {
    process.stderr.write(`dockflow export: incomplete: ${trailer.reason ?? 'truncated'}\n`);
    return 1;
  }
  return 0;
}

export async function runVerify(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } });
  if (values.help === true) {
    process.stdout.write(VERIFY_USAGE);
    return 0;
  }
  const file = positionals[0];
  if (file === undefined || positionals.length > 1) {
    process.stderr.write(`dockflow verify: one FILE\n\n${VERIFY_USAGE}`);
    return 2;
  }
  let result;
  try {
    result = await verifyFile(file);
  } catch (err) {
    process.stderr.write(`dockflow verify: ${(err as Error).message}\n`);
    return 2;
  }
  if (!result.ok) {
    process.stdout.write(`${file}:${result.line}: ${result.problem}\n`);
    return 1;
  }
  const t = result.trailer;
  process.stdout.write(
    `${file}: ok: ${result.records} records${t?.first_id ? ` (${t.first_id} … ${t.last_id})` : ''}; chain head ${result.chainHead}${t?.truncated ? `; the export itself says it is incomplete: ${t.reason ?? 'truncated'}` : ''}\n`,
  );
  return 0;
}
