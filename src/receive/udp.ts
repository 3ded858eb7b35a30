import { Worker } from 'node:worker_threads';
import { unmapIPv4 } from '../net/ip.js';
import { contentEnd, exactBytes } from './framing.js';
import { familyOf, listenFailed, type BoundAddress, type ListenAddress, type ReceiverContext } from './listen.js';
import type { UdpSocketId } from './proc-net-udp.js';
import type { UdpReader } from './udp-batch.js';
import { BACKLOG_STATS, BACKLOG_STATS_LENGTH, forEachDatagram, type FromUdpThread, type ToUdpThread, type UdpThreadData } from './udp-wire.js';

export interface UdpReceiverOptions {
  listen: readonly ListenAddress[];
  reader: UdpReader;
  /**
   * SO_RCVBUF asked for each socket: bursts larger than this are dropped by the kernel. Linux caps it at
   * `net.core.rmem_max` and reports twice what it granted; the granted value is logged and exported.
   */
  receiveBufferBytes: number;
  /** Datagrams read but not yet parsed, held in memory before they go to `backlogDir`. */
  backlogMemoryBytes: number;
  /** Where the backlog goes beyond memory, and what is left of it at close; undefined: memory only. */
  backlogDir: string | undefined;
  backlogDiskBytes: number;
}

/** Chunks handed to the ingest thread at once (each ~64 KiB): one being read while the next is on its way. */
const MAX_CHUNKS_IN_FLIGHT = 2;
const THREAD_RESTART_FIRST_MS = 100;
const THREAD_RESTART_MAX_MS = 30_000;

/**
 * Syslog over UDP: one datagram is one message. The sockets are read on a thread of their own (udp-thread.ts), so
 * that the kernel's buffer keeps being drained while this thread parses and stores; what this thread has not caught
 * up with waits in a bounded backlog there, in memory and then on disk. The sender cannot be pushed back, but when
 * the sink asks to pause (the writer's queue is full), this thread stops taking chunks and the backlog holds them.
 */
export class UdpReceiver {
  private worker: Worker | undefined;
  private readonly ids: UdpSocketId[] = [];
  private readonly stats = new Float64Array(new SharedArrayBuffer(8 * BACKLOG_STATS_LENGTH));
  private closing: Promise<void> | undefined;
  private onClosed: (() => void) | undefined;
  /** Chunks handed on and not yet acknowledged: their memory goes back with the acknowledgement. */
  private readonly unacked: ArrayBuffer[] = [];
  /** The sink asked to pause: chunks are not acknowledged until it drains, so they wait in the thread's backlog. */
  private paused = false;
  /** The thread has stopped (it failed, or closed): nothing will answer a close. */
  private exited = false;
  /** A replacement thread being started after one stopped unasked. */
  private restarting: Promise<void> | undefined;
  private threadStartedAtMs = 0;
  /** The wait before the last replacement: doubled while replacements keep stopping soon after they start. */
  private restartDelayMs = 0;

  constructor(
    private readonly opts: UdpReceiverOptions,
    private readonly ctx: ReceiverContext,
  ) {}

  async listen(): Promise<void> {
    if (this.opts.listen.length === 0) return;
    const first = await this.startThread(this.opts.listen);
    this.ctx.metrics.setUdpBacklog(this.stats);
    for (const s of first.sockets) {
      const id: UdpSocketId = { family: familyOf(s.family), address: s.address, port: s.port };
      this.ids.push(id);
      this.ctx.metrics.addUdpSocket(id, s.receiveBufferBytes);
      const log = { listen: { address: s.address, family: s.family, port: s.port }, reader: first.reader, receiveBufferBytes: s.receiveBufferBytes, requested: this.opts.receiveBufferBytes };
      if (s.bufferError !== undefined) this.ctx.logger.warn({ ...log, err: s.bufferError }, 'cannot set the syslog UDP receive buffer');
      if (s.receiveBufferBytes < this.opts.receiveBufferBytes) this.ctx.logger.warn(log, 'syslog UDP receive buffer smaller than asked: raise net.core.rmem_max');
      else this.ctx.logger.info(log, 'syslog UDP listening');
    }
    if (first.batchError !== undefined) {
      this.ctx.logger.warn({ err: first.batchError }, 'syslog UDP read with node:dgram: the batched reader (recvmmsg) did not load; it takes a half to a third of the CPU per datagram');
    }
    if (first.priorityError !== undefined) {
      this.ctx.logger.info({ err: first.priorityError }, 'UDP receive thread at normal priority (a higher one needs root or CAP_SYS_NICE)');
    }
    if (this.stats[BACKLOG_STATS.replayedBytes]! > 0) {
      this.ctx.logger.info({ bytes: this.stats[BACKLOG_STATS.replayedBytes], dir: this.opts.backlogDir }, 'UDP backlog left by the previous run: handed on first');
    }
    this.ctx.sink.onDrain(this.onDrain);
  }

  /** True while a receive thread reads the sockets (or there are none to read). */
  get running(): boolean {
    return this.opts.listen.length === 0 || (this.worker !== undefined && !this.exited);
  }

  /** Starts a receive thread on `listen`; rejects (the thread gone) when it cannot bind them all. */
  private async startThread(listen: readonly ListenAddress[]): Promise<Extract<FromUdpThread, { type: 'listening' }>> {
    const workerData: UdpThreadData = {
      listen,
      reader: this.opts.reader,
      receiveBufferBytes: this.opts.receiveBufferBytes,
      maxChunksInFlight: MAX_CHUNKS_IN_FLIGHT,
      backlogMemoryBytes: this.opts.backlogMemoryBytes,
      backlogDir: this.opts.backlogDir,
      backlogDiskBytes: this.opts.backlogDiskBytes,
      stats: this.stats.buffer as SharedArrayBuffer,
    };
    // Its JavaScript heap holds little (datagrams are in Buffers, outside it): V8's default sizes would only add RSS.
    const worker = new Worker(new URL('./udp-thread.js', import.meta.url), { workerData, resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 } });
    const first = await new Promise<FromUdpThread>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    }).catch((err: unknown) => ({ type: 'listen-failed', index: 0, message: err instanceof Error ? err.message : String(err) }) as const);
    if (first.type !== 'listening') {
      await worker.terminate();
      const index = first.type === 'listen-failed' ? first.index : 0;
      throw listenFailed('udp', listen[index] ?? (listen[0] as ListenAddress), new Error(first.type === 'listen-failed' ? first.message : 'unexpected answer'));
    }
    this.worker = worker;
    this.exited = false;
    this.threadStartedAtMs = Date.now();
    worker.on('message', (m: FromUdpThread) => this.onMessage(m));
    worker.on('error', (err) => this.ctx.logger.error({ err }, 'syslog UDP receive thread failed'));
    worker.on('exit', (code) => this.onThreadExit(worker, code));
    return first;
  }

  /**
   * A thread that stops unasked (a bug, or its heap exhausted) is replaced on the same addresses and ports, retried
   * with backoff while they cannot be bound: UDP senders are not told, so a silent stop would lose everything. The
   * backlog it kept on disk is handed on by the next thread; what it held in memory is lost with it.
   */
  private onThreadExit(worker: Worker, code: number): void {
    if (worker !== this.worker) return;
    this.exited = true;
    if (this.closing !== undefined) return;
    this.ctx.metrics.udpThreadRestarts++;
    // Its chunks' memory went with it, and the next thread counts its chunks in flight afresh.
    this.unacked.length = 0;
    // A thread that keeps failing soon after it starts (on the same datagrams, say) is not restarted in a tight loop.
    const soon = Date.now() - this.threadStartedAtMs < THREAD_RESTART_MAX_MS;
    this.restartDelayMs = soon && this.restartDelayMs > 0 ? Math.min(this.restartDelayMs * 2, THREAD_RESTART_MAX_MS) : THREAD_RESTART_FIRST_MS;
    this.ctx.logger.error({ code, memoryBacklogBytesLost: this.stats[BACKLOG_STATS.bytes], restartInMs: this.restartDelayMs }, 'syslog UDP receive thread stopped; starting another');
    this.restartThread(this.restartDelayMs);
  }

  private restartThread(delayMs: number): void {
    const listen = this.ids.map((id) => ({ host: id.address, port: id.port }));
    setTimeout(() => {
      if (this.closing !== undefined) return;
      this.restarting = this.startThread(listen).then(
        () => this.ctx.logger.warn({ listen }, 'syslog UDP receive thread restarted'),
        (err: unknown) => {
          this.ctx.logger.error({ err, retryInMs: delayMs * 2 }, 'syslog UDP receive thread cannot restart');
          this.restartThread(Math.min(delayMs * 2, THREAD_RESTART_MAX_MS));
        },
      );
    }, delayMs);
  }

  addresses(): BoundAddress[] {
    return this.ids.map((id) => ({ transport: 'udp', ...id }));
  }

  private onMessage(m: FromUdpThread): void {
    if (m.type === 'chunk') {
      const chunk = Buffer.from(m.buffer, 0, m.length);
      forEachDatagram(chunk, (start, end, from, receivedAtMs) => this.receive(chunk, start, end, from, receivedAtMs));
      // Acknowledged after the rest of the event loop has had its turn: a port drains every message it has in one
      // go, and chunks answered at once would keep arriving there, starving timers, sockets and Redis replies.
      this.unacked.push(m.buffer);
      if (this.unacked.length === 1 && !this.paused) setImmediate(() => this.ack());
    } else if (m.type === 'socket-error') this.ctx.logger.error({ err: m.message }, 'syslog UDP socket error');
    else if (m.type === 'backlog-error') {
      this.ctx.logger.error({ what: m.what, err: m.message, times: m.count, dir: this.opts.backlogDir }, 'UDP backlog disk failure; datagrams it could not keep are dropped and counted');
    }
    else if (m.type === 'closed') {
      if (m.leftBytes > 0) this.ctx.logger.warn({ bytes: m.leftBytes, dir: this.opts.backlogDir }, 'UDP backlog kept on disk for the next start');
      this.onClosed?.();
    }
  }

  private ack(): void {
    if (this.paused || this.unacked.length === 0) return;
    const buffers = this.unacked.splice(0);
    this.worker?.postMessage({ type: 'ack', buffers } satisfies ToUdpThread, buffers);
  }

  private readonly onDrain = (): void => {
    if (!this.paused) return;
    this.paused = false;
    setImmediate(() => this.ack());
  };

  private receive(buf: Buffer, start: number, stop: number, from: string, receivedAtMs: number): void {
    const counts = this.ctx.metrics.udp;
    counts.bytes += stop - start;
    const remoteAddress = unmapIPv4(from);
    if (!this.ctx.allowlist.allows(remoteAddress)) {
      counts.dropped['not-allowed']++;
      return;
    }
    const end = contentEnd(buf, start, stop);
    if (end === start) return;
    if (end - start > this.ctx.maxMessageBytes) {
      counts.dropped.oversize++;
      return;
    }
    counts.messages++;
    // The records of a chunk already here are taken (the writer spools what its queue cannot hold); the next chunks
    // wait, as raw datagrams, in the receive thread's backlog until the writer drains.
    const message = buf.toString('utf8', start, end);
    if (!this.ctx.sink.accept(message, { transport: 'udp', remoteAddress, receivedAtMs }, exactBytes(message, buf, start, end))) this.paused = true;
  }

  /** Stops reading; every chunk the thread sent is handed on, the rest of its backlog kept on disk (or handed on). */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    // A thread being started is closed like any other once it is up.
    await this.restarting;
    const worker = this.worker;
    if (worker === undefined) return;
    if (!this.exited) await new Promise<void>((resolve) => {
      this.onClosed = resolve;
      worker.once('exit', () => resolve());
      worker.postMessage({ type: 'close' } satisfies ToUdpThread);
    });
    this.ctx.metrics.syncUdpBacklog();
    await worker.terminate();
    this.worker = undefined;
    // Chunks taken while paused were never acknowledged; nothing will give them back now.
    this.unacked.length = 0;
    for (const id of this.ids) this.ctx.metrics.removeUdpSocket(id);
    this.ids.length = 0;
  }
}
