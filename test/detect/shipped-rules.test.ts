import t from 'tap';
import { Detector, type Alert } from '../../src/detect/engine.js';
import { loadRulePaths, shippedRulesDir } from '../../src/detect/live.js';
import type { FlowRecord } from '../../src/record.js';
import { MAIL, record, WEB } from './lines.js';

const T0 = Date.parse('2026-12-01T10:00:00Z');
const MIN = 60_000;
const HOUR = 60 * MIN;

function run(records: FlowRecord[]): Alert[] {
  const alerts: Alert[] = [];
  const d = new Detector({ groupWindowMs: 10 * MIN, maxGroups: 10_000, maxStateKeys: 10_000, onAlert: (a) => alerts.push(a) });
  d.setRules(loadRulePaths([shippedRulesDir()]));
  for (const r of records) d.observe(r, Date.parse(r['@timestamp']));
  d.flush();
  return alerts;
}

const egress = (dpt: number, dst = '198.51.100.2', at = T0, container = WEB, spt = 44038) =>
  record({ kind: 'egressTcp', timeMs: at, dst, dpt, spt }, container);

/** Ordinary traffic: web egress to HTTPS and DNS, ingress to the published port, over a day and a half. */
function ordinary(): FlowRecord[] {
  const out: FlowRecord[] = [];
  for (let i = 0; i < 36; i++) {
    const at = T0 + i * HOUR;
    out.push(record({ kind: 'ingressTcp', timeMs: at, src: '203.0.113.7', dpt: 80 }, WEB));
    out.push(egress(443, `192.0.2.${(i % 5) + 1}`, at + 1234 * (i % 7), WEB, 40000 + i));
    out.push(record({ kind: 'egressUdp', timeMs: at + 50, dst: '198.51.100.53', dpt: 53, spt: 50000 + i }, WEB));
  }
  return out;
}

const beacon = (intervals: number[]): FlowRecord[] => {
  let at = T0;
  const out = [egress(443, '203.0.113.9', at, WEB, 41000)];
  intervals.forEach((d, i) => {
    at += d;
    out.push(egress(443, '203.0.113.9', at, WEB, 41001 + i));
  });
  return out;
};

const cases: { rule: string; fires: FlowRecord[]; quiet: FlowRecord[] }[] = [
  {
    rule: 'smtp-egress-non-mail',
    fires: [egress(25), egress(587, '203.0.113.25')],
    quiet: [egress(25, '198.51.100.2', T0, MAIL), egress(25, '10.0.0.25'), egress(443)],
  },
  { rule: 'mining-pool-port', fires: [egress(3333, '203.0.113.50')], quiet: [egress(443, '203.0.113.50'), egress(3333, '172.20.0.9')] },
  { rule: 'irc-egress', fires: [egress(6667, '203.0.113.6')], quiet: [egress(6670, '203.0.113.6')] },
  { rule: 'tor-egress', fires: [egress(9001, '203.0.113.90')], quiet: [egress(9000, '203.0.113.90')] },
  {
    rule: 'first-egress-after-learning',
    // Seen (ingress) at T0; its first egress comes 25 h later, past the 24 h learning period.
    fires: [record({ kind: 'ingressTcp', timeMs: T0, src: '203.0.113.7', dpt: 80 }, WEB), egress(443, '192.0.2.1', T0 + 25 * HOUR)],
    // It had egress while learning, so egress later is not new.
    quiet: [record({ kind: 'ingressTcp', timeMs: T0, src: '203.0.113.7', dpt: 80 }, WEB), egress(443, '192.0.2.1', T0 + HOUR), egress(443, '192.0.2.1', T0 + 25 * HOUR)],
  },
  {
    rule: 'fan-out-scan',
    fires: Array.from({ length: 101 }, (_, i) => egress(22, `203.0.113.${i + 1}`, T0 + i * 300, WEB, 30000 + i)),
    // As many connections, to three remotes; and 101 distinct ones spread over 50 minutes.
    quiet: [
      ...Array.from({ length: 150 }, (_, i) => egress(443, `192.0.2.${(i % 3) + 1}`, T0 + i * 300, WEB, 30000 + i)),
      ...Array.from({ length: 101 }, (_, i) => egress(22, `203.0.113.${i + 1}`, T0 + HOUR + i * 30_000, WEB, 30000 + i)),
    ],
  },
  {
    rule: 'beaconing',
    fires: beacon([60_000, 60_400, 59_700, 60_100, 59_900, 60_300]),
    quiet: beacon([60_000, 95_000, 31_000, 240_000, 12_000, 70_000]),
  },
  {
    rule: 'ingress-unpublished-port',
    fires: [record({ kind: 'ingressTcp', timeMs: T0, src: '203.0.113.7', dpt: 22 }, WEB)],
    quiet: [record({ kind: 'ingressTcp', timeMs: T0, src: '203.0.113.7', dpt: 80 }, WEB)],
  },
];

t.test('every shipped rule fires from real-shaped lines and stays quiet otherwise', async (t) => {
  const shipped = loadRulePaths([shippedRulesDir()]).rules.map((r) => r.id).sort();
  t.same(shipped, cases.map((c) => c.rule).sort(), 'a case per shipped rule');
  for (const c of cases) {
    t.test(c.rule, async (t) => {
      const fired = run(c.fires).filter((a) => a.rule === c.rule && a.kind === 'new');
      t.ok(fired.length >= 1, 'fires');
      t.equal(fired[0]?.container_name, WEB.name);
      t.same(run(c.quiet).filter((a) => a.rule === c.rule), [], 'quiet');
    });
  }
});

t.test('ordinary traffic raises nothing', async (t) => {
  t.same(run(ordinary()), []);
});

t.test('repeats of a rule for one container and remote are one alert with a count', async (t) => {
  const alerts = run([egress(25, '198.51.100.2', T0), egress(25, '198.51.100.2', T0 + MIN, WEB, 44039), egress(25, '198.51.100.2', T0 + 2 * MIN, WEB, 44040)]);
  t.same(
    alerts.map((a) => [a.kind, a.count, a.time, a.last]),
    [
      ['new', 1, new Date(T0).toISOString(), new Date(T0).toISOString()],
      ['repeat', 3, new Date(T0).toISOString(), new Date(T0 + 2 * MIN).toISOString()],
    ],
  );
  const a = alerts[0]!;
  t.match(a, { rule: 'smtp-egress-non-mail', severity: 'high', direction: 'egress', transport: 'tcp', src_ip: '172.17.0.2', dst_ip: '198.51.100.2', dst_port: 25, remote_ip: '198.51.100.2', container_id: WEB.id, service: 'web', image: 'nginx:1.27', host: 'dockerhost', prefix: 'dockflow:' });
  // A new window opens a new alert.
  t.equal(run([egress(25, '198.51.100.2', T0), egress(25, '198.51.100.2', T0 + 11 * MIN)]).filter((x) => x.kind === 'new').length, 2);
});
