import { geoGraticule10, geoNaturalEarth1, geoPath } from 'd3-geo';
import { getJson, type Params } from '../api.js';
import { h, svg, viewHref, viewLink } from '../dom.js';
import { COUNTRY_SHAPES, countryName, numericOf } from '../countries.js';
import { fmtCount } from '../format.js';
import type { TopAnswer } from '../types.js';
import { directionSelect, errorBox, field, filterForm, isAbort, lossPanel, paramsOf, timeInput, type View, type ViewContext } from './common.js';

const DEFAULT_SINCE = '24h';
const W = 960;
const H = 500;

/** Light to dark blue on a log scale: one busy country must not wash every other one out. */
function shade(count: number, max: number): string {
  const t = Math.log1p(count) / Math.log1p(max);
  const mix = (a: number, b: number): number => Math.round(a + (b - a) * t);
  return `rgb(${mix(198, 8)},${mix(219, 48)},${mix(239, 107)})`;
}

function worldMap(counts: Map<string, number>, href: (alpha2: string) => string): SVGSVGElement {
  const projection = geoNaturalEarth1().fitExtent(
    [
      [4, 4],
      [W - 4, H - 4],
    ],
    { type: 'Sphere' },
  );
  const path = geoPath(projection);
  const byNumeric = new Map<string, [string, number]>();
  for (const [alpha2, n] of counts) {
    const num = numericOf(alpha2);
    if (num !== undefined) byNumeric.set(num, [alpha2, n]);
  }
  let max = 1;
  for (const n of counts.values()) max = Math.max(max, n);
  return svg(
    'svg',
    { class: 'world', id: 'world-map', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Egress destinations by country' },
    svg('path', { class: 'sphere', d: path({ type: 'Sphere' }) ?? '' }),
    svg('path', { class: 'graticule', d: path(geoGraticule10()) ?? '' }),
    COUNTRY_SHAPES.map((f) => {
      const hit = f.id !== undefined ? byNumeric.get(f.id) : undefined;
      const shape = svg(
        'path',
        { class: hit ? 'country hit' : 'country', d: path(f) ?? '', ...(hit ? { fill: shade(hit[1], max), 'data-country': hit[0] } : {}) },
        svg('title', {}, hit ? `${f.properties.name} (${hit[0]}): ${fmtCount(hit[1])} records` : f.properties.name),
      );
      return hit ? svg('a', { href: href(hit[0]), 'data-nav': '1' }, shape) : shape;
    }),
  );
}

/** Egress destinations by country on a world map (Natural Earth shapes bundled at build time), and as a table. */
export function mapView(query: URLSearchParams, ctx: ViewContext): View {
  const ac = new AbortController();
  const p = paramsOf(query, ['direction', 'since', 'until']);
  const range: Params = { direction: p.direction ?? 'egress', since: p.since ?? DEFAULT_SINCE, until: p.until };
  const body = h('div', { class: 'loading' }, 'Loading…');
  const el = h(
    'section',
    { class: 'view view-map' },
    h('h1', {}, 'Destinations by country'),
    filterForm(ctx, 'map', {}, field('Direction', directionSelect(range.direction, 'all')), field('Since', timeInput('since', range.since, DEFAULT_SINCE)), field('Until', timeInput('until', p.until, 'now'))),
    body,
  );
  const flowsOf = (country: string): string => viewHref({ view: 'flows', ...range, country });

  getJson<TopAnswer>('api/stats/top', { by: 'country', limit: 300, ...range }, ac.signal).then(
    (top) => {
      const counts = new Map(top.top.map((e) => [e.value, e.count]));
      const total = top.top.reduce((s, e) => s + e.count, 0);
      const table = h(
        'table',
        { class: 'countries', id: 'country-table' },
        h('thead', {}, h('tr', {}, ['Country', 'Records', 'Share'].map((c) => h('th', {}, c)))),
        h(
          'tbody',
          {},
          top.top.map((e) =>
            h(
              'tr',
              {},
              h('td', {}, viewLink({ view: 'flows', ...range, country: e.value }, `${e.value} ${countryName(e.value)}`), numericOf(e.value) === undefined ? h('span', { class: 'muted' }, ' (not on the map)') : null),
              h('td', { class: 'num' }, fmtCount(e.count)),
              h('td', { class: 'num' }, `${((100 * e.count) / Math.max(1, total)).toFixed(1)}%`),
            ),
          ),
        ),
      );
      body.replaceChildren(
        lossPanel(top.loss, top.range, top.covered),
        h(
          'div',
          { class: 'map-layout' },
          h('div', { class: 'map' }, worldMap(counts, flowsOf)),
          h(
            'div',
            { class: 'map-side' },
            top.top.length === 0 ? h('p', { class: 'muted' }, 'No record with a known remote country in this range.') : table,
            h('p', { class: 'muted' }, 'Counted from GeoIP on the remote side; private, documentation and other special ranges have no country and are not counted here.'),
          ),
        ),
      );
    },
    (err: unknown) => isAbort(err) || body.replaceChildren(errorBox(err)),
  );
  return { el, dispose: () => ac.abort() };
}
