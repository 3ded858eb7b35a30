import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { TOP_DIMENSIONS, DIRECTION_CODE } from './indexer.js';
import { BUCKET_MS, parsePartition, type StoreKeys } from './keys.js';

export interface RetentionOptions {
  /** Partitions whose bucket ended longer ago than this (plus a margin) are deleted; 0 = none by age. */
  retentionMs: number;
  /** This writer's partitions beyond this many records, oldest first, are deleted whole; 0 = no cap. */
  maxRecords: number;
  writerId: string;
  logger: Logger;
  now: () => number;
  /** Told which partitions were deleted (the writer registers them again if it writes to them again). */
  onDeleted?: (names: readonly string[]) => void;
}

/**
 * The writer refuses records for a bucket that ended `retentionMs` ago; partitions are deleted only this much later,
 * so that a batch accepted just before that cannot recreate keys of a partition already deleted.
 */
export const DELETE_MARGIN_MS = 120_000;

/** Keys per UNLINK / members per ZRANGE: each command stays short (well under a millisecond). */
const CHUNK = 500;

/**
 * Retention by whole partitions: a partition's stream, indexes, counters and inventories share its hash tag and go
 * together, so nothing is left pointing at a deleted entry and nothing stored is left unreachable. Age is judged by
 * the packet-time bucket for entries and indexes alike. Deleting is a sequence of short commands (ZREM from the
 * registry first, so queries stop seeing the partition, then UNLINK in chunks), never one long script.
 */
export class Retention {
  private running = false;

  constructor(
    private readonly redis: Redis,
    private readonly keys: StoreKeys,
    private readonly opts: RetentionOptions,
  ) {}

  /** One pass: every partition past the age limit, then this writer's oldest partitions beyond the record cap. */
  async run(): Promise<{ deleted: string[] }> {
    if (this.running) return { deleted: [] };
    this.running = true;
    const deleted: string[] = [];
    try {
      if (this.opts.retentionMs > 0) {
        const horizon = this.opts.now() - this.opts.retentionMs - DELETE_MARGIN_MS;
        // Buckets that ended at or before the horizon: bucket + 1 <= horizon / BUCKET_MS.
        const maxBucket = Math.floor(horizon / BUCKET_MS) - 1;
        for (;;) {
          const old = await this.redis.zrange(this.keys.partitions, '-inf', String(maxBucket), 'BYSCORE', 'LIMIT', 0, 100);
          if (old.length === 0) break;
          for (const name of old) {
            await this.deletePartition(name);
            deleted.push(name);
          }
        }
      }
      if (this.opts.maxRecords > 0) deleted.push(...(await this.capRecords()));
    } catch (err) {
      this.opts.logger.warn({ err }, 'retention pass failed; it runs again at the next interval');
    } finally {
      this.running = false;
      if (deleted.length > 0) {
        this.opts.onDeleted?.(deleted);
        this.opts.logger.info({ partitions: deleted.length }, 'retention deleted partitions');
      }
    }
    return { deleted };
  }

  private async capRecords(): Promise<string[]> {
    const all = await this.redis.zrange(this.keys.partitions, '0', '-1');
    const mine = all.filter((name) => parsePartition(name)?.writer === this.opts.writerId).reverse();
    const pl = this.redis.pipeline();
    for (const name of mine) pl.xlen(this.keys.stream(name));
    const lens = ((await pl.exec()) ?? []).map(([err, n]) => (err ? 0 : Number(n)));
    let total = 0;
    const out: string[] = [];
    for (let i = 0; i < mine.length; i++) {
      total += lens[i]!;
      // The newest partition always stays: it is being written.
      if (i > 0 && total > this.opts.maxRecords) {
        await this.deletePartition(mine[i]!);
        out.push(mine[i]!);
      }
    }
    return out;
  }

  /** Deletes one partition whole, in short commands. */
  async deletePartition(name: string): Promise<void> {
    const k = this.keys;
    await this.redis.zrem(k.partitions, name);
    const valuesKey = k.values(name);
    for (;;) {
      const values = await this.redis.zrange(valuesKey, '0', String(CHUNK - 1));
      if (values.length === 0) break;
      const doomed: string[] = [];
      for (const v of values) {
        doomed.push(k.refs(name, v));
        if (v.startsWith('c|')) {
          const c = v.slice(2);
          doomed.push(k.inventoryFirst(name, c), k.inventoryLast(name, c));
        }
      }
      await this.redis.multi().unlink(...doomed).zrem(valuesKey, ...values).exec();
    }
    const rest = [k.stream(name), valuesKey];
    for (const dim of TOP_DIMENSIONS) for (const code of Object.values(DIRECTION_CODE)) rest.push(k.top(name, dim, code));
    await this.redis.unlink(...rest);
  }
}
