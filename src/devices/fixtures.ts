/**
 * Recorded hub devices (fixtures/<name>.json): the udev "add" events a device's insertion
 * produces, parent first. Tests, benchmarks and `hmd replay` feed them through the real udev
 * helper, since the machines this runs on for tests have no USB bus.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { ErrorCode, HmdError } from '../errors.js';
import { packageRoot } from '../paths.js';

/** One uevent of a fixture: udev's properties, with ACTION, DEVPATH and SUBSYSTEM always set. */
export interface FixtureEvent {
  readonly [key: string]: string;
  readonly ACTION: 'add' | 'remove';
  readonly DEVPATH: string;
  readonly SUBSYSTEM: string;
}

export interface Fixture {
  name: string;
  description: string;
  /** The add events in the kernel's order, parent first. */
  events: readonly FixtureEvent[];
  /** Where it was loaded from. */
  file: string;
}

const NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;
const KEY_RE = /^[A-Za-z0-9_.-]+$/;

const eventSchema = z
  .record(z.string().regex(KEY_RE, { error: 'property name not of [A-Za-z0-9_.-]' }), z.string())
  .superRefine((ev, ctx) => {
    if (ev['ACTION'] !== 'add') ctx.addIssue({ code: 'custom', message: 'ACTION must be "add" (removes are computed)' });
    if (!ev['DEVPATH']?.startsWith('/devices/')) ctx.addIssue({ code: 'custom', message: 'DEVPATH must start with /devices/' });
    if (!ev['SUBSYSTEM']) ctx.addIssue({ code: 'custom', message: 'SUBSYSTEM missing' });
    // Replay assigns SEQNUMs; HMD_ is the daemon's namespace and never comes from udev.
    for (const key of Object.keys(ev)) {
      if (key === 'SEQNUM' || key.startsWith('HMD_')) ctx.addIssue({ code: 'custom', message: `${key} must not be recorded` });
    }
  });

const fixtureSchema = z
  .object({
    name: z.string().regex(NAME_RE),
    description: z.string().min(1),
    events: z.array(eventSchema).min(1),
  })
  .strict()
  .superRefine((fx, ctx) => {
    const seen = new Set<string>();
    fx.events.forEach((ev, i) => {
      const devpath = ev['DEVPATH'] ?? '';
      if (seen.has(devpath)) ctx.addIssue({ code: 'custom', path: ['events', i], message: `DEVPATH ${devpath} listed twice` });
      seen.add(devpath);
      // Parent first: no later event may be an ancestor of this one.
      const parent = fx.events.slice(i + 1).find((later) => devpath.startsWith(`${later['DEVPATH'] ?? ''}/`));
      if (parent !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['events', i], message: `${devpath} comes before its parent ${parent['DEVPATH'] ?? ''}` });
      }
    });
  });

/** fixtures/ of the repository or installed package (found from this module: src/ or dist/). */
export function fixturesDir(): string {
  return join(packageRoot(), 'fixtures');
}

/** Names of the fixtures shipped in fixtures/, sorted. */
export function listFixtures(): string[] {
  return readdirSync(fixturesDir())
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .sort();
}

/** A fixture by name (`ftdi-ft232r`) or by path to its JSON file; validated. */
export function loadFixture(nameOrPath: string): Fixture {
  const isPath = nameOrPath.includes('/') || nameOrPath.endsWith('.json');
  if (!isPath && !NAME_RE.test(nameOrPath)) throw new HmdError(ErrorCode.InvalidArgs, `invalid fixture name ${JSON.stringify(nameOrPath)}`);
  const file = isPath ? resolve(nameOrPath) : join(fixturesDir(), `${nameOrPath}.json`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const known = isPath ? '' : ` (known: ${listFixtures().join(', ')})`;
    throw new HmdError(ErrorCode.InvalidArgs, `cannot read fixture ${file}${known}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new HmdError(ErrorCode.InvalidArgs, `fixture ${file} is not JSON`, { cause: err });
  }
  const parsed = fixtureSchema.safeParse(json);
  if (!parsed.success) {
    throw new HmdError(ErrorCode.InvalidArgs, `fixture ${file} is invalid: ${z.prettifyError(parsed.error)}`);
  }
  // The schema checked ACTION, DEVPATH and SUBSYSTEM of every event: the cast only names that.
  return { ...parsed.data, events: parsed.data.events as unknown as FixtureEvent[], file };
}

/** The insertion: the fixture's events in order, parent first (copies). */
export function addEvents(fixture: Fixture): FixtureEvent[] {
  return fixture.events.map((ev) => ({ ...ev, ACTION: 'add' }));
}

/**
 * The removal: children first, ACTION=remove, the same properties. The kernel removes a subtree
 * bottom-up, and udev hands a remove the properties it stored at the add.
 */
export function removeEvents(fixture: Fixture): FixtureEvent[] {
  return fixture.events.map((ev) => ({ ...ev, ACTION: 'remove' as const })).reverse();
}
