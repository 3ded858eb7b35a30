import type { FlowRecord } from '../record.js';
import type { IndexOps } from './index-ops.js';

/**
 * Secondary indexes written in the same transaction as the stream entry. The writer assigns stream IDs itself
 * (`<ms>-<seq>`, monotonic), so an indexer can reference the entry before Redis has answered.
 */
export interface IndexEntry<Facts = unknown> {
  /** What `StreamIndexer.facts` took from the record. */
  facts: Facts;
  /** The partition (`<bucket>.<writer>`) and its stream: one per batch. */
  partition: string;
  stream: string;
  id: string;
}

export interface StreamIndexer<Facts = unknown> {
  /**
   * What the index writes need of a record, taken when the writer takes the record: the writer keeps this, not the
   * record, until Redis has answered (records held that long outlived young-generation collections, and copying
   * them cost the ingest thread more than anything else it does).
   */
  facts(record: FlowRecord): Facts;
  /**
   * The index writes for one batch of records, each to be stored as `id` in `stream` (no I/O). The writer applies
   * them in the same transaction as the batch's XADDs, and only if every XADD succeeded; otherwise it applies
   * those of the entries that were stored in a call of their own. So each entry's writes are applied once (counters
   * need that), except when that second call itself is lost with the connection.
   */
  build(entries: readonly IndexEntry<Facts>[]): IndexOps | undefined;
  /**
   * Writes to global registries (another hash slot than the partition's) that the batch's records refer to, sent
   * just before the batch in a call of their own: idempotent, and remembered as written only until `forget`.
   */
  registry?(entries: readonly IndexEntry<Facts>[]): IndexOps | undefined;
  /** After a failure or a reconnection: registry writes may not have been applied. */
  forget?(): void;
}
