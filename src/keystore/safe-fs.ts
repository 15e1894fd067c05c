/**
 * Filesystem primitives for walking a directory that a container controls, from a root daemon.
 *
 * Node 20 has no `openat()`, and `O_NOFOLLOW` guards only the last component of a path, so a
 * directory swapped for a symlink between two path-based calls would be followed. Every entry
 * is therefore addressed relative to its already-opened parent, through the kernel's magic link
 * `/proc/self/fd/<dirfd>/<name>`: the parent is the object we opened, whatever its path is now.
 */
import { constants as C, type BigIntStats } from 'node:fs';
import { lstat, open, opendir, type FileHandle } from 'node:fs/promises';

/**
 * `O_PATH` (Linux >= 2.6.39; Node does not export it). The value is the same on x86, x86_64,
 * arm and arm64. An `O_PATH` descriptor names an object without opening it: a device node's
 * driver is never called and a FIFO never waits for a writer.
 */
export const O_PATH = 0o10000000;

export const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW | C.O_NONBLOCK;
export const PATH_FLAGS = O_PATH | C.O_NOFOLLOW;
/** Reopening a verified `O_PATH` descriptor for reading; O_NONBLOCK in case it is not what we verified. */
export const REOPEN_READ_FLAGS = C.O_RDONLY | C.O_NONBLOCK | C.O_NOCTTY;

/** The path of `name` inside the directory open as `dir`; `name` is raw bytes (any encoding). */
export function childPath(dir: FileHandle, name: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`/proc/self/fd/${dir.fd}/`), name]);
}

/** The path that reopens the object held by `fh` (not the path it was opened by). */
export function fdPath(fh: FileHandle): string {
  return `/proc/self/fd/${fh.fd}`;
}

/**
 * Names in an open directory, sorted bytewise so snapshots are deterministic. Stops after
 * `cap + 1` names, so a directory stuffed with millions of entries costs no more than that.
 */
export async function listDir(dir: FileHandle, cap = Number.POSITIVE_INFINITY): Promise<Buffer[]> {
  const names: Buffer[] = [];
  // With encoding 'buffer' each name arrives as raw bytes (the typings only know strings).
  for await (const ent of await opendir(fdPath(dir), { encoding: 'buffer' as BufferEncoding, bufferSize: 256 })) {
    names.push(ent.name as unknown as Buffer);
    if (names.length > cap) break;
  }
  return names.sort(Buffer.compare);
}

export function lstatBig(path: Buffer | string): Promise<BigIntStats> {
  return lstat(path, { bigint: true });
}

/** True when both stats describe the same filesystem object of the same type. */
export function sameObject(a: BigIntStats, b: BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino && (a.mode & BigInt(C.S_IFMT)) === (b.mode & BigInt(C.S_IFMT));
}

/** The entry kinds we accept, or the reason we refuse the entry. */
export function classify(st: BigIntStats): 'dir' | 'file' | { reject: string } {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return { reject: 'is a symbolic link' };
  if (st.isFIFO()) return { reject: 'is a FIFO' };
  if (st.isSocket()) return { reject: 'is a socket' };
  if (st.isCharacterDevice()) return { reject: 'is a character device node' };
  if (st.isBlockDevice()) return { reject: 'is a block device node' };
  return { reject: 'is of an unknown file type' };
}

/** Opens a directory without following a symlink at its last component. */
export function openDir(path: string | Buffer): Promise<FileHandle> {
  return open(path, DIR_FLAGS);
}

/** Permission bits we keep and restore: rwx for user, group, other (never setuid/setgid/sticky). */
export function permBits(mode: bigint | number): number {
  return Number(BigInt(mode) & 0o777n);
}

/** A relative path (raw bytes) for humans: UTF-8 with control characters escaped, quoted. */
export function displayPath(rel: Buffer | string): string {
  return JSON.stringify(typeof rel === 'string' ? rel : rel.toString('utf8'));
}
