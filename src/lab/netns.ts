/**
 * Throwaway network namespaces for the scenarios loopback cannot show: a qdisc that delays delivery
 * (scenario 3) and a link that goes down (scenario 8). Every name starts with "ailab" so nothing
 * here can touch another program's namespaces or links, and `teardown()` deletes what was made,
 * which also drops every socket still in it (leftover TIME_WAIT and FIN_WAIT_2 included), and the
 * tbf qdisc on its loopback with it.
 *
 * A run that is killed (Ctrl-C, EPIPE, a crash) may not reach its teardown, so every name also
 * carries the pid of the process that made it (`ailab<pid>x...`): `removeStaleNamespaces()`, at the
 * start of every run, deletes those whose process is gone, and never another live run's. The CLI
 * calls `teardownAll()` on a signal or a closed stdout, and `teardownAllSync()` as the process exits.
 */
import { execFile, execFileSync } from "node:child_process";
import { accessSync, constants, readFileSync, readdirSync } from "node:fs";
import { AddrinuseError } from "../errors.js";

export const NETNS_PREFIX = "ailab";

/** The prefix of every namespace this process makes. */
export function ownPrefix(pid = process.pid): string {
  return `${NETNS_PREFIX}${pid}x`;
}

/** Namespaces made and not yet deleted, across every NamespaceSet of this process. */
const live = new Set<string>();

/** Deletes every namespace this process still has (its sockets and qdiscs go with it). */
export async function teardownAll(): Promise<void> {
  await Promise.all([...live].map((name) => run("ip", ["netns", "del", name]).catch(() => undefined).then(() => live.delete(name))));
}

/** The same, for process.on("exit"), where nothing asynchronous runs any more. */
export function teardownAllSync(): void {
  for (const name of live) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore", timeout: 5000 });
    } catch {
      // already gone
    }
    live.delete(name);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
  // A pid taken over by an unrelated program since: its namespaces are stale too.
  try {
    return /node|addrinuse/.test(readFileSync(`/proc/${pid}/cmdline`, "latin1"));
  } catch {
    return false;
  }
}

/** The lab namespaces on this machine whose process is gone (`ip netns` keeps them in /run/netns). */
export function staleNamespaces(netnsDir = "/run/netns"): string[] {
  let names: string[];
  try {
    names = readdirSync(netnsDir);
  } catch {
    return [];
  }
  const re = new RegExp(`^${NETNS_PREFIX}(\\d+)x`);
  return names.filter((n) => {
    const m = re.exec(n);
    return m !== null && Number(m[1]) !== process.pid && !processAlive(Number(m[1]));
  });
}

/** Deletes what runs that were killed left behind; returns their names. Quietly does nothing when not root. */
export async function removeStaleNamespaces(): Promise<string[]> {
  if (process.platform !== "linux" || process.getuid?.() !== 0) return [];
  const stale = staleNamespaces();
  const removed: string[] = [];
  for (const name of stale) {
    try {
      await run("ip", ["netns", "del", name]);
      removed.push(name);
    } catch {
      // another run removed it first
    }
  }
  return removed;
}

function onPath(bin: string): boolean {
  for (const dir of (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      accessSync(`${dir}/${bin}`, constants.X_OK);
      return true;
    } catch {
      // Not in this directory.
    }
  }
  return false;
}

const probed = new Map<boolean, Promise<string | null>>();

/**
 * Why namespaces (and, with `needTc`, a tbf qdisc in one) cannot be used here, or null when they
 * can: one line, for a skip. Being root is not enough in a container without CAP_NET_ADMIN or on a
 * kernel without sch_tbf, so this makes a namespace and deletes it, once per process.
 */
export function namespaceUnavailable(needTc: boolean): Promise<string | null> {
  let p = probed.get(needTc);
  if (!p) {
    p = probe(needTc);
    probed.set(needTc, p);
  }
  return p;
}

async function probe(needTc: boolean): Promise<string | null> {
  if (process.platform !== "linux") return "network namespaces need Linux";
  if (process.getuid?.() !== 0) return "needs root to create network namespaces (run as root)";
  if (!onPath("ip")) return "needs the `ip` command (Debian package iproute2)";
  if (needTc && !onPath("tc")) return "needs the `tc` command (Debian package iproute2)";
  const name = `${ownPrefix()}probe${needTc ? "t" : ""}`;
  live.add(name);
  try {
    await run("ip", ["netns", "add", name]);
  } catch (e) {
    return `cannot create a network namespace here: ${(e as Error).message}`;
  }
  try {
    if (needTc) await run("tc", ["-n", name, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst", "3000", "limit", "30000"]);
    return null;
  } catch (e) {
    return `cannot add a tbf qdisc in a namespace here: ${(e as Error).message}`;
  } finally {
    await run("ip", ["netns", "del", name]).catch(() => undefined);
    live.delete(name);
  }
}

export function run(cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new AddrinuseError("AIU_LAB", `${cmd} ${args.join(" ")}: ${(stderr || err.message).trim().split("\n")[0]}`));
      else resolve(stdout);
    });
  });
}

/** A set of namespaces made for one scenario run, deleted together. */
export class NamespaceSet {
  private readonly made: string[] = [];

  /** Makes namespace `ailab<pid>x<tag>` with its loopback up; returns its name. */
  async add(tag: string): Promise<string> {
    const name = `${ownPrefix()}${tag}`;
    // Recorded before it exists: a signal during `ip netns add` must still find it.
    this.made.push(name);
    live.add(name);
    await run("ip", ["netns", "add", name]);
    await run("ip", ["-n", name, "link", "set", "lo", "up"]);
    return name;
  }

  /**
   * A veth pair from `a` to `b` with a /30 between them. Link names are kept under the kernel's
   * 15 characters.
   */
  async link(a: string, b: string, tag: string, addrA: string, addrB: string): Promise<{ devA: string; devB: string }> {
    const devA = `${NETNS_PREFIX}${tag}a`.slice(0, 15);
    const devB = `${NETNS_PREFIX}${tag}b`.slice(0, 15);
    await run("ip", ["link", "add", devA, "netns", a, "type", "veth", "peer", "name", devB, "netns", b]);
    await run("ip", ["-n", a, "addr", "add", `${addrA}/30`, "dev", devA]);
    await run("ip", ["-n", b, "addr", "add", `${addrB}/30`, "dev", devB]);
    await run("ip", ["-n", a, "link", "set", devA, "up"]);
    await run("ip", ["-n", b, "link", "set", devB, "up"]);
    return { devA, devB };
  }

  /** Refuses to go on unless traffic from `ns` to `addr` leaves through our own link `dev`. */
  async assertRoute(ns: string, addr: string, dev: string): Promise<void> {
    const out = await run("ip", ["-n", ns, "route", "get", addr]);
    if (!new RegExp(`\\bdev ${dev}\\b`).test(out)) {
      throw new AddrinuseError("AIU_LAB", `in ${ns} the route to ${addr} does not go over ${dev}: ${out.trim()}`);
    }
  }

  async teardown(): Promise<void> {
    for (const name of this.made.splice(0).reverse()) {
      await run("ip", ["netns", "del", name]).catch(() => undefined);
      live.delete(name);
    }
  }
}
