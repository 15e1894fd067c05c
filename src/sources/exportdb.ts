/**
 * Parser for `udevadm info --export-db` / `udevadm info --query=all` text: blocks separated by
 * blank lines, each with `P:` (devpath), `N:` (node), `S:` (symlinks), `E: KEY=VALUE` lines.
 * Used for coldplug (the udev database) and for building fixtures from recordings.
 */
export interface ExportDbDevice {
  devpath: string;
  properties: Record<string, string>;
}

export function parseExportDb(text: string): ExportDbDevice[] {
  const devices: ExportDbDevice[] = [];
  let cur: ExportDbDevice | null = null;
  const flush = (): void => {
    if (cur !== null) {
      if (cur.properties['DEVPATH'] === undefined) cur.properties['DEVPATH'] = cur.devpath;
      devices.push(cur);
    }
    cur = null;
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      flush();
      continue;
    }
    const tag = line.slice(0, 2);
    const rest = line.slice(3);
    if (tag === 'P:') {
      flush();
      cur = { devpath: rest.trim(), properties: {} };
    } else if (tag === 'E:' && cur !== null) {
      const eq = rest.indexOf('=');
      if (eq > 0) cur.properties[rest.slice(0, eq)] = rest.slice(eq + 1);
    }
    // N:, S:, L:, M:, R:, U:, T:, I:, Q:, V:, W: add nothing the E: lines do not already say.
  }
  flush();
  return devices;
}
