import { createRequire } from 'node:module';
import type { Cluster } from 'ioredis';
import { RespConnection, type RespConnectionHooks, type RespTarget } from './resp.js';

/*
 * The batches' RESP connections (resp.ts) for one Redis or for a Redis Cluster. In a cluster a transaction or script
 * may only touch keys of one hash slot, and must be sent to the master that owns that slot: a writer computes the slot
 * of its batch's keys (`slotOf`, `commonSlot`), asks `forSlot` for the connection, and hands every error reply to
 * `redirected`, which refreshes the slot map when the reply says it is stale (MOVED, ASK, TRYAGAIN, CLUSTERDOWN).
 * The map is ioredis Cluster's own (it asks the cluster with CLUSTER SLOTS, on start, on redirections and every few
 * seconds): one source of truth for both clients.
 */

const require = createRequire(import.meta.url);
// A dependency of ioredis (the same function its Cluster client routes with), so both agree on every slot.
const keySlot = require('cluster-key-slot') as (key: string | Buffer) => number;

export const SLOT_COUNT = 16384;

/** The hash slot of a key (CRC16 of the key, or of its `{hash tag}`, mod 16384). */
export function slotOf(key: string | Buffer): number {
  return keySlot(key);
}

/** The slot every key hashes to, or -1 when they span slots (such a batch is refused by a cluster: CROSSSLOT). */
export function commonSlot(keys: readonly (string | Buffer)[]): number {
  if (keys.length === 0) return 0;
  const first = keySlot(keys[0] as string | Buffer);
  for (let i = 1; i < keys.length; i++) if (keySlot(keys[i] as string | Buffer) !== first) return -1;
  return first;
}

/** Error replies that mean "ask again elsewhere or later", not "refused": the batch was not run and may be resent. */
const REDIRECT_RE = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)\b/;

export function isRedirect(err: unknown): boolean {
  return err instanceof Error && REDIRECT_RE.test(err.message);
}

/** The connection(s) a writer sends its batches on, whatever the deployment. */
export interface SlotConnections {
  /** True for a cluster: every batch's keys must share one slot. */
  readonly cluster: boolean;
  /** Starts connecting (one Redis: its connection; a cluster: connections are made as slots are asked for). */
  connect(): void;
  /**
   * The connection to the server that owns `slot` now; one Redis: its connection, whatever the slot. `undefined`
   * while a cluster's slot map is not known yet (the map is being fetched; ask again on the next `onReady`/retry).
   * The connection may not be ready (`isReady`): sends then fail at once, as with the one connection.
   */
  forSlot(slot: number): RespConnection | undefined;
  /** Every connection open now. */
  connections(): RespConnection[];
  /**
   * Call with every error reply a batch got: true when it is a redirection (the batch did not run; resend it after
   * a short wait), and then the slot map is refreshed.
   */
  redirected(err: unknown): boolean;
  close(): void;
}

/** One Redis: one connection for every slot. */
export class SingleConnection implements SlotConnections {
  readonly cluster = false;
  private readonly connection: RespConnection;

  constructor(target: RespTarget, hooks: RespConnectionHooks) {
    this.connection = new RespConnection(target, hooks);
  }

  connect(): void {
    this.connection.connect();
  }

  forSlot(): RespConnection {
    return this.connection;
  }

  connections(): RespConnection[] {
    return [this.connection];
  }

  redirected(err: unknown): boolean {
    return isRedirect(err);
  }

  close(): void {
    this.connection.close();
  }
}

/**
 * A Redis Cluster: one RESP connection per master, made when a slot it owns is first asked for, closed once the
 * cluster no longer gives it any slot (a failed-over master, a removed node). Connections to one master are shared
 * by all its slots, so a writer keeps one socket per shard.
 */
export class ClusterSlotConnections implements SlotConnections {
  readonly cluster = true;
  private readonly byNode = new Map<string, RespConnection>();
  private started = false;
  private closed = false;
  private readonly onRefresh = (): void => this.prune();

  /**
   * `cluster`: the ioredis Cluster client the rest of dockflow uses (its slot map is read, and refreshed on
   * redirections). `hooks` are given to every node's connection.
   */
  constructor(
    private readonly client: Cluster,
    private readonly hooks: RespConnectionHooks,
  ) {
    client.on('refresh', this.onRefresh);
  }

  connect(): void {
    this.started = true;
    for (const c of this.byNode.values()) c.connect();
  }

  forSlot(slot: number): RespConnection | undefined {
    if (this.closed) return undefined;
    const node = this.client.slots[slot]?.[0];
    if (node === undefined) {
      this.refresh();
      return undefined;
    }
    let connection = this.byNode.get(node);
    if (connection === undefined) {
      connection = new RespConnection(this.targetOf(node), {
        ...this.hooks,
        onLost: () => {
          this.hooks.onLost?.();
          // A master that dies is usually replaced by its replica: learn who serves its slots now.
          this.refresh();
        },
      });
      this.byNode.set(node, connection);
      if (this.started) connection.connect();
    }
    return connection;
  }

  connections(): RespConnection[] {
    return [...this.byNode.values()];
  }

  /** The master serving `slot` now, as `host:port`, from the client's map. */
  nodeOf(slot: number): string | undefined {
    return this.client.slots[slot]?.[0];
  }

  redirected(err: unknown): boolean {
    if (!isRedirect(err)) return false;
    this.refresh();
    return true;
  }

  close(): void {
    this.closed = true;
    this.client.off('refresh', this.onRefresh);
    for (const c of this.byNode.values()) c.close();
    this.byNode.clear();
  }

  private refresh(): void {
    if (this.closed || this.client.status !== 'ready') return;
    // ioredis runs one refresh at a time and joins concurrent requests to it.
    this.client.refreshSlotsCache();
  }

  /** Closes connections to nodes that serve no slot any more. */
  private prune(): void {
    const masters = new Set<string>();
    for (const owners of this.client.slots) if (owners?.[0] !== undefined) masters.add(owners[0]);
    for (const [node, c] of this.byNode) {
      if (masters.has(node)) continue;
      c.close();
      this.byNode.delete(node);
    }
  }

  private targetOf(node: string): RespTarget {
    const colon = node.lastIndexOf(':');
    const o = this.client.options.redisOptions ?? {};
    return {
      host: node.slice(0, colon),
      port: Number(node.slice(colon + 1)),
      username: o.username,
      password: o.password,
      tls: o.tls,
      connectTimeout: o.connectTimeout,
    };
  }
}
