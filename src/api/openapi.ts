import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';

/** The loss report every time-range answer carries, as a JSON schema (see `LossReport` in app.ts). */
export const lossReportSchema = {
  type: 'object',
  description: 'What the service knows of records it did not store, so an empty answer can be told from a missing one',
  properties: {
    period: {
      type: 'object',
      properties: { since: { type: 'string' }, until: { type: 'string' } },
      description: 'Time the counters cover (ISO 8601), when known',
    },
    dropped: { type: 'object', additionalProperties: { type: 'integer' }, description: 'Lines not stored, by reason' },
    udp_kernel_drops: { type: 'integer', description: 'Datagrams dropped by the kernel on the UDP socket' },
    spooled: { type: 'integer', description: 'Records written to the local spool while Redis was unavailable' },
    pending: { type: 'integer', description: 'Spooled records not yet replayed into Redis' },
  },
  required: ['dropped', 'spooled', 'pending'],
} as const;

export const rangeSchema = {
  type: 'object',
  properties: { since: { type: ['string', 'null'] }, until: { type: ['string', 'null'] } },
} as const;

export const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, message: { type: 'string' } },
} as const;

/** OpenAPI 3 document at `/docs/json` and a browsable page at `/docs`; must be registered before the routes. */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'dockflow',
        description: 'What Docker containers talk to on the network: netfilter LOG records, connections and summaries.',
        version: '0.1.0',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
}
