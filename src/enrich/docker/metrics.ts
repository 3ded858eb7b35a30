import { Counter, Gauge, type Registry } from 'prom-client';

/** Metrics of the Docker watchers; one set per registry, shared by the watchers of every Docker host. */
export interface DockerMetrics {
  apiUp: Gauge<'host'>;
  events: Counter<'host' | 'type'>;
  badEvents: Counter<'host'>;
  reconnects: Counter<'host'>;
}

export function dockerMetrics(registry: Registry): DockerMetrics {
  const registers = [registry];
  return {
    apiUp: new Gauge({ name: 'dockflow_docker_api_up', help: '1 while the Docker API event stream of a host is connected', labelNames: ['host'], registers }),
    events: new Counter({ name: 'dockflow_docker_events_total', help: 'Docker events received', labelNames: ['host', 'type'], registers }),
    badEvents: new Counter({ name: 'dockflow_docker_bad_events_total', help: 'Lines of the Docker event stream that were not JSON objects', labelNames: ['host'], registers }),
    reconnects: new Counter({ name: 'dockflow_docker_reconnects_total', help: 'Times the Docker API connection was lost and retried', labelNames: ['host'], registers }),
  };
}
