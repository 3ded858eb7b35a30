import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { startReceivers, type ReceiverOptions, type Receivers } from '../../src/receive/receivers.js';
import type { BoundAddress } from '../../src/receive/listen.js';
import type { DurableOutcome, MessageMeta, MessageSink, Transport } from '../../src/receive/types.js';

/** Keeps every message; refuses (returns false) while `full`, and `drain()` calls the receivers back. */
export class CollectingSink implements MessageSink {
  readonly messages: string[] = [];
  readonly metas: MessageMeta[] = [];
  /** The exact bytes handed with each message (undefined when its text gives them back). */
  readonly raws: Array<Buffer | undefined> = [];
  full = false;
  /** Messages accepted while full (each answered false). */
  acceptedWhileFull = 0;
  private readonly drainListeners: Array<() => void> = [];
  private waiters: Array<{ count: number; resolve: () => void }> = [];

  accept(message: string, meta: MessageMeta, raw?: Buffer): boolean {
    this.messages.push(message);
    this.metas.push(meta);
    this.raws.push(raw);
    if (this.full) this.acceptedWhileFull++;
    this.waiters = this.waiters.filter((w) => {
      if (this.messages.length < w.count) return true;
      w.resolve();
      return false;
    });
    return !this.full;
  }

  /** `acceptDurable` calls waiting for an outcome (`holdDurable`), in arrival order. */
  readonly durable: Array<(outcome: DurableOutcome) => void> = [];
  /** While true, `acceptDurable` keeps each callback in `durable` for the test to settle; else answers 'stored' on the next turn. */
  holdDurable = false;

  acceptDurable(message: string, meta: MessageMeta, done: (outcome: DurableOutcome) => void, raw?: Buffer): boolean {
    const ok = this.accept(message, meta, raw);
    if (this.holdDurable) this.durable.push(done);
    else setImmediate(() => done('stored'));
    return ok;
  }

  onDrain(listener: () => void): void {
    this.drainListeners.push(listener);
  }

  drain(): void {
    this.full = false;
    for (const l of this.drainListeners) l();
  }

  /** Resolves once `count` messages have arrived in total. */
  waitFor(count: number): Promise<void> {
    if (this.messages.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }
}

export const TEST_OPTIONS: ReceiverOptions = {
  udp: [
    { host: '127.0.0.1', port: 0 },
    { host: '::1', port: 0 },
  ],
  tcp: [
    { host: '127.0.0.1', port: 0 },
    { host: '::1', port: 0 },
  ],
  maxMessageBytes: 8192,
  maxConnections: 16,
  maxConnectionsPerSource: 16,
  idleTimeoutMs: 60_000,
  frameTimeoutMs: 60_000,
  receiveBufferBytes: 8 * 1024 * 1024,
  // The addon must be built for the tests: `auto` would hide a failed build behind node:dgram.
  udpReader: 'batch',
  udpBacklogMemoryBytes: 32 * 1024 * 1024,
  udpBacklogDir: undefined,
  udpBacklogDiskBytes: 0,
  allow: [],
};

export interface Harness {
  receivers: Receivers;
  sink: CollectingSink;
  registry: Registry;
  /** The bound address of `transport` on `host`. */
  at(transport: Transport, host: string): BoundAddress;
}

export async function startHarness(overrides: Partial<ReceiverOptions> = {}): Promise<Harness> {
  const sink = new CollectingSink();
  const registry = new Registry();
  const receivers = await startReceivers({ ...TEST_OPTIONS, ...overrides }, sink, { logger: pino({ level: 'silent' }), registry });
  const at = (transport: Transport, host: string): BoundAddress => {
    const found = receivers.addresses().find((a) => a.transport === transport && a.address === host);
    if (found === undefined) throw new Error(`no ${transport} listener on ${host}`);
    return found;
  };
  return { receivers, sink, registry, at };
}

export async function connect(to: BoundAddress, localAddress?: string): Promise<net.Socket> {
  const socket = net.connect({ host: to.address, port: to.port, ...(localAddress ? { localAddress } : {}) });
  socket.setNoDelay(true);
  await once(socket, 'connect');
  return socket;
}

/** Resolves when the server closes the connection (end or reset). */
export async function closedByPeer(socket: net.Socket): Promise<void> {
  socket.on('error', () => {});
  if (!socket.destroyed) await once(socket, 'close');
}

/** Writes chunks one by one, waiting for each to be handed to the kernel, so the receiver sees many small reads. */
export async function writeChunks(socket: net.Socket, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) {
    await new Promise<void>((resolve, reject) => socket.write(chunk, (err) => (err ? reject(err) : resolve())));
  }
}

export async function sendDatagrams(to: BoundAddress, datagrams: Buffer[]): Promise<void> {
  const socket = dgram.createSocket(to.family === 6 ? 'udp6' : 'udp4');
  for (const d of datagrams) {
    await new Promise<void>((resolve, reject) => socket.send(d, to.port, to.address, (err) => (err ? reject(err) : resolve())));
  }
  socket.close();
}

/** Polls `cond` until true. Not a timing assertion: the test's timeout is the only limit. */
export async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((resolve) => setTimeout(resolve, 5));
}

/** The value of one series in the registry's text output (undefined when absent). */
export async function metricValue(registry: Registry, series: string): Promise<number | undefined> {
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
