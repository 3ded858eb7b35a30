export type Transport = 'udp' | 'tcp';

export interface MessageMeta {
  transport: Transport;
  /** Sender address as the socket saw it, IPv4-mapped IPv6 unwrapped (`127.0.0.1`, not `::ffff:127.0.0.1`). */
  remoteAddress: string;
  receivedAtMs: number;
}

/**
 * Where receivers hand each framed syslog message. `accept` always takes the message; `false` asks the caller to
 * stop reading (TCP pauses its sockets, UDP leaves datagrams in its receive backlog) until the sink calls its drain listeners.
 */
export interface MessageSink {
  /** `message` as text (UTF-8); `raw`, its exact bytes, when the text does not give them back (invalid UTF-8). */
  accept(message: string, meta: MessageMeta, raw?: Buffer): boolean;
  onDrain(listener: () => void): void;
}
