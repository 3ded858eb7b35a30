import type { EnrichmentStatus, ServiceStatus } from '../api/status.js';
import { getJson } from './api.js';
import { h } from './dom.js';

let pending: Promise<ServiceStatus | undefined> | undefined;

/** What the service runs (GET /api/status), asked once per page; undefined when it cannot say. */
export function serviceStatus(): Promise<ServiceStatus | undefined> {
  pending ??= getJson<ServiceStatus>('api/status').catch(() => undefined);
  return pending;
}

export const enrichmentText = (e: EnrichmentStatus): string => `${e.name === 'geoip' ? 'GeoIP' : 'attribution'} off: ${e.detail}`;

/** A banner naming each enrichment that is off and why; empty (hidden) while all are on. */
export function statusBanner(): HTMLElement {
  const el = h('div', { id: 'status-banner', class: 'notice', hidden: '' });
  void serviceStatus().then((s) => {
    const off = s?.enrichments.filter((e) => !e.on) ?? [];
    if (off.length === 0) return;
    el.replaceChildren(...off.map((e) => h('p', {}, enrichmentText(e))));
    el.hidden = false;
  });
  return el;
}

/** The attribution status when it is off, for pages that would otherwise be empty. */
export async function attributionOff(): Promise<EnrichmentStatus | undefined> {
  return (await serviceStatus())?.enrichments.find((e) => e.name === 'attribution' && !e.on);
}
