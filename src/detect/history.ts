/**
 * The one place detections read stored records: through the query path the API serves `/api/flows` with, oldest
 * first, page by page. Re-point this file when the store's layout changes.
 */
import type { Redis } from 'ioredis';
import type { FlowRecord } from '../record.js';
import { IndexKeys } from '../store/indexer.js';
import { planQuery, scanFlows, type Position } from '../store/query.js';

export interface StoredRecord {
  record: FlowRecord;
  /** `<direction>/<entry id>`, as the API's `event.id`. */
  flow: string;
  timeMs: number;
}

export async function* storedRecords(redis: Redis, keyPrefix: string, range: { sinceMs?: number; untilMs?: number }, pageSize = 1000): AsyncGenerator<StoredRecord> {
  const keys = new IndexKeys(keyPrefix);
  const filter = { ...(range.sinceMs !== undefined ? { sinceMs: range.sinceMs } : {}), ...(range.untilMs !== undefined ? { untilMs: range.untilMs } : {}) };
  const plan = await planQuery(redis, keys, filter);
  let after: Position | undefined;
  for (;;) {
    const res = await scanFlows(redis, keys, filter, plan, pageSize, { order: 'asc', scanBudget: pageSize * 20, ...(after !== undefined ? { after } : {}) });
    for (const h of res.hits) {
      const t = Date.parse(h.record['@timestamp']);
      yield { record: h.record, flow: `${h.direction}/${h.id}`, timeMs: Number.isFinite(t) ? t : h.position.score };
    }
    if (res.resume === undefined) return;
    after = res.resume;
  }
}
