/**
 * A stand-in Docker Engine API server for tests: a unix socket in a temporary directory and TCP on 127.0.0.1, answering
 * with the JSON shapes captured from podman's Docker-compatible API (test/fixtures/docker-api/) and Docker's
 * documented ones. Scriptable: containers are created, started, stopped, removed, renamed, connected and disconnected
 * at given times, and the matching events are streamed from `/events` the way Docker or podman sends them.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixture } from './paths.js';

export type EventStyle = 'docker' | 'podman';

export interface FakeNetworkAddress {
  ip?: string;
  ipv6?: string;
  mac?: string;
}

export interface FakeContainerSpec {
  id?: string;
  name: string;
  image?: string;
  labels?: Record<string, string>;
  networks: Record<string, FakeNetworkAddress>;
  /** Published ports, container port (`80/tcp`) → host port; unset: the captured template's. */
  ports?: Record<string, string>;
}

export interface FakeDockerOptions {
  style?: EventStyle;
  /** What `/_ping` and `/version` announce; requests for a newer version get Docker's 400. */
  apiVersion?: string;
  /** Leave the `Api-Version` header off `/_ping`, so clients must ask `/version`. */
  pingWithoutVersion?: boolean;
  /** Write each event in several pieces (the line split across chunks). */
  splitWrites?: boolean;
  /** Milliseconds since the epoch for actions given no time. */
  clock?: () => number;
}

interface FakeContainer {
  id: string;
  name: string;
  image: string;
  labels: Record<string, string>;
  status: 'created' | 'running' | 'exited';
  createdMs: number;
  startedMs?: number;
  finishedMs?: number;
  networks: Record<string, FakeNetworkAddress>;
  ports?: Record<string, string>;
}

interface StoredEvent {
  nano: bigint;
  type: string;
  action: string;
  json: string;
}

interface Subscriber {
  res: ServerResponse;
  until?: bigint;
  types?: Set<string>;
  actions?: Set<string>;
}

const loadJson = (name: string): unknown => JSON.parse(readFileSync(fixture('docker-api', name), 'utf8'));
const INSPECT_TEMPLATE = loadJson('podman-container-inspect.json') as Record<string, unknown>;
const LIST_TEMPLATE = (loadJson('podman-containers-list.json') as Record<string, unknown>[])[0]!;
const VERSION_TEMPLATE = loadJson('podman-version.json') as Record<string, unknown>;

const bindings = (ports: Record<string, string>): Record<string, { HostIp: string; HostPort: string }[]> =>
  Object.fromEntries(Object.entries(ports).map(([p, host]) => [p, [{ HostIp: '', HostPort: host }]]));
const clone = <T>(v: T): T => structuredClone(v);
const hexId = (seed: string): string => createHash('sha256').update(seed).digest('hex');
const iso = (ms: number | undefined): string => (ms === undefined ? '0001-01-01T00:00:00Z' : new Date(ms).toISOString());

function versionLess(a: string, b: string): boolean {
  const [am, an] = a.split('.').map(Number) as [number, number];
  const [bm, bn] = b.split('.').map(Number) as [number, number];
  return am !== bm ? am < bm : an < bn;
}

/** Docker's `since`/`until`: seconds, optionally with `.nanoseconds`. */
function parseNanoParam(v: string | null): bigint | undefined {
  if (v === null || v === '') return undefined;
  const [sec, frac = ''] = v.split('.');
  return BigInt(sec!) * 1_000_000_000n + BigInt((frac + '000000000').slice(0, 9));
}

export class FakeDocker {
  readonly style: EventStyle;
  readonly apiVersion: string;
  readonly dir: string;
  readonly socketPath: string;
  port = 0;
  /** Every request path (with query) in arrival order. */
  readonly requests: string[] = [];
  private readonly opts: FakeDockerOptions;
  private readonly clock: () => number;
  private readonly containers = new Map<string, FakeContainer>();
  private readonly events: StoredEvent[] = [];
  private readonly subscribers = new Set<Subscriber>();
  private readonly sockets = new Set<Socket>();
  private servers: http.Server[] = [];
  private lastNano = 0n;
  private seq = 0;

  private constructor(opts: FakeDockerOptions) {
    this.opts = opts;
    this.style = opts.style ?? 'docker';
    this.apiVersion = opts.apiVersion ?? (this.style === 'podman' ? '1.41' : '1.45');
    this.clock = opts.clock ?? Date.now;
    this.dir = mkdtempSync(join(tmpdir(), 'dockflow-fake-docker-'));
    this.socketPath = join(this.dir, 'docker.sock');
  }

  static async start(opts: FakeDockerOptions = {}): Promise<FakeDocker> {
    const fake = new FakeDocker(opts);
    await fake.listen();
    return fake;
  }

  get unixHost(): string {
    return `unix://${this.socketPath}`;
  }

  get tcpHost(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Opens the unix socket and the TCP port (the same port again after `close()`). */
  async listen(): Promise<void> {
    try {
      unlinkSync(this.socketPath);
    } catch {
      // no stale socket
    }
    const unix = this.server();
    unix.listen(this.socketPath);
    const tcp = this.server();
    tcp.listen(this.port, '127.0.0.1');
    await Promise.all([once(unix, 'listening'), once(tcp, 'listening')]);
    this.port = (tcp.address() as { port: number }).port;
    this.servers = [unix, tcp];
  }

  /** The API goes away: both listeners close and every open connection (event streams too) is cut. */
  async close(): Promise<void> {
    const closing = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    this.servers = [];
    this.subscribers.clear();
    for (const s of this.sockets) s.destroy();
    await Promise.all(closing);
  }

  async dispose(): Promise<void> {
    await this.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  create(spec: FakeContainerSpec, atMs = this.clock()): string {
    const id = spec.id ?? hexId(`${spec.name}/${this.seq++}/${atMs}`);
    const c: FakeContainer = {
      id,
      name: spec.name,
      image: spec.image ?? 'localhost/fxbusybox:latest',
      labels: spec.labels ?? {},
      ...(spec.ports !== undefined ? { ports: spec.ports } : {}),
      status: 'created',
      createdMs: atMs,
      networks: clone(spec.networks),
    };
    this.containers.set(id, c);
    this.containerEvent(c, 'create', atMs);
    return id;
  }

  start(id: string, atMs = this.clock()): void {
    const c = this.get(id);
    c.status = 'running';
    c.startedMs = atMs;
    if (this.style === 'docker') {
      for (const net of Object.keys(c.networks)) this.networkEvent(c, net, 'connect', atMs);
    } else {
      this.containerEvent(c, 'init', atMs);
    }
    this.containerEvent(c, 'start', atMs);
  }

  run(spec: FakeContainerSpec, atMs = this.clock()): string {
    const id = this.create(spec, atMs);
    this.start(id, atMs);
    return id;
  }

  stop(id: string, atMs = this.clock()): void {
    const c = this.get(id);
    c.status = 'exited';
    c.finishedMs = atMs;
    if (this.style === 'docker') {
      this.containerEvent(c, 'kill', atMs, { signal: '15' });
      this.containerEvent(c, 'die', atMs, { exitCode: '0' });
      for (const net of Object.keys(c.networks)) this.networkEvent(c, net, 'disconnect', atMs);
      this.containerEvent(c, 'stop', atMs);
    } else {
      this.containerEvent(c, 'die', atMs, { exitCode: '0' });
      this.containerEvent(c, 'cleanup', atMs);
    }
  }

  remove(id: string, atMs = this.clock()): void {
    const c = this.get(id);
    this.containers.delete(id);
    this.containerEvent(c, this.style === 'docker' ? 'destroy' : 'remove', atMs);
  }

  rename(id: string, name: string, atMs = this.clock()): void {
    const c = this.get(id);
    const oldName = c.name;
    c.name = name;
    this.containerEvent(c, 'rename', atMs, this.style === 'docker' ? { oldName: `/${oldName}` } : {});
  }

  connect(id: string, network: string, addr: FakeNetworkAddress, atMs = this.clock()): void {
    const c = this.get(id);
    c.networks[network] = clone(addr);
    this.networkEvent(c, network, 'connect', atMs);
  }

  disconnect(id: string, network: string, atMs = this.clock()): void {
    const c = this.get(id);
    delete c.networks[network];
    this.networkEvent(c, network, 'disconnect', atMs);
  }

  /** Forgets a container without any event, as when events were lost. */
  vanish(id: string): void {
    this.containers.delete(id);
  }

  private get(id: string): FakeContainer {
    const c = this.containers.get(id);
    if (!c) throw new Error(`fake docker: no container ${id}`);
    return c;
  }

  private nano(atMs: number): bigint {
    // Unique and increasing, as an engine's clock is; the fake's script may reuse a millisecond.
    let n = BigInt(Math.round(atMs)) * 1_000_000n;
    if (n <= this.lastNano) n = this.lastNano + 1n;
    this.lastNano = n;
    return n;
  }

  private containerEvent(c: FakeContainer, action: string, atMs: number, extra: Record<string, string> = {}): void {
    const attributes: Record<string, string> =
      this.style === 'docker'
        ? { ...c.labels, image: c.image, name: c.name, ...extra }
        : { ...c.labels, containerExitCode: extra['exitCode'] ?? '0', ...extra, image: c.image, name: c.name, podId: '' };
    this.emit(atMs, { status: action, id: c.id, from: c.image, Type: 'container', Action: action, Actor: { ID: c.id, Attributes: attributes }, scope: 'local' });
  }

  private networkEvent(c: FakeContainer, network: string, action: 'connect' | 'disconnect', atMs: number): void {
    // Docker: the network is the actor and names the container; podman: the container is the actor.
    const actor =
      this.style === 'docker'
        ? { ID: hexId(`net:${network}`), Attributes: { container: c.id, name: network, type: 'bridge' } }
        : { ID: c.id, Attributes: { containerExitCode: '0', image: '', name: c.name, podId: '' } };
    this.emit(atMs, { ...(this.style === 'podman' ? { status: action, id: c.id } : {}), Type: 'network', Action: action, Actor: actor, scope: 'local' });
  }

  private emit(atMs: number, body: Record<string, unknown>): void {
    const nano = this.nano(atMs);
    // timeNano is past 2^53: written as digits, as the engines do.
    const json = JSON.stringify({ ...body, time: Number(nano / 1_000_000_000n), timeNano: '@@NANO@@' }).replace('"@@NANO@@"', nano.toString());
    const ev: StoredEvent = { nano, type: body['Type'] as string, action: body['Action'] as string, json };
    this.events.push(ev);
    for (const sub of this.subscribers) this.deliver(sub, ev);
  }

  private matches(sub: Subscriber, ev: StoredEvent): boolean {
    return (!sub.types || sub.types.has(ev.type)) && (!sub.actions || sub.actions.has(ev.action));
  }

  private deliver(sub: Subscriber, ev: StoredEvent): void {
    if (sub.until !== undefined && ev.nano > sub.until) return;
    if (!this.matches(sub, ev)) return;
    const line = `${ev.json}\n`;
    if (!this.opts.splitWrites) {
      sub.res.write(line);
      return;
    }
    const a = Math.floor(line.length / 3);
    const b = Math.floor((2 * line.length) / 3);
    for (const piece of [line.slice(0, a), line.slice(a, b), line.slice(b)]) sub.res.write(piece);
  }

  private server(): http.Server {
    const srv = http.createServer((req, res) => this.route(req, res));
    srv.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    return srv;
  }

  private send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json', ...this.commonHeaders(), ...headers });
    res.end(text);
  }

  private commonHeaders(): Record<string, string> {
    return { Server: this.style === 'docker' ? 'Docker/27.0.0 (linux)' : 'Libpod/4.3.1 (linux)', 'Api-Version': this.apiVersion };
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    this.requests.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'http://docker');
    let path = url.pathname;
    const versioned = /^\/v(\d+\.\d+)(\/.*)$/.exec(path);
    if (versioned) {
      if (versionLess(this.apiVersion, versioned[1]!)) {
        this.send(res, 400, { message: `client version ${versioned[1]} is too new. Maximum supported API version is ${this.apiVersion}` });
        return;
      }
      path = versioned[2]!;
    }
    if (path === '/_ping') {
      const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=utf-8', ...this.commonHeaders() };
      if (this.opts.pingWithoutVersion) delete headers['Api-Version'];
      res.writeHead(200, headers);
      res.end('OK');
      return;
    }
    if (path === '/version') {
      this.send(res, 200, { ...clone(VERSION_TEMPLATE), ApiVersion: this.apiVersion });
      return;
    }
    if (path === '/containers/json') {
      const all = url.searchParams.get('all') === 'true' || url.searchParams.get('all') === '1';
      this.send(res, 200, [...this.containers.values()].filter((c) => all || c.status === 'running').map((c) => this.summary(c)));
      return;
    }
    const inspect = /^\/containers\/([^/]+)\/json$/.exec(path);
    if (inspect) {
      const key = decodeURIComponent(inspect[1]!);
      const c = this.containers.get(key) ?? [...this.containers.values()].find((x) => x.name === key || x.id.startsWith(key));
      if (c) this.send(res, 200, this.inspect(c));
      else this.send(res, 404, { message: `No such container: ${key}` });
      return;
    }
    if (path === '/events') {
      this.streamEvents(url, res);
      return;
    }
    this.send(res, 404, { message: 'page not found' });
  }

  private streamEvents(url: URL, res: ServerResponse): void {
    const sub: Subscriber = { res };
    const until = parseNanoParam(url.searchParams.get('until'));
    if (until !== undefined) sub.until = until;
    const filters = url.searchParams.get('filters');
    if (filters) {
      const f = JSON.parse(filters) as Record<string, string[] | Record<string, boolean>>;
      const values = (v: string[] | Record<string, boolean> | undefined): Set<string> | undefined =>
        v === undefined ? undefined : new Set(Array.isArray(v) ? v : Object.keys(v));
      const types = values(f['type']);
      const actions = values(f['event']);
      if (types) sub.types = types;
      if (actions) sub.actions = actions;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', ...this.commonHeaders() });
    res.flushHeaders();
    const since = parseNanoParam(url.searchParams.get('since'));
    if (since !== undefined) for (const ev of this.events) if (ev.nano >= since) this.deliver(sub, ev);
    if (until !== undefined && until <= this.lastNano) {
      res.end();
      return;
    }
    this.subscribers.add(sub);
    res.once('close', () => this.subscribers.delete(sub));
  }

  private networksOf(c: FakeContainer): Record<string, unknown> {
    const tmpl = (INSPECT_TEMPLATE['NetworkSettings'] as { Networks: Record<string, Record<string, unknown>> }).Networks['fxlab_default']!;
    const live = c.status === 'running';
    const out: Record<string, unknown> = {};
    for (const [name, a] of Object.entries(c.networks)) {
      out[name] = {
        ...clone(tmpl),
        Aliases: [c.id.slice(0, 12)],
        NetworkID: this.style === 'docker' ? hexId(`net:${name}`) : name,
        EndpointID: this.style === 'docker' && live ? hexId(`ep:${c.id}:${name}`) : '',
        Gateway: live && a.ip ? a.ip.replace(/\.\d+$/, '.1') : '',
        IPAddress: live ? (a.ip ?? '') : '',
        IPPrefixLen: live && a.ip ? 16 : 0,
        GlobalIPv6Address: live ? (a.ipv6 ?? '') : '',
        GlobalIPv6PrefixLen: live && a.ipv6 ? 64 : 0,
        MacAddress: live ? (a.mac ?? '') : '',
      };
    }
    return out;
  }

  private summary(c: FakeContainer): Record<string, unknown> {
    return {
      ...clone(LIST_TEMPLATE),
      Id: c.id,
      Names: [`/${c.name}`],
      Image: c.image,
      Created: Math.floor(c.createdMs / 1000),
      Labels: c.labels,
      State: c.status,
      Status: c.status === 'running' ? 'Up' : c.status === 'exited' ? 'Exited (0)' : 'Created',
      NetworkSettings: { Networks: this.networksOf(c) },
    };
  }

  private inspect(c: FakeContainer): Record<string, unknown> {
    const t = clone(INSPECT_TEMPLATE);
    const state = t['State'] as Record<string, unknown>;
    const config = t['Config'] as Record<string, unknown>;
    const settings = t['NetworkSettings'] as Record<string, unknown>;
    return {
      ...t,
      Id: c.id,
      Name: `/${c.name}`,
      Created: iso(c.createdMs),
      State: {
        ...state,
        Status: c.status,
        Running: c.status === 'running',
        Pid: c.status === 'running' ? 4242 : 0,
        StartedAt: iso(c.startedMs),
        FinishedAt: iso(c.status === 'exited' ? c.finishedMs : undefined),
      },
      Config: { ...config, Hostname: c.id.slice(0, 12), Image: c.image, Labels: c.labels },
      NetworkSettings: { ...settings, Networks: this.networksOf(c), ...(c.ports !== undefined ? { Ports: bindings(c.ports) } : {}) },
      ...(c.ports !== undefined ? { HostConfig: { ...(t['HostConfig'] as Record<string, unknown>), PortBindings: bindings(c.ports) } } : {}),
    };
  }
}
