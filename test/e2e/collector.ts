/**
 * The receiving end of the end-to-end test: a TCP listener on 127.0.0.1 that splits RFC 6587 octet-counted frames
 * (`LEN SP MSG`) the way rsyslog's omfwd `TCP_Framing="octet-counted"` sends them. It stands in for `dockflow serve`
 * until the service exists; see the test for how to swap it.
 */
import net from 'node:net';
import { once } from 'node:events';

export interface Collector {
  readonly port: number;
  /** Every message received so far, in order, without the frame's trailing LF. */
  readonly messages: readonly string[];
  /** Frames that did not start with a length (counted, kept for the failure message). */
  readonly badFrames: number;
  /** Resolves once `done()` holds, re-checked on every message; rejects after `timeoutMs` with `what`. */
  waitFor(what: string, done: () => boolean, timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export async function startCollector(): Promise<Collector> {
  const messages: string[] = [];
  const waiters = new Set<() => void>();
  const sockets = new Set<net.Socket>();
  let badFrames = 0;

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const sp = buf.indexOf(0x20);
        if (sp < 0) break;
        const len = Number(buf.subarray(0, sp).toString('latin1'));
        if (!Number.isInteger(len) || len <= 0) {
          // Unframed input cannot be resynchronised: count it and drop the connection's buffer.
          badFrames++;
          buf = Buffer.alloc(0);
          break;
        }
        if (buf.length < sp + 1 + len) break;
        const msg = buf.subarray(sp + 1, sp + 1 + len).toString('utf8');
        buf = buf.subarray(sp + 1 + len);
        messages.push(msg.endsWith('\n') ? msg.slice(0, -1) : msg);
      }
      for (const w of waiters) w();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;

  return {
    port,
    messages,
    get badFrames() {
      return badFrames;
    },
    waitFor(what, done, timeoutMs) {
      return new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (!done()) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`collector: gave up waiting for ${what} after ${timeoutMs} ms (${messages.length} messages)`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
