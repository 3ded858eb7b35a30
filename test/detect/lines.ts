/**
 * Real-shaped syslog lines for detection tests: the `dockflow:` (ctstate NEW) LOG lines of the captured scenarios
 * (test/fixtures/netfilter), with addresses, ports and times changed, in the RFC 3164 envelope rsyslog forwards.
 */
import { readFileSync } from 'node:fs';
import { fixture } from '../helpers/paths.js';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import type { ContainerRef, FlowRecord } from '../../src/record.js';

function captured(scenario: string, transport: 'TCP' | 'UDP'): string {
  const line = readFileSync(fixture('netfilter', `${scenario}.kmsg.txt`), 'utf8')
    .split('\n')
    .find((l) => l.includes(';dockflow: ') && l.includes(`PROTO=${transport}`));
  if (line === undefined) throw new Error(`no dockflow: line in ${scenario}`);
  return line.slice(line.indexOf(';') + 1).trimEnd();
}

const TEMPLATES = {
  egressTcp: captured('tcp-egress-smtp', 'TCP'),
  egressUdp: captured('udp-dns-egress', 'UDP'),
  ingressTcp: captured('ingress-published-port', 'TCP'),
};

export interface LineSpec {
  kind: keyof typeof TEMPLATES;
  timeMs: number;
  src?: string;
  dst?: string;
  spt?: number;
  dpt?: number;
  host?: string;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** An RFC 3164 line as rsyslog forwards a kernel message (times in UTC). */
export function syslogLine(s: LineSpec): string {
  let body = TEMPLATES[s.kind];
  if (s.src !== undefined) body = body.replace(/ SRC=\S+/, ` SRC=${s.src}`);
  if (s.dst !== undefined) body = body.replace(/ DST=\S+/, ` DST=${s.dst}`);
  if (s.spt !== undefined) body = body.replace(/ SPT=\d+/, ` SPT=${s.spt}`);
  if (s.dpt !== undefined) body = body.replace(/ DPT=\d+/, ` DPT=${s.dpt}`);
  const d = new Date(s.timeMs);
  const stamp = `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${d.toISOString().slice(11, 19)}`;
  return `<4>${stamp} ${s.host ?? 'dockerhost'} kernel: ${body}`;
}

const OPTIONS = createLineOptions({ timeZone: 'UTC' });

/** The line parsed as the service parses it, and attributed as attribution would (`container` as it sets it). */
export function record(s: LineSpec, container?: ContainerRef): FlowRecord {
  const r = parseLine(syslogLine(s), OPTIONS, s.timeMs);
  if (typeof r === 'string') throw new Error(`line not parsed: ${r}`);
  if (container !== undefined) r.container = container;
  return r;
}

export const WEB: ContainerRef = {
  id: 'a'.repeat(64),
  name: 'shop-web-1',
  image: { name: 'nginx:1.27' },
  labels: { 'com.docker.compose.service': 'web', 'com.docker.compose.project': 'shop' },
  ports: ['80/tcp'],
  match: 'ip',
};

export const MAIL: ContainerRef = {
  id: 'b'.repeat(64),
  name: 'shop-mail-1',
  image: { name: 'postfix:3' },
  labels: { 'com.docker.compose.service': 'mail', 'dockflow.role': 'mail' },
  match: 'ip',
};
