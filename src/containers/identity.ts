import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { RemoteError, type BusConnection } from '../bus/types.js';
import { describeError, errnoCode } from '../errors.js';
import { CONTAINER_ID_RE } from '../constants.js';
import type { Logger } from '../log.js';

export type Runtime = 'docker' | 'podman' | 'containerd';

export type CgroupVerdict = { kind: 'container'; cid: string } | { kind: 'none' } | { kind: 'ambiguous'; cids: string[] };

export type Identity =
  | { kind: 'container'; cid: string; pid: number; uid: number; via: 'cgroup' | 'uidmap' }
  | { kind: 'unknown'; reason: string; pid?: number; uid?: number };

/*
 * Where each runtime puts its containers, as seen from the host's cgroup root. Every pattern is
 * anchored at the start of the path: an unprivileged user can create cgroups inside a delegated
 * subtree (`/user.slice/…/user@1000.service/…`), so a `docker-<cid>.scope` found further down is
 * no proof of anything. Anchoring also makes nested runtimes (docker-in-docker) resolve to the
 * outermost container, the one the host knows; anything after the container's own component
 * (`/init.scope`, `/docker/<inner>`) is the container's business and is ignored.
 */
const CID = '([0-9a-f]{64})';
const END = '(?:/|$)';
const PATTERNS: Record<Runtime, readonly RegExp[]> = {
  docker: [
    new RegExp(`^/docker/${CID}${END}`), // cgroupfs driver, v1 and v2
    new RegExp(`^/system\\.slice/docker-${CID}\\.scope${END}`), // systemd driver, v1 and v2
  ],
  podman: [
    new RegExp(`^/machine\\.slice/libpod-${CID}\\.scope${END}`), // rootful, systemd driver
    new RegExp(`^/libpod_parent/libpod-${CID}${END}`), // rootful, cgroupfs driver
  ],
  containerd: [
    // Kubernetes: pod and QoS slices in between; the first cri-containerd component decides.
    new RegExp(`^/kubepods(?:\\.slice)?(?:/(?!cri-containerd-)[^/]+)*?/cri-containerd-${CID}\\.scope${END}`),
    new RegExp(`^/system\\.slice/cri-containerd-${CID}\\.scope${END}`),
  ],
};

/** `hierarchy-ID:controller-list:path`; the path may itself contain colons. */
const LINE_RE = /^(\d+):([^:]*):(\/.*)$/;

/**
 * A cgroup path given to Docker's `--cgroup-parent`, as it shows in /proc/PID/cgroup: absolute,
 * plain components, and outside delegated subtrees (`/user.slice`), where anyone could make one.
 */
export const CGROUP_PARENT_RE = /^(?:\/(?!user\.slice(?:\/|$))(?!\.\.?(?:\/|$))[A-Za-z0-9_.@:-]+)+$/;

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The patterns for these runtimes, plus Docker containers under the configured parents (checked
 * against CGROUP_PARENT_RE by the caller): the cgroupfs driver puts them at `<parent>/<cid>`,
 * the systemd driver at `<parent>/docker-<cid>.scope`.
 */
export function cgroupPatterns(runtimes: readonly Runtime[], dockerParents: readonly string[] = []): RegExp[] {
  const out = runtimes.flatMap((r) => PATTERNS[r]);
  for (const parent of dockerParents) {
    const p = escapeRe(parent);
    out.push(new RegExp(`^${p}/${CID}${END}`), new RegExp(`^${p}/docker-${CID}\\.scope${END}`));
  }
  return out;
}

function containerOfLine(line: string, patterns: readonly RegExp[]): string | undefined {
  const m = LINE_RE.exec(line);
  if (!m) return undefined;
  const [, id, controllers, path] = m;
  // v2 is exactly `0::path`; a v1 line always names its controllers (or `name=…`).
  if ((id === '0') !== (controllers === '')) return undefined;
  for (const re of patterns) {
    const hit = re.exec(path ?? '');
    if (hit?.[1] !== undefined) return hit[1];
  }
  return undefined;
}

/**
 * The rule of DESIGN Part B: any line (v1 controller line or v2 `0::` line) naming a container
 * counts; lines naming none are ignored; two different containers → ambiguous (caller unknown).
 */
export function containerFromCgroup(text: string, patterns: readonly RegExp[]): CgroupVerdict {
  const cids = new Set<string>();
  for (const line of text.split('\n')) {
    const cid = containerOfLine(line, patterns);
    if (cid !== undefined) cids.add(cid);
  }
  const [first, ...rest] = [...cids];
  if (first === undefined) return { kind: 'none' };
  if (rest.length > 0) return { kind: 'ambiguous', cids: [first, ...rest].sort() };
  return { kind: 'container', cid: first };
}

/** Upper bound for /proc/PID/cgroup: a real one is a few hundred bytes even with many controllers. */
export const CGROUP_READ_LIMIT = 64 * 1024;
const DEFAULT_CACHE_LIMIT = 4096;
const NAME_HAS_NO_OWNER = 'org.freedesktop.DBus.Error.NameHasNoOwner';

const optionsSchema = z.object({
  procRoot: z.string().min(1).default('/proc'),
  runtimes: z.array(z.enum(['docker', 'podman', 'containerd'])).min(1),
  uidMap: z.record(z.string().regex(/^(0|[1-9][0-9]*)$/, 'a decimal uid'), z.string().regex(CONTAINER_ID_RE, 'a 64-hex container ID')),
  dockerCgroupParents: z.array(z.string().regex(CGROUP_PARENT_RE)).default([]),
  cacheLimit: z.number().int().positive().default(DEFAULT_CACHE_LIMIT),
});

const credentialsSchema = z.object({ pid: z.number().int().positive(), uid: z.number().int().nonnegative() });

export interface CallerIdentifierOptions {
  bus: Pick<BusConnection, 'getCredentials'>;
  procRoot?: string;
  runtimes: readonly Runtime[];
  uidMap: Record<string, string>;
  /** Docker `--cgroup-parent` paths whose children are containers too. */
  dockerCgroupParents?: readonly string[];
  logger: Logger;
  cacheLimit?: number;
}

/** A lookup's result and whether it may be remembered for the rest of the name's life. */
interface Outcome {
  identity: Identity;
  cacheable: boolean;
}

interface Slot {
  promise: Promise<Identity>;
}

class CgroupTooLarge extends Error {}

/** Reads at most `limit` bytes; /proc files report size 0, so read until EOF. */
async function readBounded(path: string, limit: number): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(limit + 1);
    let len = 0;
    while (len < buf.length) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, null);
      if (bytesRead === 0) break;
      len += bytesRead;
    }
    if (len > limit) throw new CgroupTooLarge(`${path} is larger than ${limit} bytes`);
    return buf.toString('utf8', 0, len);
  } finally {
    await fh.close();
  }
}

/**
 * Turns a D-Bus sender into the container it runs in: GetConnectionCredentials → PID and UID →
 * /proc/PID/cgroup (and the configured UID map) → container ID. The answer is cached per unique
 * name at first sight: a PID can be reused after its process dies, a unique name never is.
 *
 * Residual race: between the bus stamping the PID and us reading /proc/PID/cgroup the process
 * could die and its PID be reused. The service reads the credentials while the caller waits for
 * its reply, which makes this window tiny; closing it needs the bus's ProcessFD (dbus ≥ 1.15).
 */
export class CallerIdentifier {
  private readonly bus: Pick<BusConnection, 'getCredentials'>;
  private readonly log: Logger;
  private readonly procRoot: string;
  private readonly patterns: readonly RegExp[];
  private readonly uidMap: ReadonlyMap<number, string>;
  private readonly cacheLimit: number;
  /** Insertion order is recency order: a hit is moved to the end, the front is evicted. */
  private readonly cache = new Map<string, Slot>();

  constructor(opts: CallerIdentifierOptions) {
    const o = optionsSchema.parse({ procRoot: opts.procRoot, runtimes: opts.runtimes, uidMap: opts.uidMap, dockerCgroupParents: opts.dockerCgroupParents, cacheLimit: opts.cacheLimit });
    this.bus = opts.bus;
    this.log = opts.logger.child({ component: 'identity' });
    this.procRoot = o.procRoot;
    this.patterns = cgroupPatterns(o.runtimes, o.dockerCgroupParents);
    this.uidMap = new Map(Object.entries(o.uidMap).map(([uid, cid]) => [Number(uid), cid]));
    this.cacheLimit = o.cacheLimit;
  }

  /** Sender unique name → identity. Never throws; concurrent calls for one sender share a lookup. */
  identify(sender: string): Promise<Identity> {
    const hit = this.cache.get(sender);
    if (hit) {
      this.cache.delete(sender);
      this.cache.set(sender, hit);
      return hit.promise;
    }
    const slot: Slot = {
      promise: this.lookup(sender).then(({ identity, cacheable }) => {
        // `forget()` may have run meanwhile: only drop our own slot, never a newer one.
        if (!cacheable && this.cache.get(sender) === slot) this.cache.delete(sender);
        return identity;
      }),
    };
    this.cache.set(sender, slot);
    for (const oldest of this.cache.keys()) {
      if (this.cache.size <= this.cacheLimit) break;
      this.cache.delete(oldest);
    }
    return slot.promise;
  }

  /** The unique name left the bus: its identity will never be asked for again. */
  forget(sender: string): void {
    this.cache.delete(sender);
  }

  /** Number of remembered senders (for status and tests). */
  get size(): number {
    return this.cache.size;
  }

  private async lookup(sender: string): Promise<Outcome> {
    try {
      return await this.resolve(sender);
    } catch (err) {
      // resolve() handles every expected failure; this is a bug guard, so don't cache it.
      this.log.error({ sender, err: describeError(err) }, 'caller identification failed unexpectedly');
      return { identity: { kind: 'unknown', reason: `internal error: ${describeError(err)}` }, cacheable: false };
    }
  }

  private async resolve(sender: string): Promise<Outcome> {
    let pid: number;
    let uid: number;
    try {
      const creds = credentialsSchema.safeParse(await this.bus.getCredentials(sender));
      if (!creds.success) {
        const reason = `the bus gave no usable PID/UID for ${sender}`;
        this.log.warn({ sender, reason }, 'caller not identified');
        return { identity: { kind: 'unknown', reason }, cacheable: false };
      }
      ({ pid, uid } = creds.data);
    } catch (err) {
      // A name without owner has left the bus for good (unique names are never reused), so
      // remembering that is safe; any other failure (timeout, bus hiccup) may pass.
      const gone = err instanceof RemoteError && err.dbusName === NAME_HAS_NO_OWNER;
      const reason = gone ? `caller ${sender} left the bus before it could be identified` : `cannot get the credentials of ${sender}: ${describeError(err)}`;
      this.log.warn({ sender, reason }, 'caller not identified');
      return { identity: { kind: 'unknown', reason }, cacheable: gone };
    }

    const path = join(this.procRoot, String(pid), 'cgroup');
    let text: string;
    try {
      text = await readBounded(path, CGROUP_READ_LIMIT);
    } catch (err) {
      const code = errnoCode(err);
      // ENOENT/ESRCH: the process that opened the connection is dead. Cache that: reading the
      // same PID later could only find an unrelated process that reused it. EACCES, EPERM and
      // the rest say nothing about the caller and may pass (permissions fixed, fd pressure).
      const dead = code === 'ENOENT' || code === 'ESRCH';
      const tooLarge = err instanceof CgroupTooLarge;
      const reason = dead
        ? `process ${pid} of ${sender} is gone (${path}: ${code})`
        : tooLarge
          ? `cannot use ${path}: ${err.message}`
          : `cannot read ${path}: ${code ?? describeError(err)}`;
      this.log.warn({ sender, pid, uid, reason }, 'caller not identified');
      return { identity: { kind: 'unknown', reason, pid, uid }, cacheable: dead || tooLarge };
    }

    return { identity: this.decide(sender, pid, uid, containerFromCgroup(text, this.patterns)), cacheable: true };
  }

  /** Combines the cgroup verdict with the UID map; the cgroup wins, disagreement is suspicious. */
  private decide(sender: string, pid: number, uid: number, verdict: CgroupVerdict): Identity {
    const mapped = this.uidMap.get(uid);
    const unknown = (reason: string, level: 'info' | 'warn'): Identity => {
      this.log[level]({ sender, pid, uid, reason }, 'caller not identified');
      return { kind: 'unknown', reason, pid, uid };
    };
    const found = (cid: string, via: 'cgroup' | 'uidmap'): Identity => {
      this.log.info({ sender, pid, uid, cid, via }, 'caller identified');
      return { kind: 'container', cid, pid, uid, via };
    };
    switch (verdict.kind) {
      case 'ambiguous':
        return unknown(`process ${pid} is in the cgroups of several containers: ${verdict.cids.join(', ')}`, 'warn');
      case 'container':
        if (mapped !== undefined && mapped !== verdict.cid) {
          return unknown(`process ${pid} is in container ${verdict.cid} but uid ${uid} is mapped to ${mapped}`, 'warn');
        }
        return found(verdict.cid, 'cgroup');
      case 'none':
        if (mapped !== undefined) return found(mapped, 'uidmap');
        return unknown(`process ${pid} (uid ${uid}) is not in a container`, 'info');
    }
  }
}
