import { BlockList, isIP } from 'node:net';
import { DockflowError, ErrorCode } from '../errors.js';

const MAPPED_PREFIX = '::ffff:';

/** `::ffff:1.2.3.4` (how a dual-stack socket shows an IPv4 peer) as `1.2.3.4`; other addresses unchanged. */
export function unmapIPv4(address: string): string {
  if (address.length > MAPPED_PREFIX.length && address.startsWith(MAPPED_PREFIX)) {
    const v4 = address.slice(MAPPED_PREFIX.length);
    if (isIP(v4) === 4) return v4;
  }
  return address;
}

/**
 * Which senders may deliver syslog (it carries no authentication). Empty means everyone. `net.BlockList` matches an
 * IPv4-mapped IPv6 peer against IPv4 ranges and the reverse, so a dual-stack `::` listener needs no special case.
 */
export class Allowlist {
  private constructor(
    private readonly list: BlockList | undefined,
    readonly cidrs: readonly string[],
  ) {}

  /** `cidrs`: `10.0.0.0/8`, `fd00::/8`, or a bare address (a single host). Throws CONFIG_INVALID on a bad entry. */
  static parse(cidrs: readonly string[]): Allowlist {
    if (cidrs.length === 0) return new Allowlist(undefined, []);
    const list = new BlockList();
    for (const cidr of cidrs) {
      const slash = cidr.indexOf('/');
      const address = slash === -1 ? cidr : cidr.slice(0, slash);
      const family = isIP(address);
      const maxPrefix = family === 4 ? 32 : 128;
      const prefixText = slash === -1 ? String(maxPrefix) : cidr.slice(slash + 1);
      const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
      if (family === 0 || !(prefix <= maxPrefix)) {
        throw new DockflowError(ErrorCode.CONFIG_INVALID, `allowlist entry "${cidr}" is not an IPv4 or IPv6 CIDR`);
      }
      list.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
    }
    return new Allowlist(list, [...cidrs]);
  }

  allows(address: string): boolean {
    if (this.list === undefined) return true;
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}
