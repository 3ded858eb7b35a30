/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
import { follow, getJson, type Params } from '../api.js';
import { h, viewLink } from '../dom.js';
import { fmtCount, fmtTime } from '../format.js';
import { errorBox, field, filterForm, isAbort, paramsOf, textInput, timeInput, type View, type ViewContext } from './common.js';

/** An alert as `/api/alerts` returns it (flat fields). */
export interface AlertItem {
  id: string;
  rule: string;
  severity: string;
  description: string;
  kind: 'new' | 'repeat';
  count: number;
  group: string;
  time: string;
  last: string;
  reason?: string;
  direction: string;
  transport?: string;
  remote_ip?: string;
  remote_port?: number;
  remote_country?: string;
  container_id?: string;
  container_name?: string;
  service?: string;
  flow?: string;
}

const FILTERS = ['rule', 'severity', 'container', 'since'] as const;
const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'];

/** The flows behind an alert: its container and remote over the group's time, a minute either side. */
function flowsParams(a: AlertItem): Params {
  const from = new Date(Date.parse(a.time) - 60_000).toISOString();
  const to = new Date(Date.parse(a.last) + 60_000).toISOString();
  return { view: 'flows', since: from, until: to, ...(a.container_name !== undefined ? { container: a.container_name } : {}), ...(a.remote_ip !== undefined ? { ip: a.remote_ip } : {}) };
}

/**
 * Alerts raised by detection rules, newest first, with new ones arriving live. A group's repeats update its row's
 * count; each row links to the container and to the flows that fired it.
 */
export function alertsView(q: URLSearchParams, ctx: ViewContext): View {
  const params = paramsOf(q, FILTERS);
  const abort = new AbortController();
  const rows = h('tbody', { id: 'alert-rows' });
  const status = h('p', { class: 'muted', id: 'alert-count' }, 'Loading…');
  const liveState = h('span', { id: 'alert-live-state', 'data-state': 'connecting' }, 'connecting');
  const byGroup = new Map<string, { row: HTMLTableRowElement; count: HTMLElement }>();
  const groupKey = (a: AlertItem): string => `${a.group}|${a.time}`;

  const severity = h('select', { name: 'severity', id: 'f-severity' }, h('option', { value: '' }, 'any'), SEVERITIES.map((s) => h('option', { value: s }, `${s} and above`)));
  severity.value = String(params.severity ?? '');

  const rowOf = (a: AlertItem): HTMLTableRowElement => {
    const count = h('td', { class: 'num' }, fmtCount(a.count));
    const container = a.container_name ?? a.container_id?.slice(0, 12);
    const row = h(
      'tr',
      { class: `alert sev-${a.severity}`, 'data-rule': a.rule },
      h('td', {}, fmtTime(a.time)),
      h('td', {}, h('span', { class: `sev sev-${a.severity}` }, a.severity)),
      h('td', {}, h('strong', {}, a.rule), h('div', { class: 'muted' }, a.description)),
      h('td', {}, container !== undefined ? viewLink({ view: 'container', key: container }, container) : '—'),
      h('td', {}, `${a.remote_ip ?? ''}${a.remote_port !== undefined ? `:${a.remote_port}` : ''} ${a.transport ?? ''} ${a.remote_country ?? ''}`),
      count,
      h('td', {}, a.reason ?? ''),
      h('td', {}, viewLink(flowsParams(a), 'flows')),
    );
    byGroup.set(groupKey(a), { row, count });
    return row;
  };

  /** A repeat updates its group's row when shown; otherwise it is a row of its own. */
  const place = (a: AlertItem, atTop: boolean): void => {
    const known = byGroup.get(groupKey(a));
    if (a.kind === 'repeat' && known !== undefined) {
      known.count.textContent = fmtCount(a.count);
      return;
    }
    if (atTop) rows.prepend(rowOf(a));
    else rows.append(rowOf(a));
  };

  const load = async (): Promise<void> => {
    try {
      const answer = await getJson<{ items: AlertItem[] }>('api/alerts', { ...params, limit: 500 }, abort.signal);
      // Oldest first, so a group's repeat finds its row.
      const items = answer.items.slice().reverse();
      for (const a of items.filter((x) => x.kind === 'new')) place(a, true);
      for (const a of items.filter((x) => x.kind === 'repeat')) place(a, true);
      status.textContent = `${rows.children.length} alerts shown`;
      void follow(
        'api/alerts/live',
        { ...(params.rule !== undefined ? { rule: params.rule } : {}), ...(params.severity !== undefined ? { severity: params.severity } : {}), ...(params.container !== undefined ? { container: params.container } : {}) },
        {
          onEvent: (e) => {
            if (e.event !== 'alert') return;
            place(JSON.parse(e.data) as AlertItem, true);
            status.textContent = `${rows.children.length} alerts shown`;
          },
          onSubscribed: () => {},
          onState: (s, detail) => {
            liveState.dataset.state = s;
            liveState.textContent = detail !== undefined ? `${s}: ${detail}` : s;
          },
        },
        abort.signal,
      );
    } catch (err) {
      if (isAbort(err)) return;
      status.replaceWith(errorBox(err));
    }
  };
  void load();

  const el = h(
    'section',
    { class: 'view alerts' },
    h('h1', {}, 'Alerts'),
    filterForm(
      ctx,
      'alerts',
      {},
      field('Rule', textInput('rule', params.rule, { placeholder: 'smtp-egress-non-mail' })),
      field('Severity', severity),
      field('Container', textInput('container', params.container, { placeholder: 'name or ID prefix' })),
      field('Since', timeInput('since', params.since, '7d')),
    ),
    h('p', {}, status, ' · live: ', liveState),
    h(
      'table',
      { class: 'alerts-table' },
      h('thead', {}, h('tr', {}, ['Time', 'Severity', 'Rule', 'Container', 'Remote', 'Count', 'Why', ''].map((c) => h('th', {}, c)))),
      rows,
    ),
  );
  return { el, dispose: () => abort.abort() };
}
