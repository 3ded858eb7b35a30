import { h } from './dom.js';

const KEY = 'dockflow.token';

/** The API token for this tab only (sessionStorage): closing the tab forgets it. */
export function storedToken(): string | undefined {
  return sessionStorage.getItem(KEY) ?? undefined;
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
}

let asking: Promise<void> | undefined;

/** Shows the token dialog once, however many requests were refused at the same time; resolves when one is given. */
export function askToken(reason: string): Promise<void> {
  asking ??= new Promise<void>((resolve) => {
    const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, 'aria-label': 'API token', id: 'token-input' });
    const dialog = h(
      'dialog',
      { class: 'token-dialog', id: 'token-dialog' },
      h(
        'form',
        {
          method: 'dialog',
          onsubmit: (ev: Event) => {
            ev.preventDefault();
            const value = input.value.trim();
            if (value === '') return;
            sessionStorage.setItem(KEY, value);
            dialog.close();
            dialog.remove();
            asking = undefined;
            resolve();
          },
        },
        h('h2', {}, 'API token'),
        h('p', {}, reason),
        h('p', { class: 'muted' }, 'dockflow listens beyond loopback, so its API wants the bearer token it was configured with. It is kept for this tab only.'),
        input,
        h('button', { type: 'submit' }, 'Use token'),
      ),
    );
    // Escape would close the dialog and leave every request waiting: keep it open until a token is given.
    dialog.addEventListener('cancel', (ev) => ev.preventDefault());
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
  return asking;
}
