#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { packageRoot } from './paths.js';
import { isHmdError, describeError } from './errors.js';
import { daemonCommand } from './cli/daemon.js';
import { statusCommand, devicesCommand } from './cli/status.js';
import { monitorCommand } from './cli/monitor.js';
import { agentCommand } from './cli/agent.js';
import { keystoreCommand } from './cli/keystore.js';
import { replayCommand } from './cli/replay.js';
import { demoCommand } from './cli/demo.js';

const VERSION = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;

export function buildProgram(): Command {
  const program = new Command('hmd')
    .description('veea-hmd: hardware hot-plug bridge from udev to the containers of a VeeaHub, over D-Bus')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)');
  program.addCommand(daemonCommand());
  program.addCommand(statusCommand());
  program.addCommand(devicesCommand());
  program.addCommand(monitorCommand());
  program.addCommand(agentCommand());
  program.addCommand(keystoreCommand());
  program.addCommand(replayCommand());
  program.addCommand(demoCommand());
  return program;
}

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    // Operator-facing errors carry a stable code and a message meant to be read as is.
    process.stderr.write(`hmd: ${describeError(err)}\n`);
    if (!isHmdError(err) && process.env['HMD_DEBUG']) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
    process.exitCode = 1;
  });
