import { follow, getJson, type LiveState, type Params } from '../api.js';
import { h, viewLink } from '../dom.js';
import { endpoint, fmtCount, fmtTime, remoteOf } from '../format.js';
import type { FlowList, FlowRecord } from '../types.js';
import { directionSelect, errorBox, field, filterForm, isAbort, lossPanel, paramsOf, textInput, timeInput, type View, type ViewContext } from './common.js';

/** Every filter the view carries in its URL, in the API's own names. */
export const FLOW_FILTERS = ['direction', 'container', 'ip', 'port', 'transport', 'country', 'asn', 'prefix', 'since', 'until'] as const;

const PAGE = 200;
/** Rows kept in the table; older ones fall off the bottom while the live view runs. */
const MAX_ROWS = 2000;
/** Scrolled further than this from the top, the table holds new records back instead of moving under the reader. */
const PAUSE_SCROLL_PX = 8;
const COLUMNS = ['Time (UTC)', 'Direction', 'Proto', 'Source', 'Destination', 'Container', 'Remote country', 'Prefix', 'Len'];

const LIVE_TEXT: Record<LiveState, string> = { connecting: 'connecting…', live: 'live', retrying: 'reconnecting…', failed: 'live view failed' };

function ipLink(filters: Params, ip: string | undefined, port: number | undefined): HTMLElement | string {
  if (ip === undefined) return '';
  return viewLink({ ...filters, view: 'flows', ip }, endpoint(ip, port));
}

function row(r: FlowRecord, filters: Params): HTMLTableRowElement {
  const remote = remoteOf(r);
  const c = r.container;
  const container = c?.name ?? (c?.id !== undefined ? c.id.slice(0, 12) : undefined);
  return h(
    'tr',
    { class: 'flow', 'data-id': r.event?.id ?? '' },
    h('td', { class: 'time' }, fmtTime(r['@timestamp'])),
    h('td', {}, h('span', { class: `badge dir-${r.network.direction}` }, r.network.direction)),
    h('td', {}, r.network.transport ?? ''),
    h('td', { class: 'mono' }, ipLink(filters, r.source.ip, r.source.port)),
    h('td', { class: 'mono' }, ipLink(filters, r.destination.ip, r.destination.port)),
    h('td', { class: 'container' }, container !== undefined ? viewLink({ view: 'container', key: container }, container) : c?.unattributed ? h('span', { class: 'muted', title: 'not attributed to a container' }, '—') : ''),
    h('td', {}, remote.geo?.country_iso_code ?? remote.address_class ?? '', remote.as?.number !== undefined ? h('span', { class: 'muted' }, ` AS${remote.as.number}`) : null),
    h('td', { class: 'prefix' }, r.log?.prefix ?? ''),
    h('td', { class: 'num' }, r.iptables.length ?? ''),
  );
}

function detailRow(r: FlowRecord): HTMLTableRowElement {
  return h('tr', { class: 'detail' }, h('td', { colspan: COLUMNS.length }, h('pre', {}, JSON.stringify(r, null, 2))));
}

/**
 * The flow table: the newest page of `/api/flows`, then every new matching record from `/api/flows/live` on top.
 * The live stream is opened first and the page loaded once the server confirms its read position, so nothing
 * stored in between is missed (duplicates are dropped by record id). Scrolled down, new records wait above.
 */
export function flowsView(query: URLSearchParams, ctx: ViewContext): View {
  const ac = new AbortController();
  const filters = paramsOf(query, FLOW_FILTERS);
  const live = filters.until === undefined;

  const form = filterForm(
    ctx,
    'flows',
    {},
    field('Direction', directionSelect(filters.direction)),
    field('Container', textInput('container', filters.container, { placeholder: 'name or ID prefix', size: 14 })),
    field('Address', textInput('ip', filters.ip, { placeholder: 'IP or CIDR, either side', size: 18 })),
    field('Port', textInput('port', filters.port, { type: 'number', min: 0, max: 65535, placeholder: 'any', size: 6 })),
    field('Proto', textInput('transport', filters.transport, { placeholder: 'tcp, udp…', size: 6 })),
    field('Country', textInput('country', filters.country, { placeholder: 'US', size: 3, maxlength: 2, pattern: '[A-Za-z]{2}' })),
    field('ASN', textInput('asn', filters.asn, { type: 'number', min: 0, placeholder: 'any', size: 8 })),
    field('Prefix', textInput('prefix', filters.prefix, { placeholder: 'dockflow:', size: 10 })),
    field('Since', timeInput('since', filters.since, 'all stored')),
    field('Until', timeInput('until', filters.until, 'now (live)')),
  );

  const liveState = h('span', { class: 'live-state', id: 'live-state', 'data-state': live ? 'connecting' : 'off' }, live ? LIVE_TEXT.connecting : 'live view off: the range has an end');
  const counter = h('span', { class: 'muted', id: 'row-count' });
  const pausedBar = h('button', { type: 'button', class: 'paused', id: 'paused', hidden: true });
  const droppedNote = h('span', { class: 'warn', id: 'live-dropped', hidden: true });
  const lossSlot = h('div', { class: 'loss-slot' });
  const errorSlot = h('div');
  const tbody = h('tbody', { id: 'flow-rows' });
  const table = h('table', { class: 'flows' }, h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', {}, c)))), tbody);
  const wrap = h('div', { class: 'table-wrap', id: 'flow-table' }, table);
  const olderButton = h('button', { type: 'button', class: 'secondary', id: 'older', hidden: true }, 'Load older');
  const empty = h('p', { class: 'muted', id: 'no-flows', hidden: true }, 'No stored record matches these filters in this range.');

  const seen = new Set<string>();
  // Details are rendered on demand from the records kept here, not from the table's text.
  const records = new Map<string, FlowRecord>();
  /** Live records not shown yet, oldest first. */
  let pending: FlowRecord[] = [];
  let pageLoaded = false;
  let nextCursor: string | null = null;
  let cutOff = false;
  let dropped = 0;
  let flushTimer: ReturnType<typeof setTimeout> | undefined;

  const rowCount = (): number => tbody.querySelectorAll('tr.flow').length;
  const paused = (): boolean => wrap.scrollTop > PAUSE_SCROLL_PX;

  const updateStatus = (): void => {
    const n = rowCount();
    counter.textContent = `${fmtCount(n)} records shown${cutOff ? ' (oldest dropped from view)' : nextCursor !== null ? ', older ones stored' : ''}`;
    olderButton.hidden = nextCursor === null || cutOff;
    empty.hidden = !pageLoaded || n > 0 || pending.length > 0;
    pausedBar.hidden = pending.length === 0 || !paused();
    pausedBar.textContent = `Paused while scrolled: ${fmtCount(pending.length)} new — back to top`;
  };

  /** The row for a record not shown yet, or undefined for a duplicate. */
  const freshRow = (r: FlowRecord): HTMLTableRowElement | undefined => {
    const id = r.event?.id;
    if (id !== undefined) {
      if (seen.has(id)) return undefined;
      seen.add(id);
      records.set(id, r);
    }
    return row(r, filters);
  };

  const appendRecords = (page: FlowRecord[]): void => {
    for (const r of page) {
      const tr = freshRow(r);
      if (tr !== undefined) tbody.append(tr);
    }
  };

  const flush = (): void => {
    flushTimer = undefined;
    if (!pageLoaded || paused() || pending.length === 0) return updateStatus();
    const batch = pending;
    pending = [];
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) {
      const tr = freshRow(batch[i]!);
      if (tr !== undefined) frag.append(tr);
    }
    tbody.prepend(frag);
    while (rowCount() > MAX_ROWS) {
      const last = tbody.lastElementChild;
      if (last === null) break;
      records.delete(last.getAttribute('data-id') ?? '');
      last.remove();
      cutOff = true;
    }
    updateStatus();
  };
  const noteSkipped = (n: number): void => {
    dropped += n;
    droppedNote.hidden = false;
    droppedNote.textContent = `${fmtCount(dropped)} live records skipped (the view fell behind): reload to see them all`;
  };
  const scheduleFlush = (): void => {
    flushTimer ??= setTimeout(flush, 100);
  };

  const showPage = (page: FlowList): void => {
    lossSlot.replaceChildren(lossPanel(page.loss, page.range));
    errorSlot.replaceChildren();
  };

  const loadFirstPage = async (): Promise<void> => {
    try {
      const page = await getJson<FlowList>('api/flows', { ...filters, limit: PAGE }, ac.signal);
      showPage(page);
      if (!pageLoaded) {
        appendRecords(page.items);
        nextCursor = page.next_cursor;
        pageLoaded = true;
      } else {
        // Reconnected: what was stored while the stream was down goes on top, like any live record.
        const newest = tbody.querySelector('tr.flow td.time')?.textContent ?? '';
        pending.push(...page.items.filter((r) => !seen.has(r.event?.id ?? '') && fmtTime(r['@timestamp']) >= newest).reverse());
      }
      flush();
    } catch (err) {
      if (!isAbort(err)) errorSlot.replaceChildren(errorBox(err));
    }
  };

  olderButton.addEventListener('click', async () => {
    if (nextCursor === null) return;
    olderButton.disabled = true;
    try {
      const page = await getJson<FlowList>('api/flows', { ...filters, limit: PAGE, cursor: nextCursor }, ac.signal);
      showPage(page);
      appendRecords(page.items);
      nextCursor = page.next_cursor;
    } catch (err) {
      if (!isAbort(err)) errorSlot.replaceChildren(errorBox(err));
    } finally {
      olderButton.disabled = false;
      updateStatus();
    }
  });

  tbody.addEventListener('click', (ev) => {
    const target = ev.target as Element;
    if (target.closest('a') !== null) return;
    const tr = target.closest('tr.flow');
    if (tr === null) return;
    const next = tr.nextElementSibling;
    if (next?.classList.contains('detail')) return next.remove();
    const id = tr.getAttribute('data-id');
    const record = records.get(id ?? '');
    if (record !== undefined) tr.after(detailRow(record));
  });
  wrap.addEventListener('scroll', () => (paused() ? updateStatus() : flush()));
  pausedBar.addEventListener('click', () => {
    wrap.scrollTop = 0;
    flush();
  });

  if (live) {
    const { since: _s, until: _u, ...liveFilters } = filters;
    void follow(
      'api/flows/live',
      liveFilters,
      {
        onState: (state, detail) => {
          liveState.dataset.state = state;
          liveState.textContent = detail !== undefined ? `${LIVE_TEXT[state]}: ${detail}` : LIVE_TEXT[state];
          // Refused for good (a filter the API rejects): the page request then says why, or shows what it can.
          if (state === 'failed' && !pageLoaded) void loadFirstPage();
        },
        onSubscribed: () => void loadFirstPage(),
        onEvent: (e) => {
          if (e.event === 'flow') {
            pending.push(JSON.parse(e.data) as FlowRecord);
            // Paused for long under a busy stream: keep the newest, and say how many were skipped.
            if (pending.length > 2 * MAX_ROWS) noteSkipped(pending.splice(0, pending.length - MAX_ROWS).length);
            scheduleFlush();
          } else if (e.event === 'dropped') {
            noteSkipped((JSON.parse(e.data) as { dropped: number }).dropped);
          }
        },
      },
      ac.signal,
    );
  } else {
    void loadFirstPage();
  }

  const el = h(
    'section',
    { class: 'view view-flows' },
    h('h1', {}, 'Flows'),
    form,
    h('div', { class: 'status' }, liveState, counter, droppedNote, pausedBar),
    lossSlot,
    errorSlot,
    wrap,
    empty,
    olderButton,
  );
  return {
    el,
    dispose: () => {
      ac.abort();
      if (flushTimer !== undefined) clearTimeout(flushTimer);
    },
  };
}
