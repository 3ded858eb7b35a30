import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Internal counters → Prometheus. Hot paths bump plain numbers (a labelled prom-client `inc` hashes its labels,
 * which costs more than the work it counts); these metrics read them when scraped.
 */

export type Labels = Record<string, string>;
/** Labelled values: one `[labels, value]` per series. */
export type Series = Iterable<readonly [Labels, number]>;

export interface MetricSpec {
  name: string;
  help: string;
  labelNames?: readonly string[];
}

/** The series of a record of counts, one per key in `keys` (so each exists from the start, at 0). */
export function seriesOf<K extends string>(label: string, keys: readonly K[], counts: Readonly<Record<K, number>>): Series {
  return keys.map((k) => [{ [label]: k }, counts[k]] as const);
}

function publish(metric: Counter | Gauge, read: number | Series, counter: boolean): void {
  metric.reset();
  if (typeof read === 'number') {
    if (counter) (metric as Counter).inc(read);
    else (metric as Gauge).set(read);
    return;
  }
  for (const [labels, value] of read) {
    if (counter) (metric as Counter).inc(labels, value);
    else (metric as Gauge).set(labels, value);
  }
}

/** A counter whose value (or labelled values) `read` returns at each scrape: a total that never goes down. */
export function exportCounter(registry: Registry, spec: MetricSpec, read: () => number | Series): Counter {
  return new Counter({
    name: spec.name,
    help: spec.help,
    labelNames: spec.labelNames ?? [],
    registers: [registry],
    collect() {
      publish(this, read(), true);
    },
  });
}

/** A gauge whose value (or labelled values) `read` returns at each scrape; `read` may be asynchronous. */
export function exportGauge(registry: Registry, spec: MetricSpec, read: () => number | Series | Promise<number | Series>): Gauge {
  return new Gauge({
    name: spec.name,
    help: spec.help,
    labelNames: spec.labelNames ?? [],
    registers: [registry],
    async collect() {
      publish(this, await read(), false);
    },
  });
}
