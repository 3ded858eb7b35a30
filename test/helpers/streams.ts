import type { Redis } from 'ioredis';
import { storeKeys } from '../../src/store/keys.js';

/** The partition streams the service wrote (listed in `dockflow:{g}:parts`), in partition order. */
export async function streamKeys(redis: Redis, prefix = 'dockflow'): Promise<string[]> {
  const keys = storeKeys(prefix);
  const out: string[] = [];
  for (const name of await redis.zrange(keys.partitions, '0', '-1')) if ((await redis.type(keys.stream(name))) === 'stream') out.push(keys.stream(name));
  return out;
}

/** Records stored over all of them. */
export async function storedCount(redis: Redis, prefix = 'dockflow'): Promise<number> {
  let n = 0;
  for (const key of await streamKeys(redis, prefix)) n += await redis.xlen(key);
  return n;
}
