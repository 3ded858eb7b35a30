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
}

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
  };
}
