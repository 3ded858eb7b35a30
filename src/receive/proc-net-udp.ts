import { readFile } from 'node:fs/promises';
import { SocketAddress } from 'node:net';
import { endianness } from 'node:os';
import { join } from 'node:path';

/** A bound UDP socket as `socket.address()` reports it. */
export interface UdpSocketId {
  family: 4 | 6;
  address: string;
  port: number;
}

const canonical = (address: string, family: 4 | 6): string =>
  new SocketAddress({ address, family: family === 4 ? 'ipv4' : 'ipv6' }).address;

/**
 * The kernel prints each 32-bit word of the address as the host reads it from network-order memory, so on a
 * little-endian machine the bytes of each word come out reversed (`0100007F` is 127.0.0.1).
 */
function procAddress(hex: string, littleEndian: boolean): string {
  const bytes: number[] = [];
  for (let word = 0; word < hex.length; word += 8) {
    const wordBytes = [0, 2, 4, 6].map((i) => parseInt(hex.slice(word + i, word + i + 2), 16));
    bytes.push(...(littleEndian ? wordBytes.reverse() : wordBytes));
  }
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < bytes.length; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(':');
}

/**
 * Sum of the `drops` column (the last one) of every line of a `/proc/net/udp` or `/proc/net/udp6` text whose local
 * address and port are the socket's; undefined when no line matches (the socket is not in this network namespace).
 */
export function parseUdpDrops(procText: string, socket: UdpSocketId, littleEndian = endianness() === 'LE'): number | undefined {
  const want = canonical(socket.address, socket.family);
  let drops: number | undefined;
  for (const line of procText.split('\n')) {
    const cols = line.trim().split(/\s+/);
    const local = cols[1];
    const colon = local === undefined ? -1 : local.indexOf(':');
    if (local === undefined || colon === -1 || cols.length < 13 || !cols[0]!.endsWith(':')) continue;
    if (parseInt(local.slice(colon + 1), 16) !== socket.port) continue;
    const hex = local.slice(0, colon);
    if ((socket.family === 4 ? 8 : 32) !== hex.length) continue;
    if (canonical(procAddress(hex, littleEndian), socket.family) !== want) continue;
    drops = (drops ?? 0) + Number(cols[cols.length - 1]);
  }
  return drops;
}

/** Reads the kernel's drop counter for one socket from `<procNetDir>/udp` or `udp6` (by the socket's family). */
export async function readUdpDrops(procNetDir: string, socket: UdpSocketId): Promise<number | undefined> {
  const text = await readFile(join(procNetDir, socket.family === 4 ? 'udp' : 'udp6'), 'utf8');
  return parseUdpDrops(text, socket);
}
