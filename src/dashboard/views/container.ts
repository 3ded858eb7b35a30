import { ApiError, getJson } from '../api.js';
import { h, svg, viewHref, viewLink } from '../dom.js';
import { connectionLabel, fmtCount, fmtTime } from '../format.js';
import type { Connection, ConnectionsAnswer, ContainersAnswer, Destination, InventoryAnswer, TopAnswer } from '../types.js';
import { attributionOff, enrichmentText } from '../status.js';
import { errorBox, field, filterForm, isAbort, lossPanel, paramsOf, textInput, timeInput, type View, type ViewContext } from './common.js';

const DEFAULT_SINCE = '24h';
const DEFAULT_NEW_SINCE = '24h';
const TIMELINE_ROWS = 40;

const destKey = (d: Destination): string => `${d.direction}|${d.ip}|${d.transport}|${d.port ?? ''}`;

function inventoryTable(destinations: Destination[], fresh: ReadonlySet<string>): HTMLTableElement {
  return h(
    'table',
    { class: 'inventory' },
    h('thead', {}, h('tr', {}, ['Direction', 'Remote address', 'Service', 'First seen (UTC)', 'Last seen (UTC)', ''].map((c) => h('th', {}, c)))),
    h(
      'tbody',
      {},
      destinations.map((d) =>
        h(
          'tr',
          { class: fresh.has(destKey(d)) ? 'new' : undefined },
          h('td', {}, h('span', { class: `badge dir-${d.direction}` }, d.direction)),
          h('td', { class: 'mono' }, viewLink({ view: 'flows', ip: d.ip }, d.ip)),
          h('td', { class: 'mono' }, d.port === undefined ? d.transport : `${d.transport}/${d.port}`),
          h('td', { class: 'time' }, fmtTime(d.first_seen)),
          h('td', { class: 'time' }, fmtTime(d.last_seen)),
          h('td', {}, fresh.has(destKey(d)) ? h('span', { class: 'badge new' }, 'new') : ''),
        ),
      ),
    ),
  );
}

/** Rows per remote endpoint, a bar per connection from first to last packet, on one time axis. */
export function timeline(connections: Connection[], truncated: boolean): Element {
  if (connections.length === 0) return h('p', { class: 'muted' }, 'No connection of this container in the range.');
  const rows = new Map<string, Connection[]>();
  for (const c of [...connections].sort((a, b) => Date.parse(a.first_seen) - Date.parse(b.first_seen))) {
    const key = `${connectionLabel(c.direction, c.source, c.destination)} ${c.transport}`;
    rows.set(key, [...(rows.get(key) ?? []), c]);
  }
  const shown = [...rows].slice(0, TIMELINE_ROWS);
  // Loops, not Math.min(...array): a spread of a long array into one call overflows the stack.
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const c of connections) {
    t0 = Math.min(t0, Date.parse(c.first_seen));
    t1 = Math.max(t1, Date.parse(c.last_seen));
  }
  t1 = Math.max(t1, t0 + 1000);
  const W = 1200;
  const LABEL = 260;
  const ROW = 20;
  const AXIS = 28;
  const H = shown.length * ROW + AXIS;
  const x = (t: number): number => LABEL + ((t - t0) / (t1 - t0)) * (W - LABEL - 16);
  const ticks = Array.from({ length: 6 }, (_, i) => t0 + ((t1 - t0) * i) / 5);
  const chart = svg(
    'svg',
    { class: 'timeline', id: 'timeline', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Connections over time' },
    ticks.map((t, i) =>
      svg(
        'g',
        { class: 'tick' },
        svg('line', { x1: x(t), x2: x(t), y1: 0, y2: H - AXIS + 4 }),
        svg('text', { x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' }, i === 0 ? fmtTime(new Date(t).toISOString()).slice(0, 19) : new Date(t).toISOString().slice(11, 19)),
      ),
    ),
    shown.map(([label, conns], i) =>
      svg(
        'g',
        { class: 'row', transform: `translate(0 ${i * ROW})` },
        svg('text', { x: LABEL - 8, y: ROW / 2 + 4, 'text-anchor': 'end', class: 'label' }, label),
        conns.map((c) => {
          const x0 = x(Date.parse(c.first_seen));
          return svg(
            'rect',
            { x: x0, y: 3, width: Math.max(3, x(Date.parse(c.last_seen)) - x0), height: ROW - 6, rx: 2, class: `bar dir-${c.direction}` },
            svg(
              'title',
              {},
              `${label} ${c.direction}\n${fmtTime(c.first_seen)} → ${fmtTime(c.last_seen)}\n${fmtCount(c.packets)} packets, ${fmtCount(c.bytes)} bytes${c.tcp_flags?.length ? `, ${c.tcp_flags.join(' ')}` : ''}${c.log_prefix ? `\nrule ${c.log_prefix}` : ''}`,
            ),
          );
        }),
      ),
    ),
  );
  const notes = [
    rows.size > shown.length ? `${rows.size - shown.length} more remote endpoints not drawn.` : '',
    truncated ? 'The range held more packets than one answer folds: narrow it to see every connection.' : '',
  ].filter(Boolean);
  return h('div', {}, chart, notes.length > 0 ? h('p', { class: 'muted' }, notes.join(' ')) : null);
}

/** Containers that sent or received records in the range, busiest first, each linking to its page. */
async function containerList(range: { since?: string | number; until?: string | number }, signal: AbortSignal): Promise<HTMLElement> {
  const top = await getJson<TopAnswer>('api/stats/top', { by: 'container', limit: 200, since: range.since ?? DEFAULT_SINCE, until: range.until }, signal);
  const off = top.top.length === 0 ? await attributionOff() : undefined;
  const table =
    top.top.length === 0
      ? h('p', { class: off ? 'notice' : 'muted', id: off ? 'attribution-off' : undefined }, off ? `${enrichmentText(off)}. Records are stored without container names.` : 'No attributed record in this range.')
      : h(
          'table',
          { class: 'containers' },
          h('thead', {}, h('tr', {}, ['Container', 'Compose service', 'ID', 'Records'].map((c) => h('th', {}, c)))),
          h(
            'tbody',
            {},
            top.top.map((e) =>
              h(
                'tr',
                {},
                h('td', {}, viewLink({ view: 'container', key: e.name ?? e.value.slice(0, 12), since: range.since, until: range.until }, e.name ?? e.value.slice(0, 12))),
                h('td', {}, e.service ?? ''),
                h('td', { class: 'mono muted' }, e.value.slice(0, 12)),
                h('td', { class: 'num' }, fmtCount(e.count)),
              ),
            ),
          ),
        );
  return h('div', {}, lossPanel(top.loss, top.range, top.covered), table);
}

/** What Docker says of the container (image, labels, addresses), when attribution is on; nothing otherwise. */
async function dockerFacts(key: string, signal: AbortSignal): Promise<HTMLElement | null> {
  let answer: ContainersAnswer;
  try {
    answer = await getJson<ContainersAnswer>('api/containers', {}, signal);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
  const found = answer.hosts.flatMap((host) => host.containers.filter((c) => c.name === key || c.id.startsWith(key)).map((c) => ({ host: host.host, c })));
  if (found.length === 0) return null;
  return h(
    'div',
    { class: 'facts' },
    found.map(({ host, c }) =>
      h(
        'dl',
        {},
        h('dt', {}, 'Image'),
        h('dd', { class: 'mono' }, c.image),
        h('dt', {}, 'Docker host'),
        h('dd', { class: 'mono' }, host),
        h('dt', {}, 'Addresses'),
        h('dd', {}, c.addresses.map((a) => h('div', { class: 'mono' }, `${a.ip}${a.network ? ` on ${a.network}` : ''}, ${fmtTime(a.from)} → ${a.to ? fmtTime(a.to) : 'now'}`))),
        h('dt', {}, 'Labels'),
        h('dd', {}, Object.entries(c.labels).map(([k, v]) => h('div', { class: 'mono label-pair' }, `${k}=${v}`))),
      ),
    ),
  );
}

/**
 * One container: its destination inventory (every remote address and port with first and last seen, those first
 * seen since `new_since` marked new) and a timeline of its connections in the range. Without `key`, the list.
 */
export function containerView(query: URLSearchParams, ctx: ViewContext): View {
  const ac = new AbortController();
  const p = paramsOf(query, ['key', 'since', 'until', 'new_since']);
  const key = typeof p.key === 'string' ? p.key : undefined;
  const body = h('div', { class: 'loading' }, 'Loading…');
  const el = h('section', { class: 'view view-container' });

  if (key === undefined) {
    el.append(
      h('h1', {}, 'Containers'),
      filterForm(ctx, 'container', {}, field('Since', timeInput('since', p.since ?? DEFAULT_SINCE, DEFAULT_SINCE)), field('Until', timeInput('until', p.until, 'now'))),
      body,
    );
    containerList(p, ac.signal).then(
      (list) => body.replaceChildren(list),
      (err: unknown) => isAbort(err) || body.replaceChildren(errorBox(err)),
    );
    return { el, dispose: () => ac.abort() };
  }

  const since = p.since ?? DEFAULT_SINCE;
  const newSince = p.new_since ?? DEFAULT_NEW_SINCE;
  el.append(
    h('p', { class: 'crumbs' }, h('a', { href: viewHref({ view: 'container' }), 'data-nav': '1' }, 'Containers'), ' / '),
    h('h1', { id: 'container-name' }, key),
    filterForm(
      ctx,
      'container',
      { key },
      field('New since', timeInput('new_since', newSince, DEFAULT_NEW_SINCE)),
      field('Timeline since', timeInput('since', since, DEFAULT_SINCE)),
      field('Until', timeInput('until', p.until, 'now')),
    ),
    body,
  );

  const load = async (): Promise<Element[]> => {
    const [inv, fresh, conns, facts] = await Promise.all([
      getJson<InventoryAnswer>(`api/containers/${encodeURIComponent(key)}/inventory`, {}, ac.signal),
      getJson<InventoryAnswer>(`api/containers/${encodeURIComponent(key)}/inventory`, { new_since: newSince }, ac.signal),
      getJson<ConnectionsAnswer>('api/connections', { container: key, since, until: p.until, limit: 1000 }, ac.signal),
      dockerFacts(key, ac.signal),
    ]);
    const freshKeys = new Set(fresh.containers.flatMap((c) => c.destinations.map(destKey)));
    const out: Element[] = [lossPanel(conns.loss, conns.range)];
    if (facts) out.push(facts);
    for (const c of inv.containers) {
      const newCount = c.destinations.filter((d) => freshKeys.has(destKey(d))).length;
      out.push(
        h(
          'div',
          { class: 'container-card' },
          h(
            'p',
            { class: 'meta' },
            h('span', { class: 'mono', title: c.id }, c.id.slice(0, 12)),
            c.name !== undefined && c.name !== key ? h('span', {}, ` ${c.name}`) : null,
            c.service !== undefined ? h('span', { class: 'service' }, ' compose service ', h('strong', { class: 'service-name' }, c.service)) : null,
            h('span', {}, ` · ${fmtCount(c.total)} destinations · `),
            h('span', { class: newCount > 0 ? 'warn' : 'muted', id: 'new-count' }, `${fmtCount(newCount)} new since ${fresh.new_since ? fmtTime(fresh.new_since) : newSince}`),
          ),
          h('h2', {}, 'Destination inventory'),
          inventoryTable(c.destinations, freshKeys),
          c.total > c.destinations.length ? h('p', { class: 'muted' }, `Showing ${fmtCount(c.destinations.length)} of ${fmtCount(c.total)}.`) : null,
        ),
      );
    }
    out.push(h('h2', {}, 'Connections over time'), timeline(conns.connections, conns.truncated));
    return out;
  };
  load().then(
    (parts) => body.replaceChildren(...parts),
    (err: unknown) => isAbort(err) || body.replaceChildren(errorBox(err)),
  );
  return { el, dispose: () => ac.abort() };
}
