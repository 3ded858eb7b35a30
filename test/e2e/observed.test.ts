/**
 * The lines the end-to-end host test observed (test/fixtures/e2e/observed-*.txt: RFC 5424 frames from a real
 * rsyslogd, kernel 6.18, iptables-nft and nft rules from scripts/install-iptables-rule.sh, br_netfilter on), parsed
 * the way dockflow will. Runs anywhere: no root, no namespaces. Regenerate with DOCKFLOW_E2E_SAVE_FIXTURES=1 on
 * test/e2e/host.test.ts (the random prefix and the ports change; this table does not depend on them).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { createLineOptions, parseLine } from '../../src/parse/line.js';
import { isRecord, type Direction } from '../../src/record.js';
import { fixture } from '../helpers/paths.js';

interface Expect {
  direction: Direction;
  transport: string;
  source: string;
  destination: string;
  destinationPort?: number;
  physin?: string;
  physout?: string;
}

const egress6: Expect = { direction: 'egress', transport: 'tcp', source: 'fd00:17::2', destination: '2001:db8::2', destinationPort: 8443, physin: 'vethc1' };
const ping6: Expect = { direction: 'egress', transport: 'ipv6-icmp', source: 'fd00:17::2', destination: '2001:db8::2', physin: 'vethc1' };
const hostToC1v6: Expect = { direction: 'host-to-container', transport: 'tcp', source: 'fd00:17::1', destination: 'fd00:17::2', destinationPort: 9000 };
const internal4: Expect = { direction: 'internal', transport: 'tcp', source: '172.17.0.3', destination: '172.17.0.2', destinationPort: 9000, physin: 'vethc2', physout: 'vethc1' };
const internal6: Expect = { ...internal4, source: 'fd00:17::3', destination: 'fd00:17::2' };

const FILES: Record<string, Expect[]> = {
  'observed-ipv6.txt': [egress6, ping6, hostToC1v6],
  'observed-nft-ipv6.txt': [egress6, ping6, hostToC1v6],
  'observed-internal.txt': [internal4, internal6],
  'observed-nft-internal.txt': [internal4, internal6],
};

/** IPv6 in one spelling, whatever the parser chose (the kernel prints it fully expanded). */
const canon = (ip: string | undefined): string | undefined => (ip?.includes(':') ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip);

const opts = createLineOptions({});
for (const [file, expected] of Object.entries(FILES)) {
  t.test(file, async (t) => {
    const lines = readFileSync(fixture('e2e', file), 'utf8').split('\n').filter((l) => l !== '');
    t.equal(lines.length, expected.length, 'one line per flow');
    lines.forEach((line, i) => {
      const exp = expected[i];
      const rec = parseLine(line, opts);
      if (!isRecord(rec) || exp === undefined) return t.fail(`line ${i + 1}: ${String(rec)}`);
      t.equal(rec.network.direction, exp.direction, `line ${i + 1} direction`);
      t.equal(rec.network.transport, exp.transport, `line ${i + 1} transport`);
      t.equal(canon(rec.source.ip), exp.source);
      t.equal(canon(rec.destination.ip), exp.destination);
      t.equal(rec.network.type, exp.source.includes(':') ? 'ipv6' : 'ipv4');
      if (exp.destinationPort !== undefined) {
        t.equal(rec.destination.port, exp.destinationPort);
        t.equal(rec.source.port, Number(/ SPT=(\d+) /.exec(line)?.[1]), 'source port as logged');
      }
      t.equal(rec.iptables.physin, exp.physin);
      t.equal(rec.iptables.physout, exp.physout);
      t.match(rec.log?.prefix ?? '', /^dfe[0-9a-f]{6}:$/, 'the per-run prefix of the e2e test');
    });
  });
}
