/**
 * `hmd replay FIXTURE [--remove]`: plugs (or unplugs) a recorded device by running the real udev
 * helper once per event, with the environment udev would give it, so the event reaches the spool
 * exactly as a live one would. For the demo and the tests: these machines have no USB bus.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_SPOOL_DIR, HELPER_INSTALL_PATH } from '../constants.js';
import { addEvents, listFixtures, loadFixture, removeEvents, type Fixture, type FixtureEvent } from '../devices/fixtures.js';
import { ErrorCode, HmdError } from '../errors.js';
import { packageFile } from '../paths.js';
import { spoolName } from '../sources/spool-file.js';

export interface ReplayOptions {
  /** A fixture name, a path to a fixture file, or a loaded fixture. */
  fixture: string | Fixture;
  /** Unplug: the events reversed, children first, with ACTION=remove. */
  remove?: boolean;
  /** Passed to the helper as HMD_SPOOL_DIR; without it the helper uses its default. */
  spoolDir?: string;
  /** The helper to run (default: the repository's udev-rules/hmd-uevent, else the installed one). */
  helperPath?: string;
  /** SEQNUM of the first event (default: see defaultSeqnumStart). */
  seqnumStart?: bigint;
  /** Called after each event was written. */
  onEvent?: (ev: ReplayedEvent) => void;
}

export interface ReplayedEvent {
  action: string;
  devpath: string;
  subsystem: string;
  seqnum: bigint;
  /** The spool file the helper wrote (the daemon may have consumed it already). */
  file: string;
}

export interface ReplayResult {
  files: string[];
  events: ReplayedEvent[];
}

export const defaultHelperPath = (): string => packageFile('udev-rules/hmd-uevent', HELPER_INSTALL_PATH);

const SPOOL_NAME_RE = /^\.?(\d{20})-[a-z]+/;

/**
 * The first SEQNUM of a replay: the wall clock in microseconds (about 1.7e15, 16 digits), and
 * above every SEQNUM already in the spool. A running kernel's SEQNUMs are far smaller, so a
 * replayed event never sorts before a real one; and two replays never share numbers, since
 * each event takes far more than a microsecond. Kept under 2^63 so any reader's integers hold it.
 */
export function defaultSeqnumStart(spoolDir: string, nowUs: bigint = BigInt(Math.floor((performance.timeOrigin + performance.now()) * 1000))): bigint {
  let max = 0n;
  let names: string[] = [];
  try {
    names = readdirSync(spoolDir);
  } catch {
    // A spool not created yet holds nothing to stay above.
  }
  for (const name of names) {
    const m = SPOOL_NAME_RE.exec(name);
    if (m?.[1] !== undefined && BigInt(m[1]) > max) max = BigInt(m[1]);
  }
  return max >= nowUs ? max + 1n : nowUs;
}

/** Runs the helper for one event with udev's environment: the properties, ACTION and SEQNUM. */
function runHelper(helper: string, env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    // cwd "/" and nothing but the event in the environment, as udevd runs its RUN programs.
    const child = spawn(helper, [], { env, cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (err) => reject(new HmdError(ErrorCode.Internal, `cannot run the udev helper ${helper}: ${err.message}`, { cause: err })));
    child.on('close', (code, signal) => {
      // The helper exits 0 even when it could not write (never block udev); it says so on stderr.
      if (code === 0 && stderr === '') resolve();
      else reject(new HmdError(ErrorCode.Internal, `udev helper ${helper} failed (${signal ?? `exit ${code}`}): ${stderr.trim() || 'no message'}`));
    });
  });
}

/** Feeds a fixture's add (or remove) events through the helper, one after the other. */
export async function replayFixture(opts: ReplayOptions): Promise<ReplayResult> {
  const fixture = typeof opts.fixture === 'string' ? loadFixture(opts.fixture) : opts.fixture;
  const events: FixtureEvent[] = opts.remove ? removeEvents(fixture) : addEvents(fixture);
  const helper = opts.helperPath ?? defaultHelperPath();
  const spoolDir = opts.spoolDir ?? DEFAULT_SPOOL_DIR;
  let seqnum = opts.seqnumStart ?? defaultSeqnumStart(spoolDir);
  const done: ReplayedEvent[] = [];
  for (const ev of events) {
    const env: Record<string, string> = { ...ev, SEQNUM: seqnum.toString() };
    if (opts.spoolDir !== undefined) env['HMD_SPOOL_DIR'] = opts.spoolDir;
    await runHelper(helper, env);
    const replayed = { action: ev.ACTION, devpath: ev.DEVPATH, subsystem: ev.SUBSYSTEM, seqnum, file: join(spoolDir, spoolName(seqnum, ev.ACTION)) };
    done.push(replayed);
    opts.onEvent?.(replayed);
    seqnum += 1n;
  }
  return { files: done.map((e) => e.file), events: done };
}

interface ReplayFlags {
  remove?: boolean;
  spoolDir?: string;
  helper?: string;
  seqnumStart?: bigint;
  json?: boolean;
  list?: boolean;
}

const parseSeqnum = (v: string): bigint => {
  if (!/^\d{1,20}$/.test(v) || BigInt(v) === 0n) throw new InvalidArgumentError('a positive integer of at most 20 digits is expected');
  return BigInt(v);
};

export function replayCommand(): Command {
  return new Command('replay')
    .description('plug (or with --remove unplug) a recorded device: run the udev helper for each of its events, into the spool')
    .argument('[fixture]', 'fixture name (see --list) or path to a fixture JSON file')
    .addOption(new Option('--remove', 'replay the removal: children first, ACTION=remove'))
    .addOption(new Option('--spool-dir <dir>', `spool directory, passed to the helper as HMD_SPOOL_DIR (default ${DEFAULT_SPOOL_DIR})`))
    .addOption(new Option('--helper <path>', `udev helper to run (default udev-rules/hmd-uevent of this package, else ${HELPER_INSTALL_PATH})`))
    .addOption(new Option('--seqnum-start <n>', 'SEQNUM of the first event (default: the clock in microseconds, above any file in the spool)').argParser(parseSeqnum))
    .addOption(new Option('--json', 'print the replayed events as JSON on stdout'))
    .addOption(new Option('--list', 'list the fixtures and exit'))
    .action(async (name: string | undefined, flags: ReplayFlags) => {
      if (flags.list) {
        for (const n of listFixtures()) {
          const fx = loadFixture(n);
          process.stdout.write(`${n}\t${fx.events.length} events\t${fx.description}\n`);
        }
        return;
      }
      if (name === undefined) throw new HmdError(ErrorCode.InvalidArgs, `name a fixture (one of: ${listFixtures().join(', ')})`);
      const result = await replayFixture({
        fixture: name,
        remove: flags.remove ?? false,
        ...(flags.spoolDir !== undefined && { spoolDir: flags.spoolDir }),
        ...(flags.helper !== undefined && { helperPath: flags.helper }),
        ...(flags.seqnumStart !== undefined && { seqnumStart: flags.seqnumStart }),
        onEvent: (ev) => process.stderr.write(`replay: ${ev.action} ${ev.subsystem} ${ev.devpath} SEQNUM=${ev.seqnum} -> ${ev.file}\n`),
      });
      if (flags.json) {
        const events = result.events.map((e) => ({ ...e, seqnum: e.seqnum.toString() }));
        process.stdout.write(`${JSON.stringify({ fixture: name, action: flags.remove ? 'remove' : 'add', events })}\n`);
      }
    });
}
