import type { FlowRecord } from '../record.js';
import type { FlowFilter, Order, Position, StoreReader } from '../store/query.js';
import { planQuery, scanFlows } from '../store/query.js';
import { withEventId } from '../api/flows.js';

/**
 * The one place an export reads records: the query `/api/flows` runs (plan the indexes, scan the partitions page by
 * page), as an async sequence of records in the API's form (with `event.id`, `<partition>/<entry id>`). An export
 * holds one page at a time. When the store changes, this adapter is what moves with it.
 */
export interface RecordSource {
  store: StoreReader;
}

/** Records per page read from the store. */
const PAGE = 1000;
/** Entries examined per page before the scan hands back a resume position. */
const SCAN_BUDGET = 20_000;

export async function* matchingRecords(source: RecordSource, filter: FlowFilter, order: Order): AsyncGenerator<FlowRecord> {
  const plan = await planQuery(source.store, filter);
  let after: Position | undefined;
  for (;;) {
    const res = await scanFlows(source.store, filter, plan, PAGE, { order, scanBudget: SCAN_BUDGET, ...(after ? { after } : {}) });
    for (const h of res.hits) yield withEventId(h.record, h.partition, h.id);
    if (res.resume === undefined) return;
    after = res.resume;
  }
}
