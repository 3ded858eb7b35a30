import { StringDecoder } from 'node:string_decoder';
import type { DockerEvent } from './types.js';

/**
 * Splits a byte stream into lines where chunks may end anywhere, including inside a multi-byte UTF-8 character.
 * Blank lines (keep-alive newlines) are dropped.
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';

  push(chunk: Buffer | string): string[] {
    const text = this.pending + (typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
    const lines: string[] = [];
    let start = 0;
    for (let nl = text.indexOf('\n', start); nl !== -1; nl = text.indexOf('\n', start)) {
      const line = text.slice(start, nl).trim();
      if (line !== '') lines.push(line);
      start = nl + 1;
    }
    this.pending = text.slice(start);
    return lines;
  }

  /** The last line when the stream ended without a newline. */
  end(): string[] {
    const rest = (this.pending + this.decoder.end()).trim();
    this.pending = '';
    return rest === '' ? [] : [rest];
  }
}

const TIME_NANO_KEY = '"timeNano":';

/** Parses one event line; `undefined` when it is not a JSON object. Keeps `timeNano`'s exact digits. */
export function parseEventLine(line: string): DockerEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const event = value as DockerEvent;
  const at = line.lastIndexOf(TIME_NANO_KEY);
  if (at !== -1) {
    let i = at + TIME_NANO_KEY.length;
    while (line.charCodeAt(i) === 32) i++;
    const from = i;
    while (i < line.length && line.charCodeAt(i) >= 48 && line.charCodeAt(i) <= 57) i++;
    if (i > from) event.timeNanoText = line.slice(from, i);
  }
  if (event.timeNanoText === undefined && typeof event.time === 'number') event.timeNanoText = `${event.time}000000000`;
  return event;
}

/** Nanosecond text → milliseconds since the epoch (integer). */
export function nanoTextToMs(text: string): number {
  return text.length > 6 ? Number(text.slice(0, -6)) : 0;
}

/** Nanosecond text → Docker's `since`/`until` form `seconds.nanoseconds`. */
export function nanoTextToSince(text: string): string {
  const padded = text.padStart(10, '0');
  return `${padded.slice(0, -9)}.${padded.slice(-9)}`;
}

/** Compares two nanosecond texts without losing precision. */
export function compareNanoText(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
