import { existsSync, statSync, watch, type FSWatcher } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { FlowRecord } from '../record.js';
import { Detector, type Alert } from './engine.js';
import { AlertStream, newOutputCounters, Webhook, type OutputCounters } from './outputs.js';
import { loadRules, ruleFiles, RuleLoadError, type RuleSet } from './rules.js';
import { Baselines, decodeBaseline, encodeBaseline } from './state.js';

/** `rules/detections` of the package this file belongs to (src/ or dist/src/). */
export function shippedRulesDir(from: string = fileURLToPath(import.meta.url)): string {
  for (let dir = dirname(from); dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'rules', 'detections');
  }
  return join(dirname(from), 'rules', 'detections');
}

/** The rule files to load: the shipped defaults (unless left out), then the user's files and directories in order. */
export function rulePaths(opts: { shipped: boolean; rules: readonly string[] }): string[] {
  return [...(opts.shipped ? [shippedRulesDir()] : []), ...opts.rules];
}

export function loadRulePaths(paths: readonly string[]): RuleSet {
  const files: string[] = [];
  for (const p of paths) {
    try {
      files.push(...ruleFiles(p));
    } catch (err) {
      throw new RuleLoadError(`${p}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (err as Error).message}`);
    }
  }
  return loadRules(files);
}

export interface DetectionOptions {
  paths: readonly string[];
  groupWindowMs: number;
  maxGroups: number;
  maxStateKeys: number;
  alertsKey: string;
  baselinesKey: string;
  alertsMaxLen: number;
  alertsMaxQueue: number;
  baselineFlushMs: number;
  reloadDebounceMs: number;
  webhook?: { url: string; maxQueue: number; maxAttempts: number; backoffMs: number; timeoutMs: number };
}

export interface Detection {
  /** The ingest hook: one call per record, after enrichment. */
  observe(r: FlowRecord, timeMs: number): void;
  /** Loads the rules again (also done on file changes); resolves false and keeps the old rules when they are bad. */
  reload(): boolean;
  health(): { ok: boolean; detail: string };
  readonly counters: OutputCounters;
  readonly detector: Detector;
  close(): Promise<void>;
}

/** Baselines restored at start: HSCAN in pages, at most the cap. */
async function loadBaselines(redis: Redis, key: string, into: Baselines, cap: number): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, flat] = await redis.hscan(key, cursor, 'COUNT', 1000);
    cursor = next;
    for (let i = 0; i + 1 < flat.length && n < cap; i += 2) {
      const b = decodeBaseline(flat[i + 1]!, 100_000);
      if (b === undefined) continue;
      into.restore(flat[i]!, b);
      n++;
    }
  } while (cursor !== '0' && n < cap);
  return n;
}

/**
 * Detections in the running service: the rules (shipped and the user's, reloaded when a file changes), the detector
 * on the ingest path, and the outputs (the alert stream, the webhook, the metrics). First-contact baselines are
 * restored from Redis at start and written back in batches by a timer.
 */
export async function startDetection(opts: DetectionOptions, deps: { redis: Redis; logger: Logger; registry: Registry }): Promise<Detection> {
  const { redis, logger, registry } = deps;
  const counters = newOutputCounters();
  const alertsByRule = new Map<string, number>();
  let loadErrors = 0;
  let lastError: string | undefined;
  let loadedAt = '';

  const stream = new AlertStream(redis, { key: opts.alertsKey, maxLen: opts.alertsMaxLen, maxQueue: opts.alertsMaxQueue, flushIntervalMs: 50 }, counters, logger);
  const webhook = opts.webhook !== undefined ? new Webhook(opts.webhook, counters, logger) : undefined;
  const onAlert = (a: Alert): void => {
    if (a.kind === 'new') alertsByRule.set(a.rule, (alertsByRule.get(a.rule) ?? 0) + 1);
    stream.push(a);
    webhook?.push(a);
  };
  const baselines = new Baselines(opts.maxStateKeys, { evicted: 0, baselineFull: 0 });
  const detector = new Detector({ groupWindowMs: opts.groupWindowMs, maxGroups: opts.maxGroups, maxStateKeys: opts.maxStateKeys, baselines, onAlert });
  const counts = detector.counters;

  const restored = await loadBaselines(redis, opts.baselinesKey, baselines, opts.maxStateKeys);

  const reload = (): boolean => {
    try {
      const set = loadRulePaths(opts.paths);
      detector.setRules(set);
      lastError = undefined;
      loadedAt = new Date().toISOString();
      logger.info({ rules: set.rules.length, files: set.files }, 'detection rules loaded');
      return true;
    } catch (err) {
      loadErrors++;
      lastError = err instanceof RuleLoadError ? err.message : String(err);
      logger.error({ error: lastError, keeping: detector.rules.length }, 'detection rules not loaded; keeping the previous rules');
      return false;
    }
  };
  if (!reload() && detector.rules.length === 0) logger.warn('no detection rules are active');
  logger.info({ baselines: restored }, 'first-contact baselines restored');

  // Editors replace files (rename), so the directories are watched, not the files.
  const watchers: FSWatcher[] = [];
  let debounce: NodeJS.Timeout | undefined;
  const schedule = (): void => {
    if (debounce !== undefined) clearTimeout(debounce);
    debounce = setTimeout(() => {
      debounce = undefined;
      reload();
    }, opts.reloadDebounceMs);
  };
  const watched = new Set<string>();
  for (const p of opts.paths) {
    let dir = p;
    try {
      if (!statSync(p).isDirectory()) dir = dirname(p);
    } catch {
      dir = dirname(p);
    }
    if (watched.has(dir)) continue;
    watched.add(dir);
    try {
      const w = watch(dir, (_event, name) => {
        if (name === null || /\.ya?ml$/.test(name)) schedule();
      });
      w.on('error', (err) => logger.warn({ err, dir }, 'rule directory watch failed'));
      watchers.push(w);
    } catch (err) {
      logger.warn({ err, dir }, 'cannot watch rule directory: changes need a restart');
    }
  }

  let flushing = false;
  const flushBaselines = async (): Promise<void> => {
    if (flushing) return;
    const dirty = baselines.takeDirty();
    if (dirty.length === 0) return;
    flushing = true;
    try {
      for (let i = 0; i < dirty.length; i += 500) {
        const args: string[] = [];
        for (const [k, b] of dirty.slice(i, i + 500)) args.push(k, encodeBaseline(b));
        await redis.hset(opts.baselinesKey, ...args);
      }
    } catch (err) {
      for (const [k] of dirty) baselines.touch(k);
      logger.warn({ err, baselines: dirty.length }, 'first-contact baselines not saved; retrying');
    } finally {
      flushing = false;
    }
  };
  const baselineTimer = setInterval(() => void flushBaselines(), opts.baselineFlushMs);
  const sweepTimer = setInterval(() => detector.sweep(Date.now()), 1000);
  baselineTimer.unref();
  sweepTimer.unref();

  new Counter({
    name: 'dockflow_detections_total',
    help: 'Records that matched a detection rule (its condition and stateful condition), by rule',
    labelNames: ['rule'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [rule, n] of detector.fired) this.labels(rule).inc(n);
    },
  });
  new Counter({
    name: 'dockflow_alerts_total',
    help: 'Alerts raised (groups opened), by rule',
    labelNames: ['rule'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [rule, n] of alertsByRule) this.labels(rule).inc(n);
    },
  });
  new Counter({
    name: 'dockflow_alerts_undelivered_total',
    help: 'Alerts an output did not deliver, by output and reason',
    labelNames: ['output', 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      this.labels('stream', 'dropped').inc(counters.streamDropped);
      this.labels('webhook', 'dropped').inc(counters.webhookDropped);
      this.labels('webhook', 'failed-attempt').inc(counters.webhookFailures);
    },
  });
  new Counter({
    name: 'dockflow_alerts_delivered_total',
    help: 'Alerts delivered, by output',
    labelNames: ['output'],
    registers: [registry],
    collect() {
      this.reset();
      this.labels('stream').inc(counters.stored);
      this.labels('webhook').inc(counters.webhookSent);
    },
  });
  new Counter({
    name: 'dockflow_rules_load_errors_total',
    help: 'Rule loads that failed (the previous rules were kept)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(loadErrors);
    },
  });
  new Gauge({
    name: 'dockflow_rules_loaded',
    help: 'Detection rules in effect',
    registers: [registry],
    collect() {
      this.set(detector.rules.length);
    },
  });
  new Counter({
    name: 'dockflow_detect_state_evictions_total',
    help: 'Detection state forgotten to stay within its bounds, by kind',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      this.reset();
      this.labels('state-key').inc(counts.evicted);
      this.labels('group').inc(counts.groupsEvicted);
      this.labels('baseline-full').inc(counts.baselineFull);
    },
  });
  new Gauge({
    name: 'dockflow_detect_state_keys',
    help: 'Keys held by each stateful rule (subjects, targets, baselines)',
    labelNames: ['rule'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [rule, n] of Object.entries(detector.stateSizes())) this.labels(rule).set(n);
    },
  });

  return {
    observe: (r, t) => detector.observe(r, t),
    reload,
    counters,
    detector,
    health: () => ({
      ok: true,
      detail:
        `${detector.rules.length} rules` +
        (loadedAt !== '' ? ` loaded ${loadedAt}` : '') +
        (lastError !== undefined ? `; last reload failed (${loadErrors} failed loads), previous rules kept: ${lastError}` : ''),
    }),
    close: async () => {
      clearInterval(baselineTimer);
      clearInterval(sweepTimer);
      if (debounce !== undefined) clearTimeout(debounce);
      for (const w of watchers) w.close();
      detector.flush();
      webhook?.close();
      await stream.close();
      await flushBaselines();
    },
  };
}
