import type { ChainableCommander } from 'ioredis';
import type { FlowRecord } from '../record.js';

/**
 * Secondary indexes written in the same pipeline as the stream entry. The writer assigns stream IDs itself
 * (`<ms>-<seq>`, monotonic), so an indexer can reference the entry before Redis has answered.
 */
export interface StreamIndexer {
  /** Queue the index writes for one record stored as `id` in `stream`. Runs per record: no I/O, no awaits. */
  add(pipeline: ChainableCommander, record: FlowRecord, stream: string, id: string): void;
  /** Queue the deletion of index entries older than `minId`/`minTimeMs` (retention). Runs once per trim cycle. */
  trim?(pipeline: ChainableCommander, minTimeMs: number): void;
}
