import { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { DEFAULTS } from '../../config/index.js';
import type { DockerClient, EventStream } from './client.js';
import type { AddressRef, ContainerMeta, Ledger } from './ledger.js';
import { dockerMetrics, type DockerMetrics } from './metrics.js';
import { nanoTextToMs, nanoTextToSince } from './ndjson.js';
import type { ContainerInspect, DockerEvent, EndpointSettings } from './types.js';

export interface WatcherOptions {
  /** The Docker host's name in the ledger (the endpoint's name in the config). */
  host: string;
  client: DockerClient;
  ledger: Ledger;
  logger: Logger;
  metrics?: DockerMetrics;
  reconcileIntervalMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  inspectConcurrency?: number;
  now?: () => number;
}

/** Every address a container has on any network, IPv4 and global IPv6, with the MAC of that network's interface. */
export function addressesOf(networks: Record<string, EndpointSettings> | null | undefined): AddressRef[] {
  const out: AddressRef[] = [];
  for (const [network, s] of Object.entries(networks ?? {})) {
    const base: Omit<AddressRef, 'ip'> = { network };
    if (s.MacAddress) base.mac = s.MacAddress.toLowerCase();
    if (s.IPAddress) out.push({ ip: s.IPAddress, ...base });
    if (s.GlobalIPv6Address) out.push({ ip: s.GlobalIPv6Address, ...base });
  }
  return out;
}

/** Container ports bound to a host port (`80/tcp`): the running container's, else the requested bindings. */
export function publishedPorts(c: ContainerInspect): string[] {
  const out = new Set<string>();
  for (const table of [c.NetworkSettings?.Ports, c.HostConfig?.PortBindings]) {
    for (const [port, bindings] of Object.entries(table ?? {})) if (Array.isArray(bindings) && bindings.length > 0) out.add(port);
  }
  return [...out].sort();
}

function metaOf(c: ContainerInspect): ContainerMeta {
  return {
    id: c.Id,
    name: (c.Name ?? '').replace(/^\//, ''),
    image: c.Config?.Image ?? '',
    labels: c.Config?.Labels ?? {},
    ports: publishedPorts(c),
  };
}

/** Docker's zero time (`0001-01-01T00:00:00Z`) and unparsable times are absent. */
function apiTimeMs(s: string | undefined): number | undefined {
  if (!s) return undefined;
  const ms = Date.parse(s);
  return Number.isFinite(ms) && ms > 0 ? ms : undefined;
}

/** Docker clears a stopped container's addresses; a created one may already have them at `network connect`. */
function isLive(c: ContainerInspect): boolean {
  const status = c.State?.Status;
  return c.State?.Running === true || status === 'running' || status === 'restarting' || status === 'created';
}

/** Podman says `remove` where Docker says `destroy`; `die` comes first in both and is the exact end. */
const ENDING_ACTIONS = new Set(['die', 'stop', 'destroy', 'remove']);

/**
 * Keeps the ledger of one Docker host: inventory on (re)connect, then the `/events` stream, resumed from the last
 * event handled (persisted with the ledger) so that what happened while disconnected or while dockflow was down is
 * replayed; periodic reconciliation closes what vanished without an event.
 */
export class DockerWatcher {
  readonly host: string;
  private readonly client: DockerClient;
  private readonly ledger: Ledger;
  private readonly logger: Logger;
  private readonly metrics: DockerMetrics;
  private readonly reconcileIntervalMs: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly inspectConcurrency: number;
  private readonly now: () => number;
  private stopped = false;
  private connected = false;
  private stream: EventStream | undefined;
  private loop: Promise<void> | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly readyPromise: Promise<void>;
  private markReady!: () => void;

  constructor(opts: WatcherOptions) {
    this.host = opts.host;
    this.client = opts.client;
    this.ledger = opts.ledger;
    this.logger = opts.logger.child({ docker: opts.host });
    this.metrics = opts.metrics ?? dockerMetrics(new Registry());
    this.reconcileIntervalMs = opts.reconcileIntervalMs ?? DEFAULTS.docker.reconcileIntervalMs;
    this.backoffMinMs = opts.backoffMinMs ?? 500;
    this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
    this.inspectConcurrency = opts.inspectConcurrency ?? 8;
    this.now = opts.now ?? Date.now;
    this.readyPromise = new Promise((resolve) => (this.markReady = resolve));
    this.metrics.apiUp.set({ host: this.host }, 0);
  }

  get up(): boolean {
    return this.connected;
  }

  start(): void {
    if (this.loop) return;
    this.loop = this.run();
    this.reconcileTimer = setInterval(() => {
      if (!this.connected) return;
      this.reconcile().catch((err: unknown) => this.logger.warn({ err }, 'docker: reconciliation failed'));
    }, this.reconcileIntervalMs);
    this.reconcileTimer.unref();
  }

  /** Resolves after the first inventory, once the event stream is open. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    this.stream?.close();
    this.wake?.();
    await this.loop;
    await this.chain.catch(() => undefined);
    this.setUp(false);
  }

  /** Lists the containers and brings the ledger in line: opens what runs, closes what is gone. */
  reconcile(): Promise<void> {
    return this.exclusive(() => this.reconcileNow());
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      try {
        await this.client.negotiate();
        const cursor = this.ledger.cursor(this.host);
        // The stream opens before the inventory so that nothing between the two is missed; events are idempotent.
        this.stream = await this.client.events({
          ...(cursor ? { since: nanoTextToSince(cursor) } : {}),
          filters: { type: ['container', 'network'] },
          onBadLine: (line) => {
            this.metrics.badEvents.inc({ host: this.host });
            this.logger.warn({ line: line.slice(0, 200) }, 'docker: event line is not JSON');
          },
        });
        await this.reconcile();
        this.setUp(true);
        attempt = 0;
        this.markReady();
        for await (const event of this.stream) await this.exclusive(() => this.handle(event));
        if (!this.stopped) this.logger.warn('docker: the engine closed the event stream');
      } catch (err) {
        if (!this.stopped) this.logger.warn({ err }, 'docker: API unavailable');
      }
      this.stream?.close();
      this.stream = undefined;
      if (this.stopped) break;
      this.setUp(false);
      this.metrics.reconnects.inc({ host: this.host });
      await this.sleep(this.backoff(attempt++));
    }
  }

  private backoff(attempt: number): number {
    const base = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** Math.min(attempt, 16));
    return base * (0.8 + Math.random() * 0.4);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private setUp(up: boolean): void {
    this.connected = up;
    this.metrics.apiUp.set({ host: this.host }, up ? 1 : 0);
  }

  /** Event handling and reconciliation both read then write the ledger, so they take turns. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async handle(event: DockerEvent): Promise<void> {
    const type = event.Type ?? 'container';
    this.metrics.events.inc({ host: this.host, type });
    const atMs = event.timeNanoText ? nanoTextToMs(event.timeNanoText) : this.now();
    // Docker appends details after a colon (`exec_start: sh`, `health_status: healthy`).
    const rawAction = event.Action ?? event.status ?? '';
    const colon = rawAction.indexOf(':');
    const action = colon === -1 ? rawAction : rawAction.slice(0, colon);
    const attrs = event.Actor?.Attributes ?? {};
    if (type === 'container') {
      const id = event.Actor?.ID ?? event.id;
      if (id) {
        if (action === 'start') await this.openLive(id, atMs);
        else if (ENDING_ACTIONS.has(action)) this.ledger.release(this.host, id, atMs);
        else if (action === 'rename' && attrs['name']) this.ledger.rename(this.host, id, attrs['name'].replace(/^\//, ''), atMs);
      }
    } else if (type === 'network' && (action === 'connect' || action === 'disconnect')) {
      // Docker: the actor is the network and the container is an attribute; podman: the actor is the container.
      const id = attrs['container'] ?? event.Actor?.ID;
      if (id) {
        if (action === 'connect') await this.openLive(id, atMs);
        else await this.closeDisconnected(id, attrs['container'] ? attrs['name'] : undefined, atMs);
      }
    }
    if (event.timeNanoText) this.ledger.setCursor(this.host, event.timeNanoText);
  }

  /**
   * Events carry no address: ask the engine. A replayed `start` of a container that has died since opens nothing
   * rather than closing anything early; its own replayed `die` ends what was open.
   */
  private async openLive(id: string, atMs: number): Promise<void> {
    const c = await this.client.inspectContainer(id);
    if (!c || !isLive(c)) return;
    const meta = metaOf(c);
    for (const addr of addressesOf(c.NetworkSettings?.Networks)) this.ledger.open(this.host, meta, addr, atMs);
  }

  private async closeDisconnected(id: string, network: string | undefined, atMs: number): Promise<void> {
    const open = this.ledger.openHoldings(this.host, id);
    if (open.length === 0) return;
    let stillHeld: Set<string> | undefined;
    if (network === undefined) {
      const c = await this.client.inspectContainer(id);
      if (!c) return; // removed: its `remove`/`destroy` event ends it at the exact time
      stillHeld = new Set(isLive(c) ? addressesOf(c.NetworkSettings?.Networks).map((a) => a.ip) : []);
    }
    for (const h of open) {
      const gone = network !== undefined ? h.network === network : !stillHeld!.has(h.ip);
      if (gone) this.ledger.release(this.host, id, atMs, { ip: h.ip });
    }
  }

  private async reconcileNow(): Promise<void> {
    const nowMs = this.now();
    const list = await this.client.listContainers({ all: true });
    const running = new Map<string, (typeof list)[number]>();
    const known = new Set<string>();
    for (const c of list) {
      known.add(c.Id);
      if (c.State === 'running') running.set(c.Id, c);
    }
    await forEachLimited([...running.values()], this.inspectConcurrency, async (c) => {
      const open = this.ledger.openHoldings(this.host, c.Id);
      if (open.length === 0) {
        // New to us: it has held its addresses since it started.
        const full = await this.client.inspectContainer(c.Id);
        if (!full || !isLive(full)) return;
        const fromMs = apiTimeMs(full.State?.StartedAt) ?? nowMs;
        const meta = metaOf(full);
        for (const addr of addressesOf(full.NetworkSettings?.Networks)) this.ledger.open(this.host, meta, addr, fromMs);
        return;
      }
      const name = (c.Names?.[0] ?? '').replace(/^\//, '');
      if (name && open[0]!.container.name !== name) this.ledger.rename(this.host, c.Id, name, nowMs);
      const addrs = addressesOf(c.NetworkSettings?.Networks);
      const current = new Set(addrs.map((a) => a.ip));
      for (const h of open) if (!current.has(h.ip)) this.ledger.release(this.host, c.Id, nowMs, { ip: h.ip, closedBy: 'observed' });
      const meta = this.ledger.openHoldings(this.host, c.Id)[0]?.container ?? open[0]!.container;
      for (const addr of addrs) this.ledger.open(this.host, meta, addr, nowMs);
    });
    for (const id of this.ledger.openContainerIds(this.host)) {
      if (running.has(id)) continue;
      // Stopped but not removed: the engine still knows when it finished.
      const full = known.has(id) ? await this.client.inspectContainer(id) : undefined;
      const finishedMs = full ? apiTimeMs(full.State?.FinishedAt) : undefined;
      if (finishedMs !== undefined) this.ledger.release(this.host, id, finishedMs);
      else this.ledger.release(this.host, id, nowMs, { closedBy: 'observed' });
    }
    this.ledger.prune(nowMs);
    await this.ledger.flush();
  }
}

async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
