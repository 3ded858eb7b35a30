import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { fixture } from '../helpers/paths.js';

/** A fixture byte stream from `test/fixtures/receive/`, gunzipped when it ends in `.gz`. */
export function stream(name: string): Buffer {
  const raw = readFileSync(fixture('receive', name));
  return name.endsWith('.gz') ? gunzipSync(raw) : raw;
}

/** Oracle for LF-framed fixtures: split on LF, nothing else. */
export function lfFrames(buf: Buffer): string[] {
  const lines = buf.toString('utf8').split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

/** Oracle for octet-counted fixtures: walks `LEN SP MSG` over the whole buffer, dropping one trailing LF. */
export function octetFrames(buf: Buffer): string[] {
  const frames: string[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const sp = buf.indexOf(0x20, pos);
    const len = Number(buf.toString('latin1', pos, sp));
    if (!(len > 0)) throw new Error(`fixture is not octet-counted at byte ${pos}`);
    const msg = buf.toString('utf8', sp + 1, sp + 1 + len);
    frames.push(msg.endsWith('\n') ? msg.slice(0, -1) : msg);
    pos = sp + 1 + len;
  }
  return frames;
}

/** The datagrams of a `-udp.bin` fixture, cut by its `.udp.lens` (one length per line). */
export function udpDatagrams(binName: string): Buffer[] {
  const bin = stream(binName);
  const lens = readFileSync(fixture('receive', binName.replace(/\.bin$/, '.lens')), 'utf8').trim().split('\n').map(Number);
  const out: Buffer[] = [];
  let pos = 0;
  for (const len of lens) {
    out.push(bin.subarray(pos, pos + len));
    pos += len;
  }
  if (pos !== bin.length) throw new Error(`${binName}: lengths do not add up`);
  return out;
}

/** Small seeded PRNG (mulberry32): random chunkings that replay the same on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Cuts `buf` into copies of random sizes in [1, maxChunk]. */
export function randomChunks(buf: Buffer, seed: number, maxChunk: number): Buffer[] {
  const rnd = seededRandom(seed);
  const out: Buffer[] = [];
  for (let pos = 0; pos < buf.length; ) {
    const size = 1 + Math.floor(rnd() * maxChunk);
    out.push(Buffer.from(buf.subarray(pos, pos + size)));
    pos += size;
  }
  return out;
}

export function byteChunks(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i++) out.push(buf.subarray(i, i + 1));
  return out;
}
