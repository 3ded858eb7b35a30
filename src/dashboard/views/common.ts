import { DIRECTIONS } from '../../record.js';
import type { Params } from '../api.js';
import { h, type Child } from '../dom.js';
import { fmtCount, fmtTime } from '../format.js';
import type { LossReport, Range } from '../types.js';

/** A rendered view; `dispose` stops its streams and timers when another view replaces it. */
export interface View {
  el: HTMLElement;
  dispose(): void;
}

export interface ViewContext {
  /** Shows another view (or the same with other parameters), recording it in the URL and the history. */
  navigate(params: Params): void;
}

/** The query parameters as a plain object, without empty values. */
export function paramsOf(q: URLSearchParams, names: readonly string[]): Params {
  const out: Params = {};
  for (const n of names) {
    const v = q.get(n);
    if (v !== null && v !== '') out[n] = v;
  }
  return out;
}

export const TIME_HELP = 'ISO 8601 (2026-11-27T06:40:00Z) or relative: 15m, 1h, 24h, 7d';

/** Presets offered in every time field; typing anything else the API understands works too. */
export function timePresets(): HTMLDataListElement {
  return h('datalist', { id: 'time-presets' }, ['15m', '1h', '6h', '24h', '7d', '30d'].map((v) => h('option', { value: v })));
}

export function field(label: string, control: HTMLElement, hint?: string): HTMLLabelElement {
  return h('label', { class: 'field', ...(hint ? { title: hint } : {}) }, h('span', {}, label), control);
}

export function textInput(name: string, value: string | number | undefined, attrs: Record<string, string | number | boolean> = {}): HTMLInputElement {
  return h('input', { name, id: `f-${name}`, value: value === undefined ? '' : String(value), autocomplete: 'off', spellcheck: 'false', ...attrs });
}

export function timeInput(name: 'since' | 'until' | 'new_since', value: string | number | undefined, placeholder: string): HTMLInputElement {
  return textInput(name, value, { list: 'time-presets', placeholder, title: TIME_HELP });
}

export function directionSelect(value: string | number | undefined, anyLabel = 'any'): HTMLSelectElement {
  const select = h('select', { name: 'direction', id: 'f-direction' }, h('option', { value: '' }, anyLabel), DIRECTIONS.map((d) => h('option', { value: d }, d)));
  select.value = value === undefined ? '' : String(value);
  return select;
}

/** A filter form whose submit navigates to `view` with the form's non-empty values. */
export function filterForm(ctx: ViewContext, view: string, fixed: Params, ...fields: Child[]): HTMLFormElement {
  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const params: Params = { view, ...fixed };
        for (const [k, v] of new FormData(form)) if (typeof v === 'string' && v.trim() !== '') params[k] = v.trim();
        ctx.navigate(params);
      },
    },
    fields,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'apply' }, 'Apply'), h('button', { type: 'button', class: 'secondary', onclick: () => ctx.navigate({ view, ...fixed }) }, 'Clear')),
    timePresets(),
  );
  return form;
}

export function errorBox(err: unknown): HTMLElement {
  return h('div', { class: 'error', role: 'alert' }, err instanceof Error ? err.message : String(err));
}

export const isAbort = (err: unknown): boolean => err instanceof DOMException && err.name === 'AbortError';

const rangeText = (r: { since: string | null | undefined; until: string | null | undefined }): string =>
  `${r.since ? fmtTime(r.since) : 'the oldest stored record'} → ${r.until ? fmtTime(r.until) : 'now'} (UTC)`;

/**
 * What the service knows of loss for the range on screen, so an empty table can be told from missing data: records
 * dropped by reason, kernel UDP drops, spooled and not yet replayed, and whether the range starts before the
 * service was counting at all.
 */
export function lossPanel(loss: LossReport, range: Range, covered?: Range): HTMLElement {
  const dropped = Object.entries(loss.dropped).filter(([, n]) => n > 0);
  const droppedTotal = dropped.reduce((s, [, n]) => s + n, 0);
  const kernel = loss.udp_kernel_drops ?? 0;
  const lost = droppedTotal + kernel;
  const countingSince = loss.period?.since;
  const uncounted = countingSince !== undefined && (range.since === null || Date.parse(range.since) < Date.parse(countingSince));
  const state = lost > 0 || loss.pending > 0 ? 'warn' : uncounted ? 'unknown' : 'ok';
  const summary =
    state === 'ok'
      ? 'No known loss in this range.'
      : lost > 0
        ? `${fmtCount(lost)} ${lost === 1 ? 'line' : 'lines'} received but not stored since ${fmtTime(countingSince)}.`
        : loss.pending > 0
          ? `${fmtCount(loss.pending)} spooled records not replayed yet.`
          : 'No known loss since the counters started; earlier loss is unknown.';
  const items: Child[] = [
    h('li', {}, 'Range: ', rangeText(range)),
    covered && (covered.since !== range.since || covered.until !== range.until) ? h('li', {}, 'Counted in whole minutes: ', rangeText(covered)) : null,
    countingSince !== undefined ? h('li', {}, 'Loss counters cover: ', rangeText({ since: countingSince, until: loss.period?.until })) : h('li', {}, 'Loss counters: period unknown'),
    uncounted ? h('li', { class: 'note' }, `The range starts before ${fmtTime(countingSince)}: loss before then is not known.`) : null,
    h('li', {}, 'Dropped: ', dropped.length === 0 ? '0' : dropped.map(([reason, n]) => `${reason} ${fmtCount(n)}`).join(', ')),
    loss.udp_kernel_drops !== undefined ? h('li', {}, `UDP kernel drops: ${fmtCount(kernel)}`) : null,
    h('li', {}, `Spooled while Redis was away: ${fmtCount(loss.spooled)}, not yet replayed: ${fmtCount(loss.pending)}`),
  ];
  return h(
    'details',
    { class: `loss loss-${state}`, id: 'loss', 'data-state': state },
    h('summary', {}, h('strong', {}, 'Loss & coverage: '), summary),
    h('ul', {}, items),
  );
}
