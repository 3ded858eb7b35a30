import { DockflowError, ErrorCode } from '../errors.js';
import { parseCidr, rangeContains, unmapIPv4, type IpRange } from '../net/ip.js';

/**
 * Which senders may deliver syslog (it carries no authentication). Empty means everyone. An IPv4-mapped IPv6 peer
 * (`::ffff:1.2.3.4`, how a dual-stack `::` listener shows IPv4 senders) matches IPv4 ranges and an IPv4 peer matches
 * `::ffff:0:0/96` ranges, so a dual-stack listener needs no special case.
 */
export class Allowlist {
  private constructor(
    private readonly ranges: readonly IpRange[] | undefined,
    readonly cidrs: readonly string[],
  ) {}

  /** `cidrs`: `10.0.0.0/8`, `fd00::/8`, or a bare address (a single host). Throws CONFIG_INVALID on a bad entry. */
  static parse(cidrs: readonly string[]): Allowlist {
    if (cidrs.length === 0) return new Allowlist(undefined, []);
    const ranges = cidrs.map((cidr) => {
      const r = parseCidr(cidr);
      if (r === undefined) throw new DockflowError(ErrorCode.CONFIG_INVALID, `allowlist entry "${cidr}" is not an IPv4 or IPv6 CIDR`);
      return r;
    });
    return new Allowlist(ranges, [...cidrs]);
  }

  allows(address: string): boolean {
    if (this.ranges === undefined) return true;
    const v4 = unmapIPv4(address);
    const other = v4 !== address ? v4 : `::ffff:${address}`;
    return this.ranges.some((r) => rangeContains(r, address) || rangeContains(r, other));
  }
}
