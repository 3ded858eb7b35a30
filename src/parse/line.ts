import type { FlowRecord, SkipReason } from '../record.js';
import { bridgeMatcher, DEFAULT_BRIDGES } from './direction.js';
import type { BridgeMatcher } from './direction.js';
import { Ipv4Texts, parseNetfilter } from './netfilter.js';
import { createEnvelopeOptions, newEnvelope, parseEnvelope, SYSLOG_FACILITIES, SYSLOG_SEVERITIES } from './syslog.js';
import type { Envelope, EnvelopeOptions, EnvelopeOptionsInput } from './syslog.js';
import { IsoFormatter } from './time.js';

/** rsyslog's default `maxMessageSize` is 8 KiB; a kernel LOG line is under 1 KiB (printk caps a record at 1024). */
export const DEFAULT_MAX_LINE_BYTES = 8192;

export interface LineOptions extends EnvelopeOptions {
  isBridge: BridgeMatcher;
  /** `host.name` for lines that carry no hostname (kmsg, dmesg, bare, hostless RFC 3164). */
  hostName: string | undefined;
  /** Longer lines are skipped as `oversize` before any parsing. */
  maxLineBytes: number;
  /** False: records come without `network.community_id` (see NetfilterOptions). */
  communityId: boolean;
  /** Scratch envelope and timestamp formatter: per-instance state that keeps the hot path free of allocations. */
  readonly envelope: Envelope;
  readonly iso: IsoFormatter;
  readonly ipv4Texts: Ipv4Texts;
}

export interface LineOptionsInput extends EnvelopeOptionsInput {
  /** Container bridge name patterns (`docker0`, `br-*`); default {@link DEFAULT_BRIDGES}. Ignored with `isBridge`. */
  bridges?: readonly string[];
  isBridge?: BridgeMatcher;
  hostName?: string;
  maxLineBytes?: number;
  communityId?: boolean;
}

/**
 * Options with defaults: bridges `docker0,br-*`, zone UTC, reference time = the clock at each call. Each result
 * carries its own caches: create one per parsing context (the service, one CLI file), not one per line.
 */
export function createLineOptions(partial: LineOptionsInput = {}): LineOptions {
  return {
    ...createEnvelopeOptions(partial),
    isBridge: partial.isBridge ?? bridgeMatcher(partial.bridges ?? DEFAULT_BRIDGES),
    hostName: partial.hostName,
    maxLineBytes: partial.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
    communityId: partial.communityId ?? true,
    envelope: newEnvelope(),
    iso: new IsoFormatter(),
    ipv4Texts: new Ipv4Texts(),
  };
}

/**
 * One syslog message or log file line in, a flow record or the reason it is none out. Never throws. `referenceMs`
 * (the receive time in the service) anchors RFC 3164 year inference and stands in for `@timestamp` when the line
 * has no wall-clock time (bare text, RFC 5424 NILVALUE, dmesg/kmsg without a boot time); default: the options'
 * reference, else now. A trailing LF or CRLF (RFC 5424 frames end with one) is ignored.
 */
export function parseLine(line: string, opts: LineOptions, referenceMs?: number): FlowRecord | SkipReason {
  const max = opts.maxLineBytes;
  // UTF-8 needs at least one byte per UTF-16 unit and at most three, so most lines skip the byte count.
  if (line.length > max || (line.length * 3 > max && Buffer.byteLength(line) > max)) return 'oversize';
  let end = line.length;
  for (let c = line.charCodeAt(end - 1); c === 10 || c === 13; c = line.charCodeAt(--end - 1));
  if (end < line.length) line = line.slice(0, end);

  const env = parseEnvelope(line, opts, referenceMs, opts.envelope);
  if (typeof env === 'string') return env;
  const rec = parseNetfilter(line, env.messageStart, opts, env.hostname !== undefined);
  if (typeof rec === 'string') return rec;

  rec['@timestamp'] =
    env.timestampMs === undefined
      ? opts.iso.format(referenceMs ?? opts.referenceMs ?? Date.now(), 0, false)
      : opts.iso.format(env.timestampMs, env.timestampMicros, env.timestampPrecise);
  const hostName = env.hostname ?? opts.hostName;
  if (hostName !== undefined) rec.host = { name: hostName };
  if (env.hostname !== undefined && rec.observer !== undefined) rec.observer.name = env.hostname;
  const pri = env.priority;
  const syslog =
    pri === undefined && env.hostname === undefined && env.appname === undefined
      ? undefined
      : {
          priority: pri,
          facility: pri === undefined ? undefined : SYSLOG_FACILITIES[pri >> 3],
          severity: pri === undefined ? undefined : SYSLOG_SEVERITIES[pri & 7],
          hostname: env.hostname,
          appname: env.appname,
          procid: env.procid,
          msgid: env.msgid,
          version: env.version,
          structured_data: env.structuredData,
        };
  const log = rec.log ?? (rec.log = {});
  log.syslog = syslog;
  log.kernel_uptime = env.kernelUptime;
  log.format = env.format;
  return rec;
}
