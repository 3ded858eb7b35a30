import type { FlowRecord } from '../record.js';

/**
 * One enrichment step. `enrich` runs once per record on the ingest hot path, so it is synchronous and mutates the
 * record in place: anything slow (database files, API calls) is prepared beforehand and consulted from memory.
 */
export interface Enricher {
  enrich(record: FlowRecord): void;
  /** Releases watchers, timers and connections. */
  close?(): Promise<void> | void;
}

export const noopEnricher: Enricher = {
  enrich() {},
};

/** Runs the enrichers in list order (a later one sees what an earlier one wrote); closes them all on `close`. */
export function chainEnrichers(list: readonly Enricher[]): Enricher {
  if (list.length === 0) return noopEnricher;
  if (list.length === 1) return list[0] as Enricher;
  const steps = [...list];
  return {
    enrich(record) {
      for (const step of steps) step.enrich(record);
    },
    async close() {
      // Every enricher gets its close even when an earlier one fails; the first failure is still reported.
      const results = await Promise.allSettled(steps.map(async (step) => step.close?.()));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
}
