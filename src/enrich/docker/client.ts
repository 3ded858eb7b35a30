import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DockflowError, ErrorCode } from '../../errors.js';
import { LineSplitter, parseEventLine } from './ndjson.js';
import type { ContainerInspect, ContainerSummary, DockerEvent, VersionInfo } from './types.js';

/** The newest API version dockflow speaks; every field it reads has been stable since 1.24. */
export const MAX_API_VERSION = '1.47';
export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock';

export interface DockerClientOptions {
  /** `unix:///path`, `tcp://host:port` (DOCKER_HOST syntax). Default `unix:///var/run/docker.sock`. */
  host?: string;
  /** TLS with the server's certificate checked against `ca.pem` (DOCKER_TLS_VERIFY). */
  tlsVerify?: boolean;
  /** TLS without checking the server (DOCKER_TLS); implied by `tlsVerify`. */
  tls?: boolean;
  /** Directory with `ca.pem`, `cert.pem`, `key.pem` (DOCKER_CERT_PATH, default `~/.docker`). */
  certPath?: string;
  /** Pins the API version and skips negotiation (DOCKER_API_VERSION). */
  apiVersion?: string;
  /** The highest version negotiation may settle on. */
  maxApiVersion?: string;
  /** Whole-request limit for plain calls; for `/events`, the limit until the response headers arrive. */
  requestTimeoutMs?: number;
}

/** Reads the variables the docker CLI reads, with the CLI's meaning. */
export function dockerOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): DockerClientOptions {
  const opts: DockerClientOptions = {
    host: env['DOCKER_HOST'] || DEFAULT_DOCKER_HOST,
    tlsVerify: Boolean(env['DOCKER_TLS_VERIFY']),
    tls: Boolean(env['DOCKER_TLS']) || Boolean(env['DOCKER_TLS_VERIFY']),
    certPath: env['DOCKER_CERT_PATH'] || join(homedir(), '.docker'),
  };
  if (env['DOCKER_API_VERSION']) opts.apiVersion = env['DOCKER_API_VERSION'];
  return opts;
}

type Target =
  | { kind: 'unix'; socketPath: string }
  | { kind: 'tcp'; hostname: string; port: number; tls?: https.RequestOptions };

function apiError(message: string, cause?: unknown): DockflowError {
  return new DockflowError(ErrorCode.DOCKER_API, message, cause === undefined ? undefined : { cause });
}

function readPem(dir: string, file: string, required: boolean): Buffer | undefined {
  try {
    return readFileSync(join(dir, file));
  } catch (err) {
    if (required) throw apiError(`cannot read ${join(dir, file)} for Docker TLS`, err);
    return undefined;
  }
}

function parseTarget(opts: DockerClientOptions): Target {
  const host = opts.host || DEFAULT_DOCKER_HOST;
  if (host.startsWith('unix://')) {
    const socketPath = host.slice('unix://'.length);
    if (socketPath === '') throw apiError(`DOCKER_HOST ${host}: no socket path`);
    return { kind: 'unix', socketPath };
  }
  if (!host.startsWith('tcp://')) throw apiError(`DOCKER_HOST ${host}: only unix:// and tcp:// are supported`);
  const useTls = Boolean(opts.tls || opts.tlsVerify);
  let url: URL;
  try {
    url = new URL(`http://${host.slice('tcp://'.length)}`);
  } catch (err) {
    throw apiError(`DOCKER_HOST ${host}: not a host:port`, err);
  }
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? (useTls ? 2376 : 2375) : Number(url.port);
  if (!useTls) return { kind: 'tcp', hostname, port };
  const dir = opts.certPath || join(homedir(), '.docker');
  const verify = Boolean(opts.tlsVerify);
  // As the CLI: client certificate when present, CA only when verifying.
  const tls: https.RequestOptions = { rejectUnauthorized: verify, servername: hostname };
  const cert = readPem(dir, 'cert.pem', false);
  const key = readPem(dir, 'key.pem', false);
  if (cert && key) Object.assign(tls, { cert, key });
  if (verify) tls.ca = readPem(dir, 'ca.pem', true);
  return { kind: 'tcp', hostname, port, tls };
}

function versionParts(v: string): [number, number] {
  const dot = v.indexOf('.');
  return [Number(v.slice(0, dot === -1 ? undefined : dot)), dot === -1 ? 0 : Number(v.slice(dot + 1))];
}

/** Numeric comparison: `1.9` < `1.41`. */
export function compareApiVersions(a: string, b: string): number {
  const [am, an] = versionParts(a);
  const [bm, bn] = versionParts(b);
  return am !== bm ? am - bm : an - bn;
}

function isApiVersion(v: unknown): v is string {
  return typeof v === 'string' && /^\d+\.\d+$/.test(v);
}

export interface EventsQuery {
  /** Docker's `since`: seconds or `seconds.nanoseconds`. */
  since?: string;
  until?: string;
  filters?: Record<string, string[]>;
  /** Called for each line that is not a JSON object (it is skipped). */
  onBadLine?: (line: string) => void;
}

/** The `/events` stream: parsed events in order. Ends when the engine closes it; `close()` ends it from our side. */
export interface EventStream extends AsyncIterable<DockerEvent> {
  close(): void;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A Docker Engine API client over node:http(s), for the calls attribution needs. */
export class DockerClient {
  readonly target: string;
  private readonly where: Target;
  private readonly maxApiVersion: string;
  private readonly pinnedVersion: string | undefined;
  private readonly requestTimeoutMs: number;
  private version: string | undefined;

  constructor(opts: DockerClientOptions = {}) {
    this.target = opts.host || DEFAULT_DOCKER_HOST;
    this.where = parseTarget(opts);
    this.maxApiVersion = opts.maxApiVersion ?? MAX_API_VERSION;
    this.pinnedVersion = opts.apiVersion;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  }

  /** The version in use (after `negotiate()`). */
  get apiVersion(): string | undefined {
    return this.pinnedVersion ?? this.version;
  }

  /**
   * Asks the engine which version it speaks (`/_ping`'s `Api-Version` header, else `/version`) and settles on the
   * lower of it and ours. Called again after a reconnect: the engine may have been upgraded meanwhile.
   */
  async negotiate(): Promise<string> {
    if (this.pinnedVersion) return this.pinnedVersion;
    const ping = await this.call('GET', '/_ping');
    let theirs: unknown = ping.headers['api-version'];
    if (!isApiVersion(theirs)) {
      const version = (await this.json('GET', '/version')) as VersionInfo;
      theirs = version.ApiVersion;
    }
    if (!isApiVersion(theirs)) throw apiError(`${this.target}: the engine did not say which API version it speaks`);
    this.version = compareApiVersions(theirs, this.maxApiVersion) < 0 ? theirs : this.maxApiVersion;
    return this.version;
  }

  async listContainers(opts: { all?: boolean } = {}): Promise<ContainerSummary[]> {
    const list = await this.json('GET', await this.versioned(`/containers/json?all=${opts.all ? 'true' : 'false'}`));
    if (!Array.isArray(list)) throw apiError(`${this.target}: /containers/json did not return a list`);
    return list as ContainerSummary[];
  }

  /** `undefined` when the engine no longer knows the container (404). */
  async inspectContainer(id: string): Promise<ContainerInspect | undefined> {
    const path = await this.versioned(`/containers/${encodeURIComponent(id)}/json`);
    const reply = await this.call('GET', path);
    if (reply.status === 404) return undefined;
    const body = this.decode(reply, path);
    if (typeof body !== 'object' || body === null || typeof (body as ContainerInspect).Id !== 'string') {
      throw apiError(`${this.target}: ${path} is not a container`);
    }
    return body as ContainerInspect;
  }

  async events(query: EventsQuery = {}): Promise<EventStream> {
    const params = new URLSearchParams();
    if (query.since !== undefined) params.set('since', query.since);
    if (query.until !== undefined) params.set('until', query.until);
    if (query.filters) params.set('filters', JSON.stringify(query.filters));
    const qs = params.toString();
    const path = await this.versioned(`/events${qs === '' ? '' : `?${qs}`}`);
    const res = await this.open('GET', path);
    if (res.statusCode !== 200) {
      const reply = await this.collect(res);
      this.decode(reply, path);
      throw apiError(`${this.target}: ${path} answered ${reply.status}`);
    }
    // No timeout while streaming (the engine may be silent for hours); keep-alive probes notice a dead peer.
    res.socket.setKeepAlive(true, 30_000);
    let closed = false;
    const target = this.target;
    async function* iterate(): AsyncGenerator<DockerEvent> {
      const splitter = new LineSplitter();
      const parse = function* (lines: string[]): Generator<DockerEvent> {
        for (const line of lines) {
          const event = parseEventLine(line);
          if (event) yield event;
          else query.onBadLine?.(line);
        }
      };
      try {
        for await (const chunk of res) yield* parse(splitter.push(chunk as Buffer));
        yield* parse(splitter.end());
      } catch (err) {
        if (!closed) throw apiError(`${target}: the event stream broke: ${(err as Error).message}`, err);
      }
    }
    const iterator = iterate();
    return {
      [Symbol.asyncIterator]: () => iterator,
      close() {
        closed = true;
        res.destroy();
      },
    };
  }

  private async versioned(path: string): Promise<string> {
    const version = this.apiVersion ?? (await this.negotiate());
    return `/v${version}${path}`;
  }

  private async json(method: string, path: string): Promise<unknown> {
    return this.decode(await this.call(method, path), path);
  }

  private decode(reply: Reply, path: string): unknown {
    const text = reply.body.toString('utf8');
    if (reply.status < 200 || reply.status > 299) {
      let detail = text.slice(0, 200);
      try {
        const parsed = JSON.parse(text) as { message?: unknown };
        if (typeof parsed.message === 'string') detail = parsed.message;
      } catch {
        // not JSON: the raw text is the detail
      }
      throw apiError(`${this.target}: ${path} answered ${reply.status}: ${detail}`);
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw apiError(`${this.target}: ${path} answered with invalid JSON`, err);
    }
  }

  private async call(method: string, path: string): Promise<Reply> {
    const deadline = Date.now() + this.requestTimeoutMs;
    const res = await this.open(method, path);
    return this.collect(res, deadline);
  }

  private collect(res: IncomingMessage, deadline = Date.now() + this.requestTimeoutMs): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => {
        res.destroy();
        reject(apiError(`${this.target}: no complete answer within ${this.requestTimeoutMs} ms`));
      }, Math.max(0, deadline - Date.now()));
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.once('error', (err) => {
        clearTimeout(timer);
        reject(apiError(`${this.target}: ${err.message}`, err));
      });
    });
  }

  /** Sends the request; resolves with the response once its headers are in. */
  private open(method: string, path: string): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const w = this.where;
      const base: http.RequestOptions = { method, path, headers: { Host: 'docker', Accept: 'application/json' }, agent: false };
      const req =
        w.kind === 'unix'
          ? http.request({ ...base, socketPath: w.socketPath })
          : w.tls
            ? https.request({ ...base, ...w.tls, hostname: w.hostname, port: w.port })
            : http.request({ ...base, hostname: w.hostname, port: w.port });
      const timer = setTimeout(() => {
        req.destroy(apiError(`${this.target}: no answer to ${method} ${path} within ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      req.once('response', (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(err instanceof DockflowError ? err : apiError(`${this.target}: ${method} ${path}: ${err.message}`, err));
      });
      req.end();
    });
  }
}
