/**
 * Watching one flat directory for names that appear in it, with either `fs.watch` (inotify, the
 * default: one event per rename, no re-read of the folder) or chokidar. Either way the caller
 * keeps a periodic rescan as a safety net: inotify can overflow, and a watch dies with its folder.
 */
import { watch as fsWatch } from 'node:fs';
import { basename } from 'node:path';

export type WatcherKind = 'fswatch' | 'chokidar';

export interface DirWatch {
  close(): Promise<void>;
}

export interface DirWatchHandlers {
  /** A name changed in the folder; null when the watcher cannot say which (rescan all). */
  onName: (name: string | null) => void;
  /** The watch broke; the caller rescans and watches again. */
  onError: (err: Error) => void;
}

export async function watchDir(dir: string, kind: WatcherKind, h: DirWatchHandlers): Promise<DirWatch> {
  return kind === 'chokidar' ? watchWithChokidar(dir, h) : Promise.resolve(watchWithFs(dir, h));
}

function watchWithFs(dir: string, h: DirWatchHandlers): DirWatch {
  const w = fsWatch(dir, { persistent: true }, (_event, filename) => h.onName(filename ?? null));
  w.on('error', (err) => h.onError(err));
  return {
    close: () => {
      w.close();
      return Promise.resolve();
    },
  };
}

async function watchWithChokidar(dir: string, h: DirWatchHandlers): Promise<DirWatch> {
  const { watch } = await import('chokidar');
  const w = watch(dir, {
    depth: 0,
    ignoreInitial: true,
    persistent: true,
    // Renames are already atomic; chokidar's own atomic-write handling only adds delay.
    atomic: false,
    awaitWriteFinish: false,
    ignored: (path: string) => path !== dir && basename(path).startsWith('.'),
  });
  w.on('add', (path: string) => h.onName(basename(path)));
  w.on('error', (err: unknown) => h.onError(err instanceof Error ? err : new Error(String(err))));
  await new Promise<void>((resolve) => w.once('ready', () => resolve()));
  return { close: () => w.close() };
}
