import type { FastifyInstance } from 'fastify';
import { buildApp, type AppDeps, type LossReport } from '../../src/api/app.js';
import { defaultApiLimits } from '../../src/api/limits.js';
import { PREFIX, type Env } from './store-helper.js';

export const LOSS: LossReport = {
  period: { since: '2026-11-27T07:00:00.000Z', until: '2026-11-27T09:00:00.000Z' },
  dropped: { truncated: 2, oversize: 1 },
  udp_kernel_drops: 5,
  spooled: 10,
  pending: 3,
};

export function appFor(env: Env, extra: Partial<AppDeps> = {}): Promise<FastifyInstance> {
  return buildApp({
    redis: env.redis,
    logger: env.logger,
    keyPrefix: PREFIX,
    auth: { required: false },
    lossReport: () => LOSS,
    limits: defaultApiLimits(),
    ...extra,
  });
}
