import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isLoopbackIp } from '../net/ip.js';
import { HttpError } from './filters.js';
import type { ApiCounters } from './limits.js';

/** `name`, `name:port`, `[v6]`, `[v6]:port` → lowercase name (brackets kept off) and port; undefined when malformed. */
export function splitHost(host: string): { name: string; port?: number } | undefined {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(host);
  if (m === null) return undefined;
  const name = m[1]!.replace(/^\[|\]$/g, '').toLowerCase();
  return { name, ...(m[2] !== undefined ? { port: Number(m[2]) } : {}) };
}

/**
 * With no API token, the API trusts whoever can reach loopback, and a web page on any site could reach it under a
 * name of its own that resolves to 127.0.0.1 (DNS rebinding). The browser then sends that name as Host, so only
 * loopback names and addresses on this server's port, and the names configured in `allowed`, are answered; anything
 * else gets 421. `allowed` entries are `name` (any port) or `name:port`.
 */
export function hostCheck(app: FastifyInstance, allowed: readonly string[], counters: ApiCounters): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
  const extra = allowed.map((a) => splitHost(a)).filter((a): a is { name: string; port?: number } => a !== undefined);
  return async (req) => {
    const h = splitHost(req.headers.host ?? '');
    const address = app.server.address();
    const ourPort = typeof address === 'object' && address !== null ? address.port : undefined;
    const port = h?.port ?? 80;
    const ok =
      h !== undefined &&
      (((h.name === 'localhost' || isLoopbackIp(h.name)) && (ourPort === undefined || port === ourPort)) ||
        extra.some((e) => e.name === h.name && (e.port === undefined || e.port === port)));
    if (ok) return;
    counters.hostRejected += 1;
    throw new HttpError(421, `Host ${JSON.stringify(req.headers.host ?? '')} is not this server's; without an API token only loopback names (or http.allowedHosts) are answered`);
  };
}
