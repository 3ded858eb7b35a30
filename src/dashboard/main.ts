/**
 * The dashboard's entry: a header with the views, and the view the URL names. Every view keeps its whole state in
 * the query string (`?view=flows&direction=egress&since=1h`), so a view can be shared by its address; links between
 * views change the history without reloading the page.
 */
import type { Params } from './api.js';
import { forgetToken, storedToken } from './auth.js';
import { h, viewHref } from './dom.js';
import { alertsView } from './views/alerts.js';
import { statusBanner } from './status.js';
import type { View, ViewContext } from './views/common.js';
import { containerView } from './views/container.js';
import { flowsView } from './views/flows.js';
import { mapView } from './views/map.js';
import { topView } from './views/top.js';

const VIEWS: Record<string, { title: string; render(q: URLSearchParams, ctx: ViewContext): View }> = {
  flows: { title: 'Flows', render: flowsView },
  container: { title: 'Containers', render: containerView },
  top: { title: 'Top talkers', render: topView },
  map: { title: 'Map', render: mapView },
  alerts: { title: 'Alerts', render: alertsView },
};

let current: View | undefined;
const main = h('main', { id: 'main' });
const nav = h('nav', {});
const tokenButton = h('button', { type: 'button', class: 'link', id: 'forget-token' }, 'Forget token');

function render(): void {
  const q = new URLSearchParams(location.search);
  const name = q.get('view') ?? 'flows';
  const view = VIEWS[name] ?? VIEWS.flows!;
  current?.dispose();
  current = view.render(q, ctx);
  main.replaceChildren(current.el);
  document.title = `${view.title} · dockflow`;
  tokenButton.hidden = storedToken() === undefined;
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.view === (VIEWS[name] ? name : 'flows'));
}

const ctx: ViewContext = {
  navigate(params: Params) {
    history.pushState(null, '', viewHref(params));
    render();
  },
};

function header(): HTMLElement {
  for (const [name, v] of Object.entries(VIEWS)) nav.append(h('a', { href: viewHref({ view: name }), 'data-nav': '1', 'data-view': name }, v.title));
  tokenButton.addEventListener('click', () => {
    forgetToken();
    location.reload();
  });
  return h('header', {}, h('a', { class: 'brand', href: viewHref({}), 'data-nav': '1' }, 'dockflow'), nav, h('span', { class: 'spacer' }), h('a', { href: 'docs', class: 'muted' }, 'API'), tokenButton);
}

// In-page links (data-nav) change the view without a reload; anything else (the API docs) navigates as usual.
document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = (ev.target as Element).closest('a[data-nav]');
  if (a === null) return;
  const href = a.getAttribute('href') ?? a.getAttribute('xlink:href');
  if (href === null || !href.startsWith('?')) return;
  ev.preventDefault();
  history.pushState(null, '', href);
  render();
});
window.addEventListener('popstate', render);

document.body.append(header(), statusBanner(), main);
render();
