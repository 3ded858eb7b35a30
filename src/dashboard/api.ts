import { askToken, forgetToken, storedToken } from './auth.js';
import { SseParser, type SseEvent } from './sse.js';

export type Params = Record<string, string | number | undefined>;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Relative to the page, so the dashboard also works behind a reverse proxy under a path. */
export function apiUrl(path: string, params: Params = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const qs = q.toString();
  return qs === '' ? path : `${path}?${qs}`;
}

/** fetch with the bearer token; a 401 asks for a (new) token and tries again. */
export async function apiFetch(path: string, params: Params, init: { signal?: AbortSignal; accept?: string } = {}): Promise<Response> {
  for (;;) {
    const token = storedToken();
    const headers: Record<string, string> = { accept: init.accept ?? 'application/json' };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const res = await fetch(apiUrl(path, params), { headers, ...(init.signal ? { signal: init.signal } : {}) });
    if (res.status !== 401) return res;
    await res.body?.cancel();
    if (token !== undefined) forgetToken();
    await askToken(token === undefined ? 'The API asks for a token.' : 'The API refused that token.');
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = (await res.json()) as { message?: unknown; error?: unknown };
    if (typeof body.message === 'string') message = body.message;
    else if (typeof body.error === 'string') message = body.error;
  } catch {
    // Not JSON: the status line says enough.
  }
  return new ApiError(res.status, message);
}

export async function getJson<T>(path: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
  const res = await apiFetch(path, params, signal ? { signal } : {});
  if (!res.ok) throw await errorOf(res);
  return (await res.json()) as T;
}

export type LiveState = 'connecting' | 'live' | 'retrying' | 'failed';

export interface FollowHandlers {
  onEvent(e: SseEvent): void;
  /** The server fixed its read position: everything stored from now on will arrive. Called on every (re)connect. */
  onSubscribed(): void;
  onState(state: LiveState, detail?: string): void;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/**
 * Follows a Server-Sent Events route with fetch (EventSource cannot send the token), reconnecting with backoff
 * until `signal` aborts. A 4xx other than 401 is the request's fault and is not retried.
 */
export async function follow(path: string, params: Params, handlers: FollowHandlers, signal: AbortSignal): Promise<void> {
  let delayMs = 1000;
  while (!signal.aborted) {
    handlers.onState('connecting');
    let failure: string | undefined;
    try {
      const res = await apiFetch(path, params, { signal, accept: 'text/event-stream' });
      if (!res.ok) {
        const err = await errorOf(res);
        if (res.status >= 400 && res.status < 500) {
          handlers.onState('failed', err.message);
          return;
        }
        throw err;
      }
      if (res.body === null) throw new Error('no response body');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const chunk = parser.push(value);
        if (chunk.comments.includes('subscribed')) {
          delayMs = 1000;
          handlers.onState('live');
          handlers.onSubscribed();
        }
        for (const e of chunk.events) handlers.onEvent(e);
      }
    } catch (err) {
      if (signal.aborted) return;
      failure = err instanceof Error ? err.message : String(err);
    }
    if (signal.aborted) return;
    handlers.onState('retrying', failure);
    await sleep(delayMs, signal);
    delayMs = Math.min(delayMs * 2, 15_000);
  }
}
