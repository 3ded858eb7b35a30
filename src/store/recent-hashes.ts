import type { Redis } from 'ioredis';
import { CONTEXT_FIELD, RECORD_FIELD } from './encode.js';
import { storeKeys } from './keys.js';

/**
 * The `event.hash` of the last `perStream` entries of every flow stream (RELP records carry one): after a crash the
 * messages a RELP sender resends are those stored last and not acknowledged, so they are found among these.
 * Reads only the entries' context JSON, not their messages.
 */
export async function recentRecordHashes(redis: Redis, opts: { keyPrefix: string; singleStream?: string | undefined; perStream: number }): Promise<string[]> {
  const hashes: string[] = [];
  for (const stream of storeKeys(opts.keyPrefix, opts.singleStream).streams) {
    const entries = (await redis.xrevrange(stream, '+', '-', 'COUNT', opts.perStream)) as Array<[string, string[]]>;
    for (const [, fields] of entries.reverse()) {
      for (let i = 0; i + 1 < fields.length; i += 2) {
        if (fields[i] !== CONTEXT_FIELD && fields[i] !== RECORD_FIELD) continue;
        const json = fields[i + 1]!;
        // Most records are not RELP's: look for the key before parsing.
        if (!json.includes('"hash"')) continue;
        try {
          const hash = (JSON.parse(json) as { event?: { hash?: unknown } }).event?.hash;
          if (typeof hash === 'string') hashes.push(hash);
        } catch {
          // not a record this reader can read: no hash
        }
      }
    }
  }
  return hashes;
}
