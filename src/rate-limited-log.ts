/**
 * A failure that repeats (a full disk refuses every write) is reported once per reason per interval, with how many
 * times it happened since the last report: the first occurrence at once, the rest summed. Counters, not logs, carry
 * the exact loss; this keeps the log readable and cheap while they climb.
 */
export class RateLimitedLog<Detail> {
  private readonly last = new Map<string, { atMs: number; suppressed: number; timer: NodeJS.Timeout | undefined; detail: Detail }>();

  constructor(
    private readonly intervalMs: number,
    /** `count`: occurrences this report stands for (1 for the first, the sum of the interval after). */
    private readonly emit: (reason: string, count: number, detail: Detail) => void,
    private readonly now: () => number = Date.now,
  ) {}

  report(reason: string, detail: Detail, count = 1): void {
    const at = this.now();
    const state = this.last.get(reason);
    if (state === undefined || (state.timer === undefined && at - state.atMs >= this.intervalMs)) {
      this.last.set(reason, { atMs: at, suppressed: 0, timer: undefined, detail });
      this.emit(reason, count, detail);
      return;
    }
    state.suppressed += count;
    state.detail = detail;
    // The summary goes out at the end of the interval even if nothing follows, so the count is never left unsaid.
    state.timer ??= setTimeout(() => this.summarise(reason), Math.max(0, state.atMs + this.intervalMs - at)).unref();
  }

  /** Emits what is pending at once (at close). */
  flush(): void {
    for (const reason of this.last.keys()) this.summarise(reason);
  }

  private summarise(reason: string): void {
    const state = this.last.get(reason);
    if (state === undefined) return;
    if (state.timer !== undefined) clearTimeout(state.timer);
    state.timer = undefined;
    if (state.suppressed === 0) return;
    const count = state.suppressed;
    state.suppressed = 0;
    state.atMs = this.now();
    this.emit(reason, count, state.detail);
  }
}
