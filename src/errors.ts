/** Every error dockflow raises on purpose carries one of these codes, so logs and exit paths can tell them apart. */
export const ErrorCode = {
  CONFIG_INVALID: 'DOCKFLOW_CONFIG_INVALID',
  REDIS_UNAVAILABLE: 'DOCKFLOW_REDIS_UNAVAILABLE',
  REDIS_SERVER_MISSING: 'DOCKFLOW_REDIS_SERVER_MISSING',
  LISTEN_FAILED: 'DOCKFLOW_LISTEN_FAILED',
  SPOOL_FAILED: 'DOCKFLOW_SPOOL_FAILED',
  GEOIP_DB_INVALID: 'DOCKFLOW_GEOIP_DB_INVALID',
  DOCKER_API: 'DOCKFLOW_DOCKER_API',
  INPUT_UNREADABLE: 'DOCKFLOW_INPUT_UNREADABLE',
  USAGE: 'DOCKFLOW_USAGE',
  SHUTDOWN_TIMEOUT: 'DOCKFLOW_SHUTDOWN_TIMEOUT',
  INGESTER_ID_IN_USE: 'DOCKFLOW_INGESTER_ID_IN_USE',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export class DockflowError extends Error {
  readonly code: ErrorCodeValue;
  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DockflowError';
    this.code = code;
  }
}
