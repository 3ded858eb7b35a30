import type { Redis } from 'ioredis';
import { storeKeys } from './keys.js';

/** Partitions read, newest first: the current and previous buckets of every writer, with room to spare. */
const RECENT_PARTITIONS = 16;

/**
 * The `event.hash` (field `eh`, docs/storage.md) of the last `perStream` entries of the newest partitions (RELP
 * records carry one): after a crash the messages a RELP sender resends are those stored last and not acknowledged,
 * so they are found among these. Reads only the `eh` field's entries, not their messages.
 */
export async function recentRecordHashes(redis: Redis, opts: { keyPrefix: string; singleStream?: string | undefined; perStream: number }): Promise<string[]> {
  const keys = storeKeys(opts.keyPrefix, opts.singleStream);
  const streams =
    opts.singleStream !== undefined
      ? [opts.singleStream]
      : (await redis.zrange(keys.partitions, '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, RECENT_PARTITIONS)).map((p) => keys.stream(p));
  const hashes: string[] = [];
  for (const stream of streams.reverse()) {
    const entries = (await redis.xrevrange(stream, '+', '-', 'COUNT', opts.perStream)) as Array<[string, string[]]>;
    for (const [, fields] of entries.reverse()) {
      for (let i = 0; i + 1 < fields.length; i += 2) {
        if (fields[i] === 'eh' && fields[i + 1] !== '') hashes.push(fields[i + 1]!);
      }
    }
  }
  return hashes;
}
