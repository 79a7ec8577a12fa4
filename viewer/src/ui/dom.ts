// Small helpers that build DOM elements without a UI framework.

type Attributes = Record<string, string | number | boolean | undefined>;
type Child = Node | string | null | undefined | false;

/** Creates an element with attributes and children. A boolean attribute is set when true and
 * left out when false; an `on*` handler goes through `listeners`. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  children: Child[] = [],
  listeners: Partial<Record<keyof HTMLElementEventMap, EventListener>> = {},
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.filter((child): child is Node | string => Boolean(child)));
  for (const [type, listener] of Object.entries(listeners)) {
    if (listener) element.addEventListener(type, listener);
  }
  return element;
}

/** Replaces the children of `parent` with `children`. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.replaceChildren(...children.filter((child): child is Node | string => Boolean(child)));
}

/** Builds a full-page message: a heading, a paragraph and optional action buttons. */
export function messagePanel(
  testId: string,
  title: string,
  message: string,
  actions: HTMLElement[] = [],
  role: 'alert' | 'status' = 'alert',
): HTMLElement {
  return el('section', { class: 'panel message-panel', 'data-testid': testId, role }, [
    el('h1', {}, [title]),
    el('p', {}, [message]),
    actions.length ? el('div', { class: 'actions' }, actions) : null,
  ]);
}
