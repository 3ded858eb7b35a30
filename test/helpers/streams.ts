import type { Redis } from 'ioredis';

/** The flow streams the service wrote (`dockflow:flows:<direction>`), sorted. */
export async function streamKeys(redis: Redis): Promise<string[]> {
  const keys: string[] = [];
  for (const key of await redis.keys('dockflow:flows:*')) if ((await redis.type(key)) === 'stream') keys.push(key);
  return keys.sort();
}

/** Records stored over all of them. */
export async function storedCount(redis: Redis): Promise<number> {
  let n = 0;
  for (const key of await streamKeys(redis)) n += await redis.xlen(key);
  return n;
}
