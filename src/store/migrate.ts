import type { Redis } from 'ioredis';
import { decodeEntry, MESSAGE_FIELD } from './encode.js';
import type { StoreKeys } from './keys.js';
import type { StreamWriter } from './stream-writer.js';

export interface MigrateResult {
  /** Version 1 entries read. */
  read: number;
  /** Entries that held no record (counted, skipped). */
  unreadable: number;
  /** Version 1 keys deleted afterwards. */
  deletedKeys: number;
}

/** Every version 1 key family under the prefix. */
const V1_PATTERNS = ['flows:*', 'ix:*', 'reg:*', 'top:*', 'inv:*'];

/**
 * Copies a version 1 store (`<prefix>:flows:<direction>` streams of `m`+`x` or `r` entries) into the version 2 layout
 * through `writer` (records keep their packet times, so they land in their partitions; those already past retention
 * are counted `expired` by the writer), then deletes the version 1 keys unless `keepV1`. Reads in pages of `page`
 * entries and waits for the writer's queue to drain, so memory stays bounded however large the store.
 */
export async function migrateV1(redis: Redis, keys: StoreKeys, writer: StreamWriter, opts: { keepV1?: boolean; page?: number } = {}): Promise<MigrateResult> {
  const page = opts.page ?? 1000;
  const result: MigrateResult = { read: 0, unreadable: 0, deletedKeys: 0 };
  let drained: (() => void) | undefined;
  writer.onDrain(() => drained?.());
  const pushedBefore = writer.stats().pushed.file;
  for (const stream of keys.v1Streams) {
    if ((await redis.type(stream)) !== 'stream') continue;
    let start = '-';
    for (;;) {
      const entries = (await redis.xrange(stream, start, '+', 'COUNT', page)) as [string, string[]][];
      for (const [, fields] of entries) {
        result.read++;
        const record = decodeEntry(fields);
        if (record === undefined) {
          result.unreadable++;
          continue;
        }
        const m = fields.indexOf(MESSAGE_FIELD);
        const message = m >= 0 && m % 2 === 0 ? fields[m + 1] : undefined;
        if (!writer.push(record, 'file', message)) await new Promise<void>((r) => (drained = r));
      }
      if (entries.length < page) break;
      start = `(${entries[entries.length - 1]![0]}`;
    }
  }
  const pushed = writer.stats().pushed.file - pushedBefore;
  // Everything handed over is stored or counted before anything is deleted.
  for (;;) {
    const s = writer.stats();
    if (s.queued === 0 && s.inFlight === 0 && s.stored + s.dropped.expired >= pushed) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  if (opts.keepV1 !== true) {
    for (const pattern of V1_PATTERNS) {
      let cursor = '0';
      do {
        const [next, found] = await redis.scan(cursor, 'MATCH', `${keys.prefix}:${pattern}`, 'COUNT', 1000);
        cursor = next;
        if (found.length > 0) result.deletedKeys += await redis.unlink(...found);
      } while (cursor !== '0');
    }
  }
  return result;
}
