/**
 * Keeps V8's `String.prototype` in fast mode for the life of the process. Imported first by the entry point
 * (`src/cli.ts`, before `serve` loads anything else); the reason and its measurement are in docs/design.md.
 *
 * ioredis declares `class VerbatimString extends String` when it is imported, which turns `String.prototype` into a
 * dictionary-mode object; while it is, every `charCodeAt`, `slice` or `indexOf` on a string is a generic lookup,
 * and code optimized in that state keeps the slow lookups afterwards. So ioredis is imported here first, and then a
 * property is stored on a throwaway object whose prototype is `String.prototype`, which has V8 make it fast again,
 * before any listener opens or any line is parsed.
 */
import 'ioredis';

export function keepStringPrototypeFast(): void {
  const probe = Object.create(String.prototype) as { probe?: boolean };
  probe.probe = true;
}

keepStringPrototypeFast();
