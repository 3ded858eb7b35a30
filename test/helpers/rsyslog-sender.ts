import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';

/** Why rsyslog-based sender tests cannot run here, or undefined. */
export function rsyslogUnsupported(modules: readonly string[]): string | undefined {
  if (spawnSync('sh', ['-c', 'command -v rsyslogd']).status !== 0) return 'rsyslogd not installed (apt-get install rsyslog)';
  for (const m of modules) {
    const found = spawnSync('sh', ['-c', `ls /usr/lib/*/rsyslog/${m}.so /usr/lib/rsyslog/${m}.so 2>/dev/null | head -1`], { encoding: 'utf8' }).stdout.trim();
    if (found === '') return `rsyslog module ${m} not installed (${m === 'omrelp' ? 'rsyslog-relp' : m === 'lmnsd_gtls' ? 'rsyslog-gnutls' : 'rsyslog'})`;
  }
  return undefined;
}

export interface RsyslogSender {
  /** The file rsyslog reads (imfile): append lines to send them. */
  readonly input: string;
  output(): string;
  stop(): Promise<void>;
}

/**
 * A real rsyslogd of the test's own that reads `input` with imfile and sends each line unchanged (`%rawmsg%`)
 * through the `action` it is given (an omfwd or omrelp action body, with `template="raw"`). `globals` go into the
 * global() statement (TLS files), `modules` are loaded (omrelp). Stopped (SIGTERM, then SIGKILL) when the test ends.
 */
export async function startRsyslogSender(t: Test, dir: string, action: string, globals = '', modules: readonly string[] = []): Promise<RsyslogSender> {
  mkdirSync(dir, { recursive: true });
  const input = join(dir, 'in.log');
  writeFileSync(input, '');
  const conf = join(dir, 'rsyslog.conf');
  writeFileSync(
    conf,
    [
      `global(workDirectory="${dir}" ${globals})`,
      'module(load="imfile")',
      ...modules.map((m) => `module(load="${m}")`),
      'template(name="raw" type="string" string="%rawmsg%")',
      `input(type="imfile" file="${input}" tag="dockflow-test" ruleset="send")`,
      `ruleset(name="send") { ${action} }`,
      '',
    ].join('\n'),
  );
  const check = spawnSync('rsyslogd', ['-N1', '-f', conf], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`rsyslogd rejected the configuration:\n${check.stdout}${check.stderr}`);
  const child: ChildProcess = spawn('rsyslogd', ['-n', '-f', conf, '-i', join(dir, 'rsyslogd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await once(child, 'spawn');
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  };
  t.teardown(stop);
  return { input, output: () => out, stop };
}

/** A test PKI made with openssl: a CA, a server certificate for localhost / 127.0.0.1, and client certificates. */
export interface Pki {
  dir: string;
  ca: string;
  /** `cert` and `key` paths of a certificate `name` signed by the CA (or by a CA of its own: `untrusted`). */
  issue(name: string, opts: { cn: string; san?: string; usage: 'server' | 'client'; untrusted?: boolean }): { cert: string; key: string };
}

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed:\n${r.stderr}`);
}

export function makePki(dir: string): Pki {
  mkdirSync(dir, { recursive: true });
  const caKey = join(dir, 'ca.key');
  const ca = join(dir, 'ca.crt');
  const selfCa = (key: string, cert: string, cn: string): void => {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
    openssl(['req', '-x509', '-new', '-key', key, '-sha256', '-days', '2', '-subj', `/CN=${cn}`, '-out', cert,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  };
  selfCa(caKey, ca, 'dockflow test CA');
  let serial = 1;
  return {
    dir,
    ca,
    issue(name, opts) {
      const key = join(dir, `${name}.key`);
      const cert = join(dir, `${name}.crt`);
      const csr = join(dir, `${name}.csr`);
      const ext = join(dir, `${name}.ext`);
      let signKey = caKey;
      let signCert = ca;
      if (opts.untrusted === true) {
        signKey = join(dir, `${name}-ca.key`);
        signCert = join(dir, `${name}-ca.crt`);
        selfCa(signKey, signCert, 'some other CA');
      }
      openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
      openssl(['req', '-new', '-key', key, '-subj', `/CN=${opts.cn}`, '-out', csr]);
      writeFileSync(
        ext,
        [
          'basicConstraints=critical,CA:FALSE',
          'keyUsage=critical,digitalSignature,keyEncipherment',
          `extendedKeyUsage=${opts.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
          ...(opts.san !== undefined ? [`subjectAltName=${opts.san}`] : []),
          '',
        ].join('\n'),
      );
      openssl(['x509', '-req', '-in', csr, '-CA', signCert, '-CAkey', signKey, '-set_serial', String(serial++), '-days', '2', '-sha256', '-extfile', ext, '-out', cert]);
      return { cert, key };
    },
  };
}
