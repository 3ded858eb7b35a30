import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';

export interface DashboardOptions {
  /** The built bundle (`npm run build:dashboard`): `index.html` and `assets/`. */
  distDir: string;
}

/**
 * Scripts and styles only from the server itself, so even a record that slipped markup into the page could not run
 * anything; `connect-src 'self'` keeps the page talking to this API only.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * What the dashboard serves: no data, so no token. A browser cannot attach a bearer token to a navigation or a
 * `<script src>`; add these to the API's `publicPaths` and the page asks for the token before calling the API.
 */
export const DASHBOARD_PUBLIC_PATHS = ['/', '/assets/app.js', '/assets/app.css'] as const;

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.txt': 'text/plain; charset=utf-8',
};

/** Asset names are flat and plain: nothing that could climb out of the directory or need decoding. */
const ASSET_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+$/;

/** `dist/dashboard` of the checkout or package this module belongs to, whether it runs from `src/` or `dist/src/`. */
export function defaultDashboardDir(from: string = fileURLToPath(import.meta.url)): string {
  for (let dir = dirname(from); dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'dist', 'dashboard');
  }
  return join(dirname(from), 'dashboard');
}

const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'EISDIR';

function securityHeaders(reply: FastifyReply): void {
  reply
    .header('content-security-policy', DASHBOARD_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cross-origin-opener-policy', 'same-origin')
    .header('x-frame-options', 'DENY');
}

/**
 * Serves the built dashboard: `index.html` at `/`, files under `/assets/`. Files are read per request (they are
 * small) so a rebuild shows without a restart; the ETag lets a browser revalidate instead of downloading again.
 */
export function dashboardRoutes(opts: DashboardOptions): FastifyPluginAsync {
  const send = async (req: FastifyRequest, reply: FastifyReply, path: string): Promise<FastifyReply | undefined> => {
    let body: Buffer;
    try {
      body = await readFile(path);
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    securityHeaders(reply);
    reply.header('cache-control', 'no-cache').header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    return reply.type(CONTENT_TYPES[extname(path)] ?? 'application/octet-stream').send(body);
  };

  return async (app) => {
    app.get('/', { schema: { hide: true } }, async (req, reply) => {
      const sent = await send(req, reply, join(opts.distDir, 'index.html'));
      if (sent !== undefined) return sent;
      return reply
        .code(503)
        .type('text/plain; charset=utf-8')
        .send('The dashboard is not built: run npm run build (or npm run build:dashboard).\n');
    });

    app.get('/assets/:file', { schema: { hide: true } }, async (req: FastifyRequest<{ Params: { file: string } }>, reply) => {
      const { file } = req.params;
      const sent = ASSET_NAME.test(file) ? await send(req, reply, join(opts.distDir, 'assets', file)) : undefined;
      if (sent !== undefined) return sent;
      return reply.code(404).send({ error: 'not_found', message: `no dashboard asset ${JSON.stringify(file)}` });
    });
  };
}
