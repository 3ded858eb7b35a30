/**
 * scripts/install-iptables-rule.sh without a Docker-like host: options, errors, and what it would do (--dry-run)
 * rendered from rules/. Runs as any user: "not root" is simulated with an `id` that says 1000, so the dry run
 * never reads the live ruleset. The rendered nftables and rsyslog files are checked by the real tools when present
 * (nft -c in a private network namespace as root, rsyslogd -N1). Real installs are in host.test.ts.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/temp.js';

const SCRIPT = join(repoRoot, 'scripts', 'install-iptables-rule.sh');
const fakeBin = tempDir(t, 'fakeid');
writeFileSync(join(fakeBin, 'id'), '#!/bin/sh\necho 1000\n');
chmodSync(join(fakeBin, 'id'), 0o755);

const isRoot = process.getuid?.() === 0;
const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the script as a non-root user would (fake `id`), or for real with `asRoot` inside a private netns. */
function script(args: string[], opts: { asRoot?: boolean; env?: Record<string, string> } = {}): Run {
  const env = { ...process.env, ...opts.env, PATH: opts.asRoot ? process.env.PATH : `${fakeBin}:${process.env.PATH ?? ''}` };
  const argv = opts.asRoot ? ['unshare', '--net', 'bash', SCRIPT, ...args] : ['bash', SCRIPT, ...args];
  const r = spawnSync(argv[0] as string, argv.slice(1), { env, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('shellcheck finds nothing', { skip: has('shellcheck') ? false : 'shellcheck not installed (apt-get install shellcheck)' }, async (t) => {
  const r = spawnSync('shellcheck', [SCRIPT], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stdout);
});

t.test('--help', async (t) => {
  const r = script(['--help']);
  t.equal(r.status, 0);
  for (const opt of ['--uninstall', '--check', '--dry-run', '--prefix', '--limit', '--all-packets', '--host-traffic', '--bridges', '--nft', '--target', '--transport', '--ca', '--cert', '--permitted-peer', '--rsyslog-dir']) {
    t.match(r.stdout, opt);
  }
});

t.test('bad options fail with a clear message and change nothing', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--frobnicate'], /unknown option: --frobnicate/],
    [['--prefix'], /--prefix needs a value/],
    [['--prefix', 'this-prefix-is-far-too-long-for-iptables: '], /--prefix must be 1-29 characters/],
    [['--prefix', 'bad"quote'], /--prefix must be/],
    [['--prefix', '   '], /--prefix must not be blank/],
    [['--limit', '5/fortnight'], /--limit must be/],
    [['--limit-burst', '0'], /--limit-burst must be a positive integer/],
    [['--log-level', 'loud'], /--log-level must be one of/],
    [['--bridges', 'docker0,bad name'], /--bridges: 'bad name'/],
    [['--bridges', 'a-name-longer-than-15'], /--bridges/],
    [['--target', 'no-port'], /--target must be HOST:PORT/],
    [['--target', '127.0.0.1:70000'], /--target port must be 1-65535/],
    [['--target', '::1:5514'], /--target must be HOST:PORT or \[IPv6\]:PORT/],
    [['--rsyslog-dir', 'relative/dir'], /absolute paths/],
    [['--target', 'h:1', '--transport', 'udp'], /--transport must be tcp, tls or relp/],
    [['--target', 'h:1', '--transport', 'tls'], /--transport tls needs --ca/],
    [['--target', 'h:1', '--transport', 'tls', '--ca', '/ca.pem', '--cert', '/c.pem'], /--cert and --key go together/],
    [['--target', 'h:1', '--transport', 'tls', '--ca', 'ca.pem'], /absolute paths/],
    [['--target', 'h:1', '--transport', 'tls', '--ca', '/ca".pem'], /absolute paths/],
    [['--target', 'h:1', '--transport', 'tls', '--ca', '/ca.pem', '--permitted-peer', 'a b'], /--permitted-peer must be/],
    [['--target', 'h:1', '--transport', 'relp', '--ca', '/ca.pem'], /are for --transport tls/],
    [['--queue-max-disk', 'lots'], /--queue-max-disk must be a size/],
    [['--rules-dir', '/nonexistent-dockflow-rules'], /rules directory not found/],
  ];
  for (const [args, message] of cases) {
    const r = script(['--dry-run', ...args]);
    t.equal(r.status, 1, args.join(' '));
    t.match(r.stderr, message, args.join(' '));
    t.equal(r.stdout, '', `${args.join(' ')}: prints no commands`);
  }
});

t.test('not root: install, uninstall and check refuse; a dry run works', async (t) => {
  for (const args of [[], ['--uninstall'], ['--check'], ['--nft'], ['--uninstall', '--dry-run']]) {
    const r = script(args);
    t.equal(r.status, 1, args.join(' ') || 'install');
    t.match(r.stderr, /must run as root/);
  }
  const r = script(['--dry-run']);
  t.equal(r.status, 0);
  t.match(r.stdout, /not root: assuming DOCKER-USER exists/);
});

t.test('dry run: the commands rendered from rules/iptables.rules.tmpl', async (t) => {
  const log = (chain: string, extra: string) =>
    `${chain} -m conntrack --ctstate NEW -m limit --limit 1000/second --limit-burst 2000 -m comment --comment dockflow -j LOG --log-prefix 'dockflow: ' --log-level warning ${extra}`;
  const cases: Array<{ args: string[]; want: string[] }> = [
    {
      args: [],
      want: [
        `iptables -w 10 -I ${log('DOCKER-USER 1', '--log-tcp-options --log-ip-options')}`,
        `ip6tables -w 10 -I ${log('DOCKER-USER 1', '--log-tcp-options --log-ip-options')}`,
      ],
    },
    {
      args: ['--no-ipv6', '--host-traffic', '--bridges', 'docker0,br-+'],
      want: [
        `iptables -w 10 -I ${log('DOCKER-USER 1', '--log-tcp-options --log-ip-options')}`,
        `iptables -w 10 -I ${log('INPUT 1 -i docker0', '--log-uid')}`,
        `iptables -w 10 -I ${log('OUTPUT 1 -o docker0', '--log-uid')}`,
        `iptables -w 10 -I ${log('INPUT 2 -i br-+', '--log-uid')}`,
        `iptables -w 10 -I ${log('OUTPUT 2 -o br-+', '--log-uid')}`,
      ],
    },
    {
      args: ['--no-ipv6', '--all-packets', '--limit', 'none', '--prefix', 'fw:', '--log-level', '6'],
      want: ['iptables -w 10 -I DOCKER-USER 1 -m comment --comment dockflow -j LOG --log-prefix fw: --log-level info --log-tcp-options --log-ip-options'],
    },
    {
      args: ['--no-ipv6', '--limit', '20/minute', '--limit-burst', '5'],
      want: [
        'iptables -w 10 -I DOCKER-USER 1 -m conntrack --ctstate NEW -m limit --limit 20/minute --limit-burst 5 -m comment --comment dockflow -j LOG --log-prefix \'dockflow: \' --log-level warning --log-tcp-options --log-ip-options',
      ],
    },
  ];
  for (const { args, want } of cases) {
    const r = script(['--dry-run', ...args]);
    t.equal(r.status, 0, r.stderr);
    t.same(r.stdout.split('\n').filter((l) => /^ip6?tables /.test(l)), want, args.join(' ') || 'defaults');
  }
});

t.test('dry run --nft: one table from rules/nftables.nft.tmpl, valid for nft', async (t) => {
  const r = script(['--dry-run', '--nft', '--host-traffic', '--limit', 'none', '--all-packets']);
  t.equal(r.status, 0, r.stderr);
  const ruleset = /nft -f - <<NFT\n([\s\S]*)\nNFT/.exec(r.stdout)?.[1] ?? '';
  t.match(ruleset, 'delete table inet dockflow');
  t.match(ruleset, '\t\tlog prefix "dockflow: " level warn flags tcp options flags ip options comment "dockflow"');
  t.match(ruleset, 'iifname "docker0" log prefix');
  t.match(ruleset, 'oifname "br-*" log prefix');
  t.notMatch(ruleset, /@[A-Z_]+@|##/, 'no placeholder or template note left');
  const defaults = script(['--dry-run', '--nft']).stdout;
  t.match(defaults, 'ct state new limit rate 1000/second burst 2000 packets log prefix "dockflow: "');
  t.notMatch(defaults, 'chain input', 'no host chains without --host-traffic');
  t.test('nft -c accepts it', { skip: isRoot && has('nft') && has('unshare') ? false : 'needs root and nft' }, async (t) => {
    const check = spawnSync('unshare', ['--net', 'nft', '-c', '-f', '-'], { input: ruleset, encoding: 'utf8' });
    t.equal(check.status, 0, check.stderr);
  });
});

t.test('dry run --target: the rsyslog drop-in from rules/rsyslog-dockflow.conf.tmpl, valid for rsyslogd', async (t) => {
  const r = script(['--dry-run', '--no-ipv6', '--target', '[::1]:5514', '--rsyslog-dir', '/tmp/x.d', '--spool-dir', '/tmp/spool', '--no-local-copy']);
  t.equal(r.status, 0, r.stderr);
  const dropin = /--- would write \/tmp\/x\.d\/60-dockflow\.conf \(mode 0644\) ---\n([\s\S]*)\n--- end of/.exec(r.stdout)?.[1] ?? '';
  t.match(dropin, /^# dockflow: forward netfilter LOG lines to dockflow\.$/m, 'the header --uninstall looks for');
  t.match(dropin, 'if $syslogfacility-text == "kern" and $msg contains "dockflow: " then {');
  t.match(dropin, 'target="::1" port="5514" protocol="tcp"');
  t.match(dropin, 'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"');
  t.match(dropin, 'queue.spoolDirectory="/tmp/spool"');
  t.match(dropin, 'queue.saveOnShutdown="on"');
  t.match(dropin, /^\tstop$/m, '--no-local-copy stops after forwarding');
  t.notMatch(dropin, /@[A-Z_]+@|##/);
  t.match(r.stdout, 'mkdir -p /tmp/spool');
  t.notMatch(script(['--dry-run', '--target', 'h:1']).stdout, /^\tstop$/m, 'kern.log keeps its copy by default');
  t.test('rsyslogd -N1 accepts it', { skip: has('rsyslogd') ? false : 'rsyslogd not installed' }, async (t) => {
    const dir = tempDir(t, 'dropin');
    writeFileSync(join(dir, 'dropin.conf'), dropin);
    const check = spawnSync('rsyslogd', ['-N1', '-f', join(dir, 'dropin.conf')], { encoding: 'utf8' });
    t.equal(check.status, 0, check.stderr);
  });
});

t.test('dry run --target --transport tls|relp: the TLS and RELP drop-ins, valid for rsyslogd', async (t) => {
  const cases: Array<[string, string[], Array<string | RegExp>, Array<string | RegExp>]> = [
    [
      'tls with a client certificate',
      ['--transport', 'tls', '--ca', '/etc/dockflow/ca.pem', '--cert', '/etc/dockflow/host.pem', '--key', '/etc/dockflow/host.key'],
      [
        'target="collector.example" port="6514" protocol="tcp"',
        'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"',
        'StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"',
        'StreamDriverPermittedPeers="collector.example" StreamDriver.CAFile="/etc/dockflow/ca.pem"',
        'StreamDriver.CertFile="/etc/dockflow/host.pem" StreamDriver.KeyFile="/etc/dockflow/host.key"',
      ],
      ['omrelp'],
    ],
    [
      'tls without a client certificate, another peer name',
      ['--transport', 'tls', '--ca', '/etc/dockflow/ca.pem', '--permitted-peer', 'dockflow.internal'],
      ['StreamDriverPermittedPeers="dockflow.internal"'],
      ['StreamDriver.CertFile', 'omrelp'],
    ],
    [
      'relp',
      ['--transport', 'relp'],
      ['module(load="omrelp")', 'action(type="omrelp" name="dockflow" target="collector.example" port="6514"'],
      ['omfwd', 'StreamDriver', 'TCP_Framing'],
    ],
  ];
  for (const [name, args, present, absent] of cases) {
    const r = script(['--dry-run', '--no-ipv6', '--target', 'collector.example:6514', '--rsyslog-dir', '/tmp/x.d', '--spool-dir', '/tmp/spool', ...args]);
    t.equal(r.status, 0, `${name}: ${r.stderr}`);
    const dropin = /--- would write \/tmp\/x\.d\/60-dockflow\.conf \(mode 0644\) ---\n([\s\S]*)\n--- end of/.exec(r.stdout)?.[1] ?? '';
    t.match(dropin, /^# dockflow: forward netfilter LOG lines to dockflow\.$/m, `${name}: the header --uninstall looks for`);
    t.match(dropin, 'queue.saveOnShutdown="on"', name);
    for (const p of present) t.match(dropin, p, name);
    for (const a of absent) t.notMatch(dropin, a, name);
    t.notMatch(dropin, /@[A-Z_]+@|##/, `${name}: every placeholder replaced`);
    if (has('rsyslogd')) {
      const dir = tempDir(t, 'dropin');
      writeFileSync(join(dir, 'dropin.conf'), dropin);
      const check = spawnSync('rsyslogd', ['-N1', '-f', join(dir, 'dropin.conf')], { encoding: 'utf8' });
      t.equal(check.status, 0, `${name}: rsyslogd -N1: ${check.stderr}`);
    }
  }
});

t.test('a missing tool is named, with the package that brings it', { skip: isRoot && has('unshare') ? false : 'needs root (runs in a private network namespace)' }, async (t) => {
  const r = script(['--no-ipv6'], { asRoot: true, env: { IPTABLES: 'dockflow-no-such-iptables' } });
  t.equal(r.status, 1);
  t.match(r.stderr, /dockflow-no-such-iptables not found in PATH: install iptables/);
  t.test('ip6tables, with iptables present', { skip: has('iptables') ? false : 'iptables not installed (the script stops at it first)' }, async (t) => {
    const v6 = script([], { asRoot: true, env: { IP6TABLES: 'dockflow-no-such-ip6tables' } });
    t.equal(v6.status, 1);
    t.match(v6.stderr, /dockflow-no-such-ip6tables not found in PATH: .*--no-ipv6/);
  });
});

t.test('uninstall leaves a drop-in it did not write', { skip: isRoot && has('unshare') ? false : 'needs root (runs in a private network namespace)' }, async (t) => {
  const dir = tempDir(t, 'dropin');
  writeFileSync(join(dir, '60-dockflow.conf'), '# someone else\n');
  const r = script(['--uninstall', '--rsyslog-dir', dir, '--no-reload'], { asRoot: true });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /was not written by this script/);
});
