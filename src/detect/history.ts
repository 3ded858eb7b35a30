/**
 * The one place detections read stored records: through the query path the API serves `/api/flows` with, oldest
 * first, page by page. Re-point this file when the store's layout changes.
 */
import type { Redis } from 'ioredis';
import type { FlowRecord } from '../record.js';
import { storeKeys } from '../store/keys.js';
import { planQuery, scanFlows, StoreReader, type Position } from '../store/query.js';

export interface StoredRecord {
  record: FlowRecord;
  /** `<partition>/<entry id>`, as the API's `event.id`. */
  flow: string;
  timeMs: number;
}

export async function* storedRecords(redis: Redis, keyPrefix: string, range: { sinceMs?: number; untilMs?: number }, pageSize = 1000): AsyncGenerator<StoredRecord> {
  // No retention clamp here: whatever is still stored is read.
  const store = new StoreReader(redis, storeKeys(keyPrefix), { retentionMs: 0 });
  const filter = { ...(range.sinceMs !== undefined ? { sinceMs: range.sinceMs } : {}), ...(range.untilMs !== undefined ? { untilMs: range.untilMs } : {}) };
  const plan = await planQuery(store, filter);
  let after: Position | undefined;
  for (;;) {
    const res = await scanFlows(store, filter, plan, pageSize, { order: 'asc', scanBudget: pageSize * 20, ...(after !== undefined ? { after } : {}) });
    for (const h of res.hits) {
      const t = Date.parse(h.record['@timestamp']);
      yield { record: h.record, flow: `${h.partition}/${h.id}`, timeMs: Number.isFinite(t) ? t : Number(h.id.split('-')[0]) };
    }
    if (res.resume === undefined) return;
    after = res.resume;
  }
}
