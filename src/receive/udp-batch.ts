import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The batched UDP reader (src/receive/native/udp_batch.c, built into build/Release by `npm install`): recvmmsg(2)
 * straight into chunks in the layout of udp-wire.ts.
 */
export interface UdpBatch {
  /** A bound, non-blocking socket: its descriptor, address and port as bound, the buffer granted, why not as asked. */
  open(host: string, port: number, family: 4 | 6, receiveBufferBytes: number): [fd: number, address: string, port: number, receiveBufferBytes: number, bufferError: string | undefined];
  /**
   * Waits up to `waitMs` for a socket to be readable, then writes what the sockets hold into `chunk` from `at`, until
   * they run dry or the chunk reaches `sealAt` or is full; returns the chunk's new length. Datagrams read that did not
   * fit are written first by the next call (an empty `fds` writes only those). `result`: datagrams written, 1 when it
   * stopped for room, the errno of a failed read.
   */
  receive(fds: Int32Array, waitMs: number, chunk: Uint8Array, at: number, sealAt: number, result: Float64Array): number;
  /** Closes a socket this thread opened; false (and nothing closed) for any other descriptor or a second close. */
  close(fd: number): boolean;
}

/** `batch` needs the addon; `auto` uses it when it loads, and node:dgram otherwise. */
export type UdpReader = 'auto' | 'batch' | 'dgram';

/** The reader a thread actually uses. */
export type ChosenUdpReader = Exclude<UdpReader, 'auto'>;

const ADDON = join('build', 'Release', 'udp_batch.node');

/** The addon, from the package root (the nearest folder up with a package.json), or why it cannot be used. */
export function loadUdpBatch(): { batch: UdpBatch; path: string } | { error: string } {
  if (process.platform !== 'linux') return { error: 'batched UDP receive is Linux only' };
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  const path = join(dir, ADDON);
  if (!existsSync(path)) return { error: `${path} not found: \`npm install\` builds it, with python3, make and a C compiler` };
  try {
    return { batch: createRequire(import.meta.url)(path) as UdpBatch, path };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}
