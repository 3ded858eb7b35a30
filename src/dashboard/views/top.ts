import { getJson, type Params } from '../api.js';
import { h, svg, viewHref } from '../dom.js';
import { countryName } from '../countries.js';
import { fmtCount } from '../format.js';
import type { TopAnswer, TopEntry } from '../types.js';
import { directionSelect, errorBox, field, filterForm, isAbort, lossPanel, paramsOf, timeInput, type View, type ViewContext } from './common.js';

const DEFAULT_SINCE = '1h';

interface Dimension {
  by: 'dst' | 'port' | 'country' | 'asn' | 'container';
  title: string;
  label(e: TopEntry): string;
  /** Where a click on a bar leads: the flows (or the container) behind it. */
  target(e: TopEntry, range: Params): Params;
}

const DIMENSIONS: Dimension[] = [
  { by: 'dst', title: 'Destinations', label: (e) => e.value, target: (e, r) => ({ view: 'flows', ...r, ip: e.value }) },
  {
    by: 'port',
    title: 'Destination ports',
    label: (e) => e.value,
    target: (e, r) => {
      const [transport, port] = e.value.split('/');
      return { view: 'flows', ...r, transport, port };
    },
  },
  { by: 'country', title: 'Remote countries', label: (e) => `${e.value} ${countryName(e.value)}`, target: (e, r) => ({ view: 'flows', ...r, country: e.value }) },
  { by: 'asn', title: 'Remote networks (ASN)', label: (e) => `AS${e.value}`, target: (e, r) => ({ view: 'flows', ...r, asn: e.value }) },
  {
    by: 'container',
    title: 'Containers',
    label: (e) => e.name ?? e.value.slice(0, 12),
    target: (e, r) => ({ view: 'container', key: e.name ?? e.value.slice(0, 12), since: r.since, until: r.until }),
  },
];

/** A horizontal bar chart in SVG; each bar links to the records it counts. */
export function barChart(entries: TopEntry[], label: (e: TopEntry) => string, href: (e: TopEntry) => string): SVGSVGElement {
  const W = 560;
  const LABEL = 190;
  const ROW = 24;
  let max = 1;
  for (const e of entries) max = Math.max(max, e.count);
  return svg(
    'svg',
    { class: 'bars', viewBox: `0 0 ${W} ${Math.max(1, entries.length) * ROW}`, role: 'img' },
    entries.map((e, i) => {
      const text = label(e);
      const width = Math.max(2, ((W - LABEL - 70) * e.count) / max);
      return svg(
        'a',
        { href: href(e), 'data-nav': '1', class: 'bar-link' },
        svg('title', {}, `${text}: ${fmtCount(e.count)} records`),
        svg('text', { x: LABEL - 8, y: i * ROW + 16, 'text-anchor': 'end', class: 'label' }, text.length > 28 ? `${text.slice(0, 27)}…` : text),
        svg('rect', { x: LABEL, y: i * ROW + 4, width, height: ROW - 8, rx: 2, class: 'bar' }),
        svg('text', { x: LABEL + width + 6, y: i * ROW + 16, class: 'count' }, fmtCount(e.count)),
      );
    }),
  );
}

/** Top talkers: the busiest destinations, ports, countries, networks and containers of a range, as bar charts. */
export function topView(query: URLSearchParams, ctx: ViewContext): View {
  const ac = new AbortController();
  const p = paramsOf(query, ['direction', 'since', 'until']);
  const range: Params = { since: p.since ?? DEFAULT_SINCE, until: p.until, direction: p.direction };
  const lossSlot = h('div');
  const grid = h('div', { class: 'charts' });
  const el = h(
    'section',
    { class: 'view view-top' },
    h('h1', {}, 'Top talkers'),
    filterForm(ctx, 'top', {}, field('Direction', directionSelect(p.direction)), field('Since', timeInput('since', range.since, DEFAULT_SINCE)), field('Until', timeInput('until', p.until, 'now'))),
    lossSlot,
    grid,
  );

  for (const d of DIMENSIONS) {
    const body = h('div', { class: 'loading' }, 'Loading…');
    grid.append(h('div', { class: 'chart', id: `top-${d.by}` }, h('h2', {}, d.title), body));
    getJson<TopAnswer>('api/stats/top', { by: d.by, limit: 10, ...range }, ac.signal).then(
      (top) => {
        if (d.by === 'dst') lossSlot.replaceChildren(lossPanel(top.loss, top.range, top.covered));
        body.replaceChildren(
          top.top.length === 0 ? h('p', { class: 'muted' }, 'Nothing counted in this range.') : barChart(top.top, d.label, (e) => viewHref(d.target(e, range))),
          h('p', { class: 'muted' }, top.distinct !== undefined ? `${fmtCount(top.distinct)} distinct` : ''),
        );
      },
      (err: unknown) => isAbort(err) || body.replaceChildren(errorBox(err)),
    );
  }
  return { el, dispose: () => ac.abort() };
}
