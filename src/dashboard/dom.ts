/**
 * The only way the dashboard builds DOM: elements with attributes set one by one and text as text nodes. Nothing
 * from a record is ever parsed as markup (no innerHTML anywhere), so a prefix or a label like `<img onerror=…>`
 * shows as the characters it is.
 */

export type Child = Node | string | number | null | undefined | false;
type Handler = (ev: Event) => void;
export type Attrs = Record<string, string | number | boolean | undefined | Handler>;

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el: Element, attrs: Attrs | undefined, children: (Child | Child[])[]): void {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === false) continue;
    if (typeof value === 'function') {
      // `onclick` → addEventListener('click'); an `on…` attribute with a string value is refused below.
      if (!name.startsWith('on')) throw new Error(`attribute ${name}: a function is only for on… handlers`);
      el.addEventListener(name.slice(2), value);
      continue;
    }
    if (name.startsWith('on')) throw new Error(`attribute ${name}: inline handlers are not allowed`);
    el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
}

export function append(parent: Node, children: (Child | Child[])[]): void {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  apply(el, attrs, children);
  return el;
}

export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs?: Attrs, ...children: (Child | Child[])[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs, children);
  return el;
}

export function clear(el: Element): void {
  el.replaceChildren();
}

/** A link to another view of the dashboard (a query string on this page). */
export function viewLink(params: Record<string, string | number | undefined>, ...children: (Child | Child[])[]): HTMLAnchorElement {
  return h('a', { href: viewHref(params), 'data-nav': '1' }, ...children);
}

export function viewHref(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  return `?${q.toString()}`;
}
