import type { Redis } from 'ioredis';
import { FieldBlob, LUA_FIELDS } from './field-blob.js';

/**
 * A batch's index writes, merged on the client and applied by one Lua function inside the writer's script, in the
 * same atomic call as the batch's XADDs. Merging here instead of in Lua matters: Redis runs single-threaded beside
 * the ingester, and interpreting ~40 small fields per record cost it more than the writes themselves.
 *
 * Wire form (a FieldBlob; key numbers index the script's KEYS after `keyOffset`), one block per key:
 *   Z <key> <flag> <n> (<score> <member>)×n    ZADD, flag `-` (none), GT, LT or NX
 *   I <key> <n> (<member> <increment>)×n       ZINCRBY per member
 *   H <key> <n> (<field> <value>)×n            HSET
 *   A <key> <arg>                              APPEND the payload passed as the `arg`-th argument after the blob
 * Blocks hold at most BLOCK_PAIRS pairs: Lua's unpack() has a stack limit.
 */
const BLOCK_PAIRS = 500;

type ZaddFlag = 'GT' | 'LT' | 'NX';

export class IndexOps {
  readonly keys: string[] = [];
  private readonly keyNumber = new Map<string, number>();
  /** Plain ZADDs: key number → score, member, score, member, … (members are distinct entries: nothing to merge). */
  private readonly plain = new Map<number, string[]>();
  /** Conditional ZADDs, merged per member the way Redis would apply them: key number → member → score. */
  private readonly conditional = new Map<number, { flag: ZaddFlag; members: Map<string, number> }>();
  private readonly counters = new Map<number, Map<string, number>>();
  private readonly hashes = new Map<number, Map<string, string>>();
  /** APPENDs: binary payloads travel as script arguments of their own (the blob's fields cannot hold any byte). */
  private readonly appends = new Map<number, Buffer[]>();

  /** The 1-based number of a key in this batch. */
  key(name: string): number {
    let n = this.keyNumber.get(name);
    if (n === undefined) {
      n = this.keys.push(name);
      this.keyNumber.set(name, n);
    }
    return n;
  }

  zadd(key: number, score: string, member: string): void {
    let list = this.plain.get(key);
    if (list === undefined) this.plain.set(key, (list = []));
    list.push(score, member);
  }

  /**
   * ZADD GT/LT/NX: only the write Redis would keep is sent (the highest score for GT, the lowest for LT, the first for
   * NX). A key takes one flag: the indexer uses each kind of key with one flag only.
   */
  zaddIf(key: number, flag: ZaddFlag, score: number, member: string): void {
    let c = this.conditional.get(key);
    if (c === undefined) this.conditional.set(key, (c = { flag, members: new Map() }));
    const had = c.members.get(member);
    if (had === undefined || (flag === 'GT' && score > had) || (flag === 'LT' && score < had)) c.members.set(member, score);
  }

  incr(key: number, member: string): void {
    let c = this.counters.get(key);
    if (c === undefined) this.counters.set(key, (c = new Map()));
    c.set(member, (c.get(member) ?? 0) + 1);
  }

  hset(key: number, field: string, value: string): void {
    let h = this.hashes.get(key);
    if (h === undefined) this.hashes.set(key, (h = new Map()));
    h.set(field, value);
  }

  append(key: number, bytes: Buffer): void {
    let list = this.appends.get(key);
    if (list === undefined) this.appends.set(key, (list = []));
    list.push(bytes);
  }

  /** The APPEND payloads, in the order the blob's `A` blocks name them (argument numbers after the blob). */
  get payloads(): Buffer[] {
    const out: Buffer[] = [];
    for (const list of this.appends.values()) out.push(list.length === 1 ? list[0]! : Buffer.concat(list));
    return out;
  }

  get empty(): boolean {
    return this.keys.length === 0;
  }

  encode(): Buffer {
    let fields = 0;
    for (const list of this.plain.values()) fields += list.length;
    const blob = new FieldBlob(fields * 16 + 4096);
    for (const [key, list] of this.plain) {
      for (let i = 0; i < list.length; i += BLOCK_PAIRS * 2) {
        const end = Math.min(list.length, i + BLOCK_PAIRS * 2);
        this.header(blob, 'Z', key, (end - i) / 2, '-');
        for (let j = i; j < end; j++) blob.field(list[j] as string);
      }
    }
    for (const [key, { flag, members }] of this.conditional) this.pairs(blob, 'Z', key, members, flag);
    for (const [key, counts] of this.counters) this.pairs(blob, 'I', key, counts);
    for (const [key, values] of this.hashes) this.pairs(blob, 'H', key, values);
    let arg = 0;
    for (const key of this.appends.keys()) {
      blob.field('A');
      blob.field(String(key));
      blob.field(String(++arg));
    }
    return blob.bytes();
  }

  private header(blob: FieldBlob, op: string, key: number, n: number, flag?: string): void {
    blob.field(op);
    blob.field(String(key));
    if (flag !== undefined) blob.field(flag);
    blob.field(String(n));
  }

  private pairs(blob: FieldBlob, op: 'Z' | 'I' | 'H', key: number, map: Map<string, number | string>, flag?: string): void {
    let left = map.size;
    let inBlock = 0;
    for (const [k, v] of map) {
      if (inBlock === 0) {
        inBlock = Math.min(BLOCK_PAIRS, left);
        left -= inBlock;
        this.header(blob, op, key, inBlock, flag);
      }
      // ZADD takes score then member; ZINCRBY's pairs are (member, increment), HSET's (field, value).
      if (op === 'Z') {
        blob.field(String(v));
        blob.field(k);
      } else {
        blob.field(k);
        blob.field(String(v));
      }
      inBlock--;
    }
  }
}

/** `applyIndex(blob, keyOffset)`, spliced into the scripts that apply IndexOps. Needs LUA_FIELDS. */
export const LUA_APPLY_INDEX = `${LUA_FIELDS}
local function applyIndex(blob, keyOffset, argOffset)
  local nextField = fields(blob)
  while true do
    local op = nextField()
    if not op then break end
    local key = KEYS[keyOffset + tonumber(nextField())]
    if op == 'Z' then
      local flag = nextField()
      local n = tonumber(nextField())
      local args = {}
      if flag ~= '-' then args[1] = flag end
      local base = #args
      for i = 1, n * 2 do args[base + i] = nextField() end
      redis.call('ZADD', key, unpack(args))
    elseif op == 'A' then
      redis.call('APPEND', key, ARGV[argOffset + tonumber(nextField())])
    elseif op == 'I' then
      for _ = 1, tonumber(nextField()) do
        local member = nextField()
        redis.call('ZINCRBY', key, nextField(), member)
      end
    else
      local n = tonumber(nextField())
      local args = {}
      for i = 1, n * 2 do args[i] = nextField() end
      redis.call('HSET', key, unpack(args))
    end
  end
end
`;

/** IndexOps applied on their own: ARGV[1] is the blob, then the APPEND payloads; KEYS its keys. */
export const INDEX_OPS_SCRIPT = `${LUA_APPLY_INDEX}
applyIndex(ARGV[1], 0, 1)
return 0
`;

/** Applies index writes outside the writer (loading test and benchmark data). */
export async function applyIndexOps(redis: Redis, ops: IndexOps): Promise<void> {
  await redis.eval(INDEX_OPS_SCRIPT, ops.keys.length, ...ops.keys, ops.encode(), ...ops.payloads);
}
