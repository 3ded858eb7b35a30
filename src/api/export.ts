import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { ExportChain } from '../export/chain.js';
import { matchingRecords } from '../export/records.js';
import type { Order } from '../store/query.js';
import type { ApiContext } from './app.js';
import { filterProperties, rangeOf, toFlowFilter, type FilterQuery } from './filters.js';
import { errorSchema } from './openapi.js';

interface ExportQuery extends FilterQuery {
  order?: Order;
  max_records?: number;
}

/** The most records one export holds, and its default. */
export const EXPORT_MAX_RECORDS = 10_000_000;
const EXPORT_DEFAULT_MAX_RECORDS = 1_000_000;

export function exportRoutes(ctx: ApiContext, producer: string): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/api/export',
      {
        schema: {
          tags: ['flows'],
          summary: 'Export matching records as a verifiable NDJSON file',
          description:
            'Header line (query, range), one record per line each with its SHA-256 chain hash, trailer line (count, first and last entry IDs, GeoIP/ASN database stamps, loss report, chain head). Streamed; `dockflow verify FILE` checks it. Keep the chain head (last line) apart from the file: it anchors the chain.',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              ...filterProperties,
              order: { type: 'string', enum: ['desc', 'asc'], default: 'asc' },
              max_records: { type: 'integer', minimum: 1, maximum: EXPORT_MAX_RECORDS, default: EXPORT_DEFAULT_MAX_RECORDS },
            },
          },
          response: { 400: errorSchema, 401: errorSchema },
        },
      },
      async (req: FastifyRequest<{ Querystring: ExportQuery }>, reply: FastifyReply) => {
        const { order = 'asc', max_records: maxRecords = EXPORT_DEFAULT_MAX_RECORDS, ...filterQuery } = req.query;
        const f = toFlowFilter(filterQuery, ctx.now());
        const range = rangeOf(f);
        const chain = new ExportChain({
          query: { ...filterQuery, order },
          range: { ...(range.since ? { since: range.since } : {}), ...(range.until ? { until: range.until } : {}) },
          created: new Date(ctx.now()).toISOString(),
          producer,
          max_records: maxRecords,
        });
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-disposition': 'attachment; filename="dockflow-export.ndjson"' });
        let aborted = false;
        res.once('close', () => {
          if (!res.writableFinished) aborted = true;
        });
        // Back-pressure: wait for the socket to drain rather than buffering the export in memory.
        const write = async (text: string): Promise<void> => {
          if (!res.write(text)) await new Promise<void>((resolve) => { res.once('drain', resolve); res.once('close', resolve); });
        };
        let truncated = false;
        let reason: string | undefined;
        try {
          await write(chain.headerLine);
          for await (const record of matchingRecords(ctx, f, order)) {
            if (aborted) return;
            if (chain.records >= maxRecords) {
              truncated = true;
              reason = `more than max_records (${maxRecords}) records match`;
              break;
            }
            await write(chain.line(record));
          }
        } catch (err) {
          truncated = true;
          reason = `store error: ${(err as Error).message}`;
          ctx.logger.warn({ err: (err as Error).message }, 'export stopped by a store error');
        }
        if (aborted) return;
        res.end(chain.trailerLine({ loss: await ctx.lossReport(), truncated, ...(reason !== undefined ? { reason } : {}) }));
      },
    );
  };
}
