import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['./test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // e2e tests share cgroup trees and a CPU budget of 2 cores: keep files from stampeding.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
