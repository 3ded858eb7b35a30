/**
 * The parts of the Docker Engine API answers dockflow reads. Podman's Docker-compatible API returns the same shapes
 * with small differences (`NetworkID` holds the network name, `EndpointID` is empty); every field is optional here
 * because either engine may leave it out.
 */

export interface EndpointSettings {
  NetworkID?: string;
  EndpointID?: string;
  Gateway?: string;
  IPAddress?: string;
  IPPrefixLen?: number;
  GlobalIPv6Address?: string;
  GlobalIPv6PrefixLen?: number;
  MacAddress?: string;
}

export interface ContainerSummary {
  Id: string;
  Names?: string[];
  Image?: string;
  Labels?: Record<string, string> | null;
  State?: string;
  NetworkSettings?: { Networks?: Record<string, EndpointSettings> | null } | null;
}

export interface ContainerInspect {
  Id: string;
  Name?: string;
  State?: { Status?: string; Running?: boolean; StartedAt?: string; FinishedAt?: string };
  Config?: { Image?: string; Labels?: Record<string, string> | null } | null;
  /** Requested bindings (`80/tcp` → host ports), present whether or not the container runs. */
  HostConfig?: { PortBindings?: Record<string, PortBinding[] | null> | null } | null;
  NetworkSettings?: { Networks?: Record<string, EndpointSettings> | null; Ports?: Record<string, PortBinding[] | null> | null } | null;
}

export interface PortBinding {
  HostIp?: string;
  HostPort?: string;
}

export interface DockerEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  status?: string;
  id?: string;
  from?: string;
  scope?: string;
  time?: number;
  timeNano?: number;
  /**
   * `timeNano` as the digits the engine sent: real values (~1.8e18) are past 2^53, so the parsed number is off by up
   * to a few hundred nanoseconds, which is enough to skip or repeat an event when resuming with `since`.
   */
  timeNanoText?: string;
}

export interface VersionInfo {
  ApiVersion?: string;
  MinAPIVersion?: string;
  Version?: string;
}
