import type { ChainableCommander } from 'ioredis';
import type { FlowRecord } from '../record.js';

/**
 * Secondary indexes written in the same pipeline as the stream entry. The writer assigns stream IDs itself
 * (`<ms>-<seq>`, monotonic), so an indexer can reference the entry before Redis has answered.
 */
export interface IndexEntry {
  record: FlowRecord;
  stream: string;
  id: string;
}

export interface StreamIndexer {
  /**
   * Queue the index writes for one batch of records, each stored as `id` in `stream`, into the pipeline that carries
   * the batch (a batch at a time, so that writes can be merged: no I/O, no awaits). May run twice for the same
   * entries after a lost connection: index writes must be idempotent.
   */
  add(pipeline: ChainableCommander, entries: readonly IndexEntry[]): void;
  /** Queue the deletion of index entries older than `minId`/`minTimeMs` (retention). Runs once per trim cycle. */
  trim?(pipeline: ChainableCommander, minTimeMs: number): void;
}
