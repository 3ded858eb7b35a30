import type { FastifyInstance } from 'fastify';
import type { Holding, Ledger } from '../enrich/docker/ledger.js';

export interface ContainersRoutesOptions {
  ledger: Ledger;
  /** Syslog hostname → ledger host, so `host=` may also be the name records carry in `host.name`. */
  hostMap?: Record<string, string>;
}

const labelsSchema = { type: 'object', additionalProperties: { type: 'string' } } as const;

const containerSchema = {
  type: 'object',
  required: ['id', 'name', 'image', 'labels'],
  properties: { id: { type: 'string' }, name: { type: 'string' }, image: { type: 'string' }, labels: labelsSchema },
} as const;

const addressSchema = {
  type: 'object',
  required: ['ip', 'from'],
  properties: {
    ip: { type: 'string' },
    mac: { type: 'string' },
    network: { type: 'string' },
    physdev: { type: 'string' },
    from: { type: 'string', format: 'date-time' },
    /** Absent while held. */
    to: { type: 'string', format: 'date-time' },
    /** `event`: exact end; `observed`: noticed gone later (an upper bound). */
    end: { type: 'string', enum: ['event', 'observed'] },
  },
} as const;

const errorSchema = { type: 'object', properties: { error: { type: 'string' } } } as const;

interface AddressView {
  ip: string;
  mac?: string;
  network?: string;
  physdev?: string;
  from: string;
  to?: string;
  end?: 'event' | 'observed';
}

function addressView(h: Holding): AddressView {
  const v: AddressView = { ip: h.ip, from: new Date(h.fromMs).toISOString() };
  if (h.mac) v.mac = h.mac;
  if (h.network) v.network = h.network;
  if (h.physdev) v.physdev = h.physdev;
  if (h.toMs !== undefined) v.to = new Date(h.toMs).toISOString();
  if (h.closedBy) v.end = h.closedBy;
  return v;
}

/** `at=` as ISO 8601 or epoch milliseconds. */
function parseAt(at: string | undefined): number | undefined {
  if (at === undefined || at === '') return Date.now();
  if (/^\d+$/.test(at)) return Number(at);
  const ms = Date.parse(at);
  return Number.isNaN(ms) ? undefined : ms;
}

/** What the attribution ledger knows: containers with their address history, and who held an address when. */
export async function containersRoutes(app: FastifyInstance, opts: ContainersRoutesOptions): Promise<void> {
  const { ledger } = opts;
  const hostMap = new Map(Object.entries(opts.hostMap ?? {}));
  const resolveHosts = (host: string | undefined): string[] => {
    if (host === undefined || host === '') return ledger.hosts();
    return [hostMap.get(host) ?? host];
  };

  app.get<{ Querystring: { host?: string } }>(
    '/api/containers',
    {
      schema: {
        querystring: { type: 'object', additionalProperties: false, properties: { host: { type: 'string' } } },
        response: {
          200: {
            type: 'object',
            required: ['hosts'],
            properties: {
              hosts: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['host', 'containers'],
                  properties: {
                    host: { type: 'string' },
                    containers: {
                      type: 'array',
                      items: {
                        ...containerSchema,
                        required: [...containerSchema.required, 'addresses'],
                        properties: { ...containerSchema.properties, addresses: { type: 'array', items: addressSchema } },
                      },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
    async (req) => ({
      hosts: resolveHosts(req.query.host).map((host) => ({
        host,
        containers: ledger.containers(host).map((c) => ({ ...c, addresses: c.addresses.map(addressView) })),
      })),
    }),
  );

  app.get<{ Querystring: { ip: string; at?: string; host?: string } }>(
    '/api/containers/who',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          required: ['ip'],
          properties: { ip: { type: 'string', minLength: 2 }, at: { type: 'string' }, host: { type: 'string' } },
        },
        response: {
          200: {
            type: 'object',
            required: ['ip', 'at', 'matches'],
            properties: {
              ip: { type: 'string' },
              at: { type: 'string', format: 'date-time' },
              matches: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['host', 'match', 'container', 'address'],
                  properties: { host: { type: 'string' }, match: { type: 'string' }, container: containerSchema, address: addressSchema },
                },
              },
            },
          },
          400: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const atMs = parseAt(req.query.at);
      if (atMs === undefined) return reply.code(400).send({ error: `at=${req.query.at}: not an ISO 8601 time or epoch milliseconds` });
      const matches = [];
      for (const host of resolveHosts(req.query.host)) {
        const found = ledger.lookup(host, req.query.ip, atMs);
        if (found) matches.push({ host, match: found.match, container: found.holding.container, address: addressView(found.holding) });
      }
      return { ip: req.query.ip, at: new Date(atMs).toISOString(), matches };
    },
  );
}
