import type { Direction } from '../record.js';

export type BridgeMatcher = (ifname: string) => boolean;

/** Docker's default bridge and compose networks' `br-<12hex>`. */
export const DEFAULT_BRIDGES: readonly string[] = ['docker0', 'br-*'];

/**
 * Builds a matcher from interface names where a trailing `*` matches any suffix (`br-*`), the way iptables' `-i br+`
 * does.
 */
export function bridgeMatcher(patterns: readonly string[]): BridgeMatcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const p of patterns) {
    if (p.endsWith('*') || p.endsWith('+')) prefixes.push(p.slice(0, -1));
    else exact.add(p);
  }
  return (ifname) => {
    if (exact.has(ifname)) return true;
    for (const prefix of prefixes) if (ifname.startsWith(prefix)) return true;
    return false;
  };
}

/**
 * FORWARD lines have both IN= and OUT=; INPUT lines have an empty OUT=, OUTPUT lines an empty IN=. Empty or missing
 * names are passed as ''.
 */
export function classifyDirection(inIf: string, outIf: string, isBridge: BridgeMatcher): Direction {
  const fromBridge = inIf !== '' && isBridge(inIf);
  const toBridge = outIf !== '' && isBridge(outIf);
  if (fromBridge && toBridge) return 'internal';
  if (fromBridge) return outIf === '' ? 'container-to-host' : 'egress';
  if (toBridge) return inIf === '' ? 'host-to-container' : 'ingress';
  return 'other';
}
