import { DIRECTIONS, type Direction } from '../record.js';

export const DEFAULT_KEY_PREFIX = 'dockflow';

/** The layout documented in docs/storage.md; stored in `<prefix>:{g}:schema`. */
export const SCHEMA_VERSION = 2;

/** A partition holds the records whose packet time falls in one bucket of this width, from one writer. */
export const BUCKET_MS = 600_000;

/** Writer (ingester) ids: short, and safe inside a key and a hash tag. */
export const WRITER_RE = /^[A-Za-z0-9_-]{1,32}$/;
/** A partition name: `<bucket>.<writer>`. */
export const PARTITION_RE = /^(\d{1,12})\.([A-Za-z0-9_-]{1,32})$/;

/** Indexed dimensions: each value has a list of entry numbers per partition (see docs/storage.md). */
export const INDEX_DIMS = {
  /** Container short id, on either side. */
  container: 'c',
  /** Address on either side, as fixed-width hex (`4` + 8 digits, `6` + 32 digits), so that CIDRs are lex ranges. */
  address: 'a',
  /** Port on either side, below the ephemeral range. */
  port: 'p',
  /** Remote country. */
  country: 'g',
  /** Remote AS number. */
  asn: 'n',
  /** Direction. */
  direction: 'd',
} as const;
export type IndexDim = (typeof INDEX_DIMS)[keyof typeof INDEX_DIMS];

export interface Partition {
  bucket: number;
  writer: string;
  /** `<bucket>.<writer>`. */
  name: string;
}

export function partitionName(bucket: number, writer: string): string {
  return `${bucket}.${writer}`;
}

export function parsePartition(name: string): Partition | undefined {
  const m = PARTITION_RE.exec(name);
  return m === null ? undefined : { bucket: Number(m[1]), writer: m[2]!, name };
}

/** First ms of a bucket: also the ms part of every stream ID in its partitions (`<bucket start>-<entry number>`). */
export function bucketStartMs(bucket: number): number {
  return bucket * BUCKET_MS;
}

export function bucketOf(timeMs: number): number {
  return Math.floor(timeMs / BUCKET_MS);
}

/**
 * Every Redis key dockflow uses, derived from one prefix so that tests (or two deployments sharing a Redis) can
 * isolate themselves. Per-partition keys carry the partition as a Redis Cluster hash tag (`{<bucket>.<writer>}`), so a
 * batch's transaction touches one slot; the global registries share the tag `{g}`.
 */
export interface StoreKeys {
  readonly prefix: string;
  /** The fixed stream every record goes to instead of partitions (see `storeKeys`), or undefined. */
  readonly singleStream: string | undefined;
  /** `<prefix>:{<partition>}:s`: the partition's records, flat fields (encode.ts). */
  stream(partition: string): string;
  /** `<prefix>:{<partition>}:v`: sorted set (all scores 0) of `<dim>|<value>` present in the partition, lex-ordered. */
  values(partition: string): string;
  /** `<prefix>:{<partition>}:r:<dim>|<value>`: string of 4-byte big-endian entry numbers, ascending. */
  refs(partition: string, dimValue: string): string;
  /** `<prefix>:{<partition>}:n:<top dim>:<direction code>`: sorted set value → records. */
  top(partition: string, dim: string, directionCode: string): string;
  /** `<prefix>:{<partition>}:f:<container>` / `:l:<container>`: inventory member → first / last packet time. */
  inventoryFirst(partition: string, container: string): string;
  inventoryLast(partition: string, container: string): string;
  /** `<prefix>:{g}:parts`: sorted set of live partitions, scored by bucket. */
  readonly partitions: string;
  /** `<prefix>:{g}:ctr`: hash container short id → JSON {id, name, image, labels}. */
  readonly containers: string;
  /** `<prefix>:{g}:as`: hash AS number → organisation name. */
  readonly asNames: string;
  /** `<prefix>:{g}:schema`: the layout version. */
  readonly schema: string;
  /** `<prefix>:alerts`: the detections' alert stream. */
  readonly alerts: string;
  /** `<prefix>:detect:baselines`: first-contact baselines (hash: rule, fields and subject → JSON). */
  readonly detectBaselines: string;
  /** Any other key (`<prefix>:<name>`), for bookkeeping. */
  key(...parts: string[]): string;
  /** `<prefix>:ingester:<id>:lease`: held by the one process writing as ingester `id` (see ingester-lease.ts). */
  ingesterLease(id: string): string;
  /** The version 1 layout's per-direction streams (read by `dockflow migrate`). */
  v1Stream(direction: Direction): string;
  readonly v1Streams: readonly string[];
}

/**
 * Whether every transaction, script and multi-key command of this store layout touches keys of one hash slot, so that
 * it runs on a Redis Cluster. The v2 layout is designed for it (hash tag per partition, `{g}` for registries) but has
 * not yet been verified on the real test cluster; the service refuses a cluster URL while this is false.
 */
export const CLUSTER_SAFE_LAYOUT = false;

/**
 * `singleStream` puts every record into that one stream with no partitions and no indexes, for consumers that want
 * one feed (and for the peers' benchmark harness, which counts one key); the HTTP API then finds nothing.
 */
export function storeKeys(keyPrefix: string = DEFAULT_KEY_PREFIX, singleStream?: string): StoreKeys {
  const p = keyPrefix;
  const part = (partition: string): string => `${p}:{${partition}}`;
  return {
    prefix: p,
    singleStream,
    stream: (partition) => `${part(partition)}:s`,
    values: (partition) => `${part(partition)}:v`,
    refs: (partition, dimValue) => `${part(partition)}:r:${dimValue}`,
    top: (partition, dim, code) => `${part(partition)}:n:${dim}:${code}`,
    inventoryFirst: (partition, container) => `${part(partition)}:f:${container}`,
    inventoryLast: (partition, container) => `${part(partition)}:l:${container}`,
    partitions: `${p}:{g}:parts`,
    containers: `${p}:{g}:ctr`,
    asNames: `${p}:{g}:as`,
    schema: `${p}:{g}:schema`,
    v1Stream: (direction) => `${p}:flows:${direction}`,
    v1Streams: DIRECTIONS.map((d) => `${p}:flows:${d}`),
    alerts: `${p}:alerts`,
    detectBaselines: `${p}:detect:baselines`,
    key: (...parts: string[]) => [p, ...parts].join(':'),
    ingesterLease: (id) => `${p}:ingester:${id}:lease`,
  };
}
