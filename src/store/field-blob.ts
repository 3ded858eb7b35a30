/**
 * One Lua script argument carrying a whole batch: fields, each ended by the unit separator (0x1f), encoded straight
 * into bytes. ioredis would otherwise measure every string argument (`Buffer.byteLength`), concatenate it into a
 * string the size of the pipeline, and encode that again on write; a Buffer argument is copied as it is.
 *
 * No field may contain 0x1f: callers pass JSON (which escapes control characters), numbers, codes and key parts
 * escaped by `keyPart`. Scripts split with `string.find(blob, '\31', pos, true)`, a plain byte search.
 */
export const FIELD_END = 0x1f;

/**
 * Buffer's native UTF-8 writer, without `Buffer#write`'s argument handling, which cost more than the copy for the
 * short fields an index blob is made of (the same method msgpackr and protobufjs use). Falls back to `write`.
 */
type Utf8Write = (this: Buffer, value: string, offset: number) => number;
export const utf8Write: Utf8Write =
  (Buffer.prototype as unknown as { utf8Write?: Utf8Write }).utf8Write ??
  function (this: Buffer, value: string, offset: number): number {
    return this.write(value, offset);
  };

export class FieldBlob {
  private buf: Buffer;
  private len = 0;

  constructor(expectedBytes: number) {
    this.buf = Buffer.allocUnsafe(Math.max(256, expectedBytes));
  }

  field(value: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units).
    if (this.len + value.length * 3 + 1 > this.buf.length) this.grow(value.length * 3 + 1);
    this.len += utf8Write.call(this.buf, value, this.len);
    this.buf[this.len++] = FIELD_END;
  }

  get byteLength(): number {
    return this.len;
  }

  /** The bytes written so far (a view, not a copy: build a new blob per command). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }

  private grow(atLeast: number): void {
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + atLeast));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
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
