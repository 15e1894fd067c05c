/** Names, paths and status codes of the contract (DESIGN Part A). Other programs depend on them. */
export const DAEMON_BUS_NAME = 'io.veea.VeeaHub.HardwareMonitoringDaemon';
export const DAEMON_OBJECT_PATH = '/io/veea/VeeaHub/HardwareMonitoringDaemon';
export const CONTAINER_INTERFACE = 'io.veea.VeeaHub.HardwareMonitoringDaemon.Container';
/** Root-only interface behind `hmd status`/`hmd monitor` (not part of the seed API). */
export const ADMIN_INTERFACE = 'io.veea.VeeaHub.HardwareMonitoringDaemon.Admin';
export const ERROR_PREFIX = 'io.veea.VeeaHub.HardwareMonitoringDaemon.Error';
export const ERROR_NOT_REGISTERED = `${ERROR_PREFIX}.NotRegistered`;
export const ERROR_NOT_IMPLEMENTED = `${ERROR_PREFIX}.NotImplemented`;
export const ERROR_INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs';
export const ERROR_ACCESS_DENIED = 'org.freedesktop.DBus.Error.AccessDenied';
export const ERROR_FAILED = 'org.freedesktop.DBus.Error.Failed';

export const AGENT_BUS_PREFIX = 'io.veea.VeeaHub.HardwareMonitoringAgent.C_';
export const AGENT_PATH_PREFIX = '/io/veea/VeeaHub/HardwareMonitoringAgent/C_';
export const EVENTS_INTERFACE = 'io.veea.VeeaHub.HardwareMonitoringAgent.Events';

export const agentBusName = (cid: string): string => `${AGENT_BUS_PREFIX}${cid}`;
export const agentObjectPath = (cid: string): string => `${AGENT_PATH_PREFIX}${cid}`;

/** Linux errno values used as status codes on the Container interface. */
export const Status = {
  OK: 0,
  EIO: 5,
  EAGAIN: 11,
  EBUSY: 16,
  EFBIG: 27,
  ENODATA: 61,
} as const;
export type Status = (typeof Status)[keyof typeof Status];

export const CONTAINER_ID_RE = /^[0-9a-f]{64}$/;

export const DEFAULT_SPOOL_DIR = '/run/veea-hmd/spool';
export const DEFAULT_STATE_DIR = '/var/lib/veea-hmd';
export const DEFAULT_CONFIG_FILE = '/etc/veea-hmd/config.json';
export const HELPER_INSTALL_PATH = '/usr/libexec/veea-hmd/hmd-uevent';

/** Property keys the daemon adds; the whole `HMD_` prefix is the daemon's own namespace. */
export const HMD_PREFIX = 'HMD_';
export const HMD_SEQUENCE = 'HMD_SEQUENCE';
export const HMD_REPLAY = 'HMD_REPLAY';
