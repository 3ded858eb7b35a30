import { Counter, type Registry } from 'prom-client';
import type { Enricher } from './enrich/enricher.js';
import { parseLine, type LineOptions } from './parse/line.js';
import { IsoFormatter } from './parse/time.js';
import { SKIP_REASONS, type SkipReason } from './record.js';
import type { FlowRecord } from './record.js';
import type { DurableOutcome, MessageMeta, MessageSink } from './receive/types.js';
import type { StreamWriter } from './store/stream-writer.js';

/**
 * The ingest hot path between receivers and the stream writer: parse, enrich, hand over. Synchronous, so the only
 * queue is the writer's, and its back-pressure reaches the TCP sockets through `accept`'s return value.
 */
export class IngestPipeline implements MessageSink {
  readonly parsed = { records: 0 };
  /** Its own formatter: the parser's caches the packet's second, and the two alternate. */
  private readonly ingestedIso = new IsoFormatter();
  readonly skipped: Record<SkipReason, number>;

  constructor(
    private readonly lineOptions: LineOptions,
    private readonly enricher: Enricher,
    private readonly writer: Pick<StreamWriter, 'push' | 'pushDurable' | 'onDrain'>,
    registry: Registry,
  ) {
    this.skipped = Object.fromEntries(SKIP_REASONS.map((r) => [r, 0])) as Record<SkipReason, number>;
    const skipped = this.skipped;
    const parsed = this.parsed;
    new Counter({
      name: 'dockflow_lines_skipped_total',
      help: 'Received messages that produced no flow record, by reason',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const reason of SKIP_REASONS) this.labels(reason).inc(skipped[reason]);
      },
    });
    new Counter({
      name: 'dockflow_records_parsed_total',
      help: 'Flow records parsed from received messages',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(parsed.records);
      },
    });
  }

  accept(message: string, meta: MessageMeta): boolean {
    const record = this.recordOf(message, meta);
    return record === undefined || this.writer.push(record, meta.transport, message);
  }

  acceptDurable(message: string, meta: MessageMeta, done: (outcome: DurableOutcome) => void): boolean {
    const record = this.recordOf(message, meta);
    if (record === undefined) {
      done('no-record');
      return true;
    }
    const origin = meta.transport === 'udp' ? 'tcp' : meta.transport;
    return this.writer.pushDurable(record, origin, message, (stored) => done(stored ? 'stored' : 'dropped'));
  }

  /** The message's record, parsed and enriched; undefined (counted by reason) when it yields none. */
  private recordOf(message: string, meta: MessageMeta): FlowRecord | undefined {
    const record = parseLine(message, this.lineOptions, meta.receivedAtMs);
    if (typeof record === 'string') {
      this.skipped[record]++;
      return undefined;
    }
    this.parsed.records++;
    // Senders that put no hostname in the header (bare kernel text over syslog) are known by their address, which
    // is also what multi-host attribution maps when configured so.
    if (record.host === undefined) record.host = { name: meta.remoteAddress };
    record.event = meta.hash === undefined ? { ingested: this.ingestedIso.format(meta.receivedAtMs, 0, false) } : { ingested: this.ingestedIso.format(meta.receivedAtMs, 0, false), hash: meta.hash };
    this.enricher.enrich(record);
    return record;
  }

  onDrain(listener: () => void): void {
    this.writer.onDrain(listener);
  }
}
