import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DockflowError, ErrorCode } from '../errors.js';

export interface AuthOptions {
  /** The bearer token clients must present. */
  token?: string;
  /** Set by the service when the API listens on a non-loopback address: a token must then be configured. */
  required: boolean;
  /** Paths served without a token (exact match, without the query string). Default: `/healthz`. */
  publicPaths?: readonly string[];
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time comparison: both sides are hashed first so their lengths always match. */
export function tokenMatches(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * An onRequest hook checking `Authorization: Bearer <token>`, or undefined when no token is configured and none is
 * required (loopback only). A token, once configured, is always enforced.
 */
export function bearerAuth(opts: AuthOptions): ((req: FastifyRequest, reply: FastifyReply) => Promise<void>) | undefined {
  const token = opts.token;
  if (token === undefined || token === '') {
    if (opts.required) {
      throw new DockflowError(ErrorCode.CONFIG_INVALID, 'the HTTP API listens on a non-loopback address: configure an API token');
    }
    return undefined;
  }
  const open = new Set(opts.publicPaths ?? ['/healthz']);
  return async (req, reply) => {
    const path = req.url.split('?', 1)[0] ?? '';
    if (open.has(path)) return;
    const header = req.headers.authorization;
    const presented = header !== undefined && /^Bearer /i.test(header) ? header.slice(7).trim() : undefined;
    if (presented !== undefined && tokenMatches(presented, token)) return;
    reply.header('www-authenticate', 'Bearer realm="dockflow"');
    await reply.code(401).send({ error: 'unauthorized', message: presented === undefined ? 'bearer token required' : 'invalid bearer token' });
  };
}
