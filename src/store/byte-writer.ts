/**
 * Buffer's native UTF-8 writer, without `Buffer#write`'s argument handling, which cost more than the copy for the
 * short fields written per record (the same method msgpackr and protobufjs use). Falls back to `write`.
 */
type Utf8Write = (this: Buffer, value: string, offset: number) => number;
export const utf8Write: Utf8Write =
  (Buffer.prototype as unknown as { utf8Write?: Utf8Write }).utf8Write ??
  function (this: Buffer, value: string, offset: number): number {
    return this.write(value, offset);
  };

/** Bytes written into one buffer that doubles when it fills; the base of the writers of a format (RESP, field blobs). */
export class ByteWriter {
  protected buf: Buffer;
  protected len = 0;

  constructor(expectedBytes: number) {
    this.buf = Buffer.allocUnsafe(Math.max(256, expectedBytes));
  }

  /** The bytes written so far (a view, not a copy: use a new writer per message). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.len;
  }

  /** The memory written into (replaced by a larger one when it fills: what was written before stays in the old). */
  get buffer(): Buffer {
    return this.buf;
  }

  /** Makes room for `bytes` more. */
  protected ensure(bytes: number): void {
    if (this.len + bytes <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + bytes));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
}
