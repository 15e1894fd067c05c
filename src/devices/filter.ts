/**
 * "Is this device of interest": the one predicate behind coldplug, the device table and the
 * sources. It mirrors udev-rules/90-veea-hmd.rules match for match, so a device delivered live is
 * also found by coldplug and a reconcile never removes what the rules let through (or the reverse).
 *
 * Like the rules, it looks only at event keys (DEVPATH, SUBSYSTEM, the kernel name, DEVTYPE),
 * never at sysfs: a remove must be judged exactly as its add was.
 */

/** udev's KERNEL: the last component of DEVPATH. */
export function kernelName(devpath: string): string {
  return devpath.slice(devpath.lastIndexOf('/') + 1);
}

export type InterestVerdict = { ok: true } | { ok: false; reason: string };

/**
 * Why a device is or is not passed on. `subsystems` is `devices.subsystems` of the config;
 * subsystems without a rule of their own below pass whole (as a line added to the rules would).
 */
export function deviceInterest(props: Readonly<Record<string, string>>, subsystems: readonly string[]): InterestVerdict {
  const subsystem = props['SUBSYSTEM'];
  const devpath = props['DEVPATH'];
  if (subsystem === undefined || devpath === undefined) return { ok: false, reason: 'no SUBSYSTEM or DEVPATH' };
  if (!subsystems.includes(subsystem)) return { ok: false, reason: `subsystem ${subsystem} not configured` };
  // Nothing under /devices/virtual has hardware behind it: consoles, ptys, loop/ram/dm/md, uhid...
  if (devpath.startsWith('/devices/virtual/')) return { ok: false, reason: 'virtual device' };
  const kernel = kernelName(devpath);
  const devtype = props['DEVTYPE'];
  switch (subsystem) {
    case 'usb':
      // One event per physical device, not one per interface.
      return devtype === 'usb_device' ? { ok: true } : { ok: false, reason: `usb DEVTYPE ${devtype ?? '(none)'}` };
    case 'tty':
      return /^tty[0-9]/.test(kernel) ? { ok: false, reason: 'virtual console' } : { ok: true };
    case 'block':
      if (/^(loop|ram|zram)[0-9]/.test(kernel)) return { ok: false, reason: 'loop/ram/zram block device' };
      return devtype === 'disk' || devtype === 'partition' ? { ok: true } : { ok: false, reason: `block DEVTYPE ${devtype ?? '(none)'}` };
    default:
      // hidraw, video4linux, sound (the card and its nodes), and any subsystem a site adds.
      return { ok: true };
  }
}

export function isDeviceOfInterest(props: Readonly<Record<string, string>>, subsystems: readonly string[]): boolean {
  return deviceInterest(props, subsystems).ok;
}
