import { DIRECTIONS, type Direction } from '../record.js';

export const DEFAULT_KEY_PREFIX = 'dockflow';

/**
 * Every Redis key dockflow uses, derived from one prefix so that tests (or two deployments sharing a Redis) can
 * isolate themselves.
 */
export interface StoreKeys {
  readonly prefix: string;
  /** `<prefix>:flows:<direction>`: one stream per direction. */
  stream(direction: Direction): string;
  /** All flow streams, in `DIRECTIONS` order. */
  readonly streams: readonly string[];
  /** `<prefix>:alerts`: the detections' alert stream. */
  readonly alerts: string;
  /** `<prefix>:detect:baselines`: first-contact baselines (hash: rule, fields and subject → JSON). */
  readonly detectBaselines: string;
  /** Any other key (`<prefix>:<name>`), for indexes and bookkeeping. */
  key(...parts: string[]): string;
  /** `<prefix>:ingester:<id>:lease`: held by the one process writing as ingester `id` (see ingester-lease.ts). */
  ingesterLease(id: string): string;
}

/**
 * Whether every transaction, script and multi-key command of this store layout touches keys of one hash slot, so that
 * it runs on a Redis Cluster. It does not: a writer's batch is one transaction over every direction's stream and the
 * index keys, the retention trim is a script that walks registries and deletes keys it does not declare, and queries
 * union keys of many slots into scratch keys. The service refuses a cluster URL while this is false; docs/scaling.md
 * states what a layout must do for it to be true.
 */
export const CLUSTER_SAFE_LAYOUT = false;

/**
 * `singleStream` puts every direction into that one stream, for consumers that want one feed (and for the peers'
 * benchmark harness, which counts one key); the HTTP API's indexes then stay empty.
 */
export function storeKeys(keyPrefix: string = DEFAULT_KEY_PREFIX, singleStream?: string): StoreKeys {
  const key = (...parts: string[]): string => [keyPrefix, ...parts].join(':');
  const byDirection = new Map<Direction, string>(DIRECTIONS.map((d) => [d, singleStream ?? key('flows', d)]));
  return {
    prefix: keyPrefix,
    stream: (direction) => byDirection.get(direction) ?? key('flows', direction),
    streams: [...new Set(byDirection.values())],
    alerts: key('alerts'),
    detectBaselines: key('detect', 'baselines'),
    key,
    ingesterLease: (id) => key('ingester', id, 'lease'),
  };
}
