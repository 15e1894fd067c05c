import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';

const REPO = resolve(import.meta.dirname, '../../..');

/**
 * Test containers that drop to another uid (65534, 7777775) run scripts from this checkout. A
 * checkout under a folder closed to others (`mktemp -d` makes 0700 folders) is out of their
 * reach, so the test run bind-mounts the checkout under /tmp, where they can reach it.
 */
export const REPO_VIEW = join('/tmp', `hmd-repo-view-${createHash('sha256').update(REPO).digest('hex').slice(0, 12)}`);

/** Whether every folder above `path` lets other users through. */
export function othersCanReach(path: string): boolean {
  for (let d = dirname(path); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return false;
    if (d === dirname(d)) return true;
  }
}

const mounted = (): boolean => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === REPO_VIEW);

/** Called once per test run (vitest globalSetup); returns the teardown. */
export function mountRepoViewIfNeeded(): () => void {
  if (othersCanReach(REPO) || process.getuid?.() !== 0) return () => undefined;
  if (!existsSync(REPO_VIEW)) mkdirSync(REPO_VIEW, { mode: 0o755 });
  if (!mounted()) {
    const r = spawnSync('mount', ['--bind', REPO, REPO_VIEW], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cannot bind-mount the checkout for other uids: ${r.stderr}`);
  }
  return () => {
    spawnSync('umount', [REPO_VIEW]);
    try {
      rmdirSync(REPO_VIEW);
    } catch {
      // still busy or already gone
    }
  };
}

/** `path` (inside the checkout) as a process of another uid can reach it. */
export function forOtherUids(path: string): string {
  if (othersCanReach(REPO)) return path;
  if (!mounted()) throw new Error(`${REPO} is closed to other uids and ${REPO_VIEW} is not mounted (run the tests through vitest's global setup)`);
  return path === REPO || path.startsWith(REPO + sep) ? REPO_VIEW + path.slice(REPO.length) : path;
}
