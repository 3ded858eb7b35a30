/**
 * Server-Sent Events read from a `fetch()` body. EventSource cannot send an Authorization header, so the live view
 * streams with fetch and parses the event stream itself (the WHATWG format: fields per line, events ended by a blank
 * line, `:` comments). Pure: no DOM, no I/O.
 */

export interface SseEvent {
  /** `message` when the event named none. */
  event: string;
  data: string;
  id?: string;
}

export interface SseChunk {
  events: SseEvent[];
  /** Comment lines (`: keep-alive`, `: subscribed`), without the colon and the one space after it. */
  comments: string[];
}

export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;

  /** Feeds decoded text; returns what completed. A line split across chunks waits for its end. */
  push(text: string): SseChunk {
    this.buffer += text;
    const out: SseChunk = { events: [], comments: [] };
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/);
      if (nl < 0) break;
      // A lone \r at the end of a chunk may be the first half of \r\n: wait for the next chunk to tell.
      if (this.buffer[nl] === '\r' && nl === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + (this.buffer.startsWith('\r\n', nl) ? 2 : 1));
      this.line(line, out);
    }
    return out;
  }

  private line(line: string, out: SseChunk): void {
    if (line === '') {
      if (this.data.length > 0) out.events.push({ event: this.event || 'message', data: this.data.join('\n'), ...(this.id !== undefined ? { id: this.id } : {}) });
      this.event = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) {
      out.comments.push(line.slice(line.startsWith(': ') ? 2 : 1));
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}
