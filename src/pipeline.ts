import type { Registry } from 'prom-client';
import type { Enricher } from './enrich/enricher.js';
import { exportCounter, seriesOf } from './metrics.js';
import { parseLine, type LineOptions } from './parse/line.js';
import { IsoFormatter } from './parse/time.js';
import { SKIP_REASONS, type FlowRecord, type SkipReason } from './record.js';
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
    /** Detections: sees each enriched record before it is stored. */
    private readonly detect?: { observe(record: FlowRecord, timeMs: number): void },
  ) {
    this.skipped = Object.fromEntries(SKIP_REASONS.map((r) => [r, 0])) as Record<SkipReason, number>;
    exportCounter(registry, { name: 'dockflow_lines_skipped_total', help: 'Received messages that produced no flow record, by reason', labelNames: ['reason'] }, () =>
      seriesOf('reason', SKIP_REASONS, this.skipped),
    );
    exportCounter(registry, { name: 'dockflow_records_parsed_total', help: 'Flow records parsed from received messages' }, () => this.parsed.records);
  }

  accept(message: string, meta: MessageMeta, raw?: Buffer): boolean {
    const record = this.recordOf(message, meta);
    return record === undefined || this.writer.push(record, meta.transport, message, raw);
  }

  acceptDurable(message: string, meta: MessageMeta, done: (outcome: DurableOutcome) => void, raw?: Buffer): boolean {
    const record = this.recordOf(message, meta);
    if (record === undefined) {
      done('no-record');
      return true;
    }
    const origin = meta.transport === 'udp' ? 'tcp' : meta.transport;
    return this.writer.pushDurable(record, origin, message, (stored) => done(stored ? 'stored' : 'dropped'), raw);
  }

  /** The message's record, parsed, enriched and seen by the detections; undefined (counted by reason) when it yields none. */
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
    (record.event ??= {}).ingested = this.ingestedIso.format(meta.receivedAtMs, 0, false);
    if (meta.hash !== undefined) record.event.hash = meta.hash;
    this.enricher.enrich(record);
    this.detect?.observe(record, meta.receivedAtMs);
    return record;
  }

  onDrain(listener: () => void): void {
    this.writer.onDrain(listener);
  }
}
