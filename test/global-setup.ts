import { mountRepoViewIfNeeded } from './e2e/support/repo-view.js';

/** Once per test run: make the checkout reachable for test containers of other uids. */
export default function setup(): () => void {
  return mountRepoViewIfNeeded();
}
