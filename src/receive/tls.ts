import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { DockflowError, ErrorCode } from '../errors.js';
import type { TlsCounts } from './metrics.js';

export interface TlsListenerOptions {
  /** PEM certificate (chain) the listener presents. */
  certFile: string;
  /** PEM private key of that certificate. */
  keyFile: string;
  /** PEM CA bundle: when set, every client must present a certificate it signed (mutual TLS). */
  caFile?: string | undefined;
  /**
   * Client certificate subjects admitted (a CN, or a DNS name or IP address of the subject alternative names);
   * empty admits every client the CA verified. Needs `caFile`.
   */
  allowedSubjects: readonly string[];
  /** How often the three files are checked for changes (stat polling, which also sees a file replaced by rename). */
  reloadIntervalMs: number;
  /** A handshake not finished in this long is abandoned. */
  handshakeTimeoutMs: number;
}

/** The names a client certificate answers to: its CN, and the DNS names and IP addresses of its SAN. */
export function certificateSubjects(cert: tls.PeerCertificate | Record<string, never>): string[] {
  const names: string[] = [];
  const cn = (cert as tls.PeerCertificate).subject?.CN;
  if (typeof cn === 'string') names.push(cn);
  else if (Array.isArray(cn)) names.push(...(cn as string[]));
  const san = (cert as tls.PeerCertificate).subjectaltname;
  if (typeof san === 'string') {
    for (const part of san.split(', ')) {
      const m = /^(DNS|IP Address):(.+)$/.exec(part);
      if (m) names.push(m[2]!);
    }
  }
  return names;
}

/**
 * The TLS listener's credentials: read from files at start (a failure stops start-up), re-read when a file changes
 * and handed to every server with `setSecureContext` (connections already open keep their session). A change that
 * does not load (a key written before its certificate) keeps the previous credentials, is counted and logged, and is
 * tried again at the next change.
 */
export class TlsCredentials {
  private readonly servers: tls.Server[] = [];
  private readonly allowed: ReadonlySet<string>;
  private watching = false;
  private readonly onChange = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) this.reload();
  };

  constructor(
    private readonly opts: TlsListenerOptions,
    private readonly logger: Logger,
    private readonly counts: TlsCounts,
  ) {
    if (opts.allowedSubjects.length > 0 && opts.caFile === undefined) {
      throw new DockflowError(ErrorCode.CONFIG_INVALID, 'an allowlist of TLS client subjects needs a CA file to verify client certificates');
    }
    this.allowed = new Set(opts.allowedSubjects.map((s) => s.toLowerCase()));
  }

  /** The secure context options from the files; throws when a file cannot be read or they do not make a context. */
  private load(): tls.SecureContextOptions {
    const read = (path: string, what: string): Buffer => {
      try {
        return readFileSync(path);
      } catch (err) {
        throw new DockflowError(ErrorCode.CONFIG_INVALID, `cannot read the TLS ${what} ${path}: ${(err as Error).message}`, { cause: err });
      }
    };
    const options: tls.SecureContextOptions = { cert: read(this.opts.certFile, 'certificate'), key: read(this.opts.keyFile, 'key') };
    if (this.opts.caFile !== undefined) options.ca = read(this.opts.caFile, 'CA file');
    try {
      tls.createSecureContext(options);
    } catch (err) {
      throw new DockflowError(ErrorCode.CONFIG_INVALID, `TLS certificate ${this.opts.certFile} and key ${this.opts.keyFile} do not load: ${(err as Error).message}`, { cause: err });
    }
    return options;
  }

  createServer(onSecureConnection: (socket: tls.TLSSocket) => void): tls.Server {
    const mutual = this.opts.caFile !== undefined;
    const server = tls.createServer(
      { ...this.load(), requestCert: mutual, rejectUnauthorized: mutual, handshakeTimeout: this.opts.handshakeTimeoutMs },
      onSecureConnection,
    );
    server.on('tlsClientError', (err, socket) => {
      this.onHandshakeFailed();
      this.logger.info({ err: err.message, remoteAddress: socket.remoteAddress }, 'syslog TLS handshake failed');
    });
    this.servers.push(server);
    this.watch();
    return server;
  }

  /** Counted by the receiver's metrics (set by startReceivers). */
  onHandshakeFailed: () => void = () => undefined;

  /** Whether a verified client's certificate names an allowed subject (always, with no allowlist). */
  admit(socket: tls.TLSSocket, remoteAddress: string): boolean {
    if (this.allowed.size === 0) return true;
    const names = certificateSubjects(socket.getPeerCertificate());
    if (socket.authorized && names.some((n) => this.allowed.has(n.toLowerCase()))) return true;
    this.logger.info({ remoteAddress, subjects: names }, 'syslog TLS client certificate subject not allowed');
    return false;
  }

  private watch(): void {
    if (this.watching) return;
    this.watching = true;
    for (const path of this.files()) watchFile(path, { interval: this.opts.reloadIntervalMs, persistent: false }, this.onChange);
  }

  private files(): string[] {
    return [this.opts.certFile, this.opts.keyFile, ...(this.opts.caFile !== undefined ? [this.opts.caFile] : [])];
  }

  reload(): void {
    try {
      const options = this.load();
      for (const server of this.servers) server.setSecureContext(options);
      this.counts.reloads++;
      this.logger.info({ cert: this.opts.certFile }, 'syslog TLS certificate reloaded');
    } catch (err) {
      this.counts.reloadFailures++;
      this.logger.warn({ err: (err as Error).message }, 'syslog TLS certificate changed but does not load; keeping the previous one');
    }
  }

  close(): void {
    if (!this.watching) return;
    this.watching = false;
    for (const path of this.files()) unwatchFile(path, this.onChange);
  }
}
