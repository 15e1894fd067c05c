/** What the sources produce and the device table consumes (DESIGN Part B). */
export const DEVICE_ACTIONS = ['add', 'remove', 'change', 'bind', 'unbind', 'move', 'online', 'offline'] as const;
export type DeviceAction = (typeof DEVICE_ACTIONS)[number];

export type EventSource = 'spool' | 'udevadm' | 'coldplug' | 'reconcile';

export interface DeviceEvent {
  action: DeviceAction;
  /** udev DEVPATH; the device's id everywhere (DESIGN A2). */
  devpath: string;
  subsystem: string;
  /** udev SEQNUM of a live event; null for coldplugged/reconciled devices (they have none). */
  seqnum: bigint | null;
  /** The device's udev properties: `HMD_*` keys and shell variables already removed. */
  properties: Record<string, string>;
  source: EventSource;
  /** The spool file this event came from, released once the state covering it is durable. */
  spoolFile?: string;
}

/** What the dispatcher fans out: an insert or a remove of one device. */
export interface DeviceNotification {
  kind: 'insert' | 'remove';
  deviceId: string;
  properties: Record<string, string>;
}

/** One present device, as `hmd status` shows it and a replay sends it. */
export interface DeviceRecord {
  id: string;
  properties: Record<string, string>;
}
