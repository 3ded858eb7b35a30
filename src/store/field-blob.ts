import { ByteWriter, utf8Write } from './byte-writer.js';

/**
 * One Lua script argument carrying a batch's index writes (`index-ops.ts`): fields, each ended by the unit
 * separator (0x1f), encoded straight into bytes: one argument instead of thousands of small ones, which ioredis (it
 * sends the blob when the stored part of a batch is indexed apart) would each measure and encode again.
 *
 * No field may contain 0x1f: callers pass JSON (which escapes control characters), numbers, codes and key parts
 * escaped by `keyPart`. Scripts split with `string.find(blob, '\31', pos, true)`, a plain byte search.
 */
export const FIELD_END = 0x1f;

export class FieldBlob extends ByteWriter {
  field(value: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units).
    this.ensure(value.length * 3 + 1);
    this.len += utf8Write.call(this.buf, value, this.len);
    this.buf[this.len++] = FIELD_END;
  }
}

/**
 * The Lua side: `local nextField = fields(ARGV[n])` then `nextField()` returns each field in turn, nil at the end.
 * Spliced into scripts so that every script reads blobs the same way.
 */
export const LUA_FIELDS = `
local function fields(blob)
  local pos = 1
  return function()
    local e = string.find(blob, '\\31', pos, true)
    if not e then return nil end
    local v = string.sub(blob, pos, e - 1)
    pos = e + 1
    return v
  end
end
`;
