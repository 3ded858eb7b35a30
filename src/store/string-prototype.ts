/**
 * ioredis declares `class VerbatimString extends String` (RESP3 verbatim strings) when it is imported. Making
 * `String.prototype` the prototype of another prototype turns it into a dictionary-mode object in V8, and it stays so
 * until something is stored on an object that inherits from it, which with RESP2 never happens. While it is slow, every
 * `charCodeAt`, `slice` or `indexOf` on any string is a generic property lookup instead of an inlined one (the parsers
 * ran at half their speed), and code optimized in that state keeps the slow lookups afterwards. In the service,
 * fastify's `listen` happened to make it fast, but only after the syslog listeners had opened: traffic that arrived
 * in between left the service on slow code for good (a sixth more CPU per message, measured: README, Design notes).
 *
 * Storing a property on a throwaway object whose prototype is `String.prototype` has V8 make the chain fast again.
 * Called once ioredis has been imported: by `connectRedis`, before any record is parsed.
 */
export function keepStringPrototypeFast(): void {
  const probe = Object.create(String.prototype) as { probe?: boolean };
  probe.probe = true;
}
