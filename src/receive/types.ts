export type Transport = 'udp' | 'tcp' | 'tls' | 'relp';

export interface MessageMeta {
  transport: Transport;
  /** Sender address as the socket saw it, IPv4-mapped IPv6 unwrapped (`127.0.0.1`, not `::ffff:127.0.0.1`). */
  remoteAddress: string;
  receivedAtMs: number;
  /**
   * A stable identity of the message (RELP: hash of the sender address and the message bytes), stored as the
   * record's `event.hash` so that a message received twice can be found.
   */
  hash?: string;
}

/**
 * What became of a message handed over with `acceptDurable`: its record is stored (in Redis, or written to the
 * spool and fsynced), it produced no record (not a netfilter line: nothing to keep), or the writer dropped it.
 */
export type DurableOutcome = 'stored' | 'no-record' | 'dropped';

/**
 * Where receivers hand each framed syslog message. `accept` always takes the message; `false` asks the caller to
 * stop reading (TCP pauses its sockets, UDP leaves datagrams in its receive backlog) until the sink calls its drain listeners.
 */
export interface MessageSink {
  /** `message` as text (UTF-8); `raw`, its exact bytes, when the text does not give them back (invalid UTF-8). */
  accept(message: string, meta: MessageMeta, raw?: Buffer): boolean;
  /**
   * As `accept`, and `done` is called exactly once with the message's outcome: at once when it produced no record,
   * later when its record is durable or dropped (RELP acknowledges on it); possibly before `acceptDurable` returns.
   * Needed by the RELP listener only.
   */
  acceptDurable?(message: string, meta: MessageMeta, done: (outcome: DurableOutcome) => void, raw?: Buffer): boolean;
  onDrain(listener: () => void): void;
}
