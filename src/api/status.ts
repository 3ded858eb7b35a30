import type { FastifyPluginAsync } from 'fastify';

/** An enrichment and whether it runs, with the reason in plain words (what is missing, which database). */
export interface EnrichmentStatus {
  name: 'attribution' | 'geoip';
  on: boolean;
  detail: string;
}

/** What runs and where, as the start-up log says it: for the dashboard's banner and for operators. */
export interface ServiceStatus {
  syslog: { transport: 'udp' | 'tcp' | 'tls' | 'relp'; address: string; port: number }[];
  /** Base URLs of the HTTP API, its OpenAPI page and the dashboard. */
  api: string;
  docs: string;
  dashboard: string;
  enrichments: EnrichmentStatus[];
}

/** A JSON schema object with exactly these properties, all required. */
const exactly = (properties: Record<string, unknown>) => ({ type: 'object', additionalProperties: false, required: Object.keys(properties), properties });
const text = { type: 'string' };

const statusSchema = exactly({
  syslog: { type: 'array', items: exactly({ transport: { type: 'string', enum: ['udp', 'tcp', 'tls', 'relp'] }, address: text, port: { type: 'integer' } }) },
  api: text,
  docs: text,
  dashboard: text,
  enrichments: { type: 'array', items: exactly({ name: { type: 'string', enum: ['attribution', 'geoip'] }, on: { type: 'boolean' }, detail: text }) },
});

/** `GET /api/status`. */
export function statusRoutes(status: () => ServiceStatus): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/api/status',
      {
        schema: {
          summary: 'What runs and where',
          description: 'The syslog listeners, the API and dashboard addresses, and each enrichment on or off with the reason (for example no Docker endpoint, or which GeoIP database and its build date).',
          querystring: { type: 'object', additionalProperties: false, properties: {} },
          response: { 200: statusSchema },
        },
      },
      async () => status(),
    );
  };
}

/** The start-up lines: one per fact, in plain words. */
export function statusLines(s: ServiceStatus): string[] {
  const byAddress = new Map<string, string[]>();
  for (const l of s.syslog) {
    const where = l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`;
    byAddress.set(where, [...(byAddress.get(where) ?? []), l.transport.toUpperCase()]);
  }
  const syslog = [...byAddress].map(([where, transports]) => `${transports.join(' and ')} on ${where}`).join(', ');
  return [
    `syslog: ${syslog === '' ? 'no listener' : syslog}`,
    `API: ${s.api} (reference: ${s.docs})`,
    `dashboard: ${s.dashboard}`,
    ...s.enrichments.map((e) => `${e.name === 'geoip' ? 'GeoIP' : 'attribution'} ${e.on ? 'on' : 'off'}: ${e.detail}`),
  ];
}
