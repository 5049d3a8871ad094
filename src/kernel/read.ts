/**
 * Reads the kernel's TCP table for this process's network namespace and names the processes that
 * own its sockets.
 *
 * Two readers give the same records: procfs text (/proc/net/tcp{,6}, parse.ts), synchronous and
 * always there, and netlink sock_diag (inet-diag.ts, netlink.ts), which is what ss uses and costs
 * the kernel a fraction of printing text, but is asynchronous and needs the optional `netlink`
 * package. The *Async functions take netlink when it works and procfs otherwise.
 *
 * Ownership is not in /proc/net/tcp: a row carries only a socket inode. The owners are found the way
 * lsof and ss -p do it, by reading every /proc/PID/fd/* link and matching "socket:[INODE]". That walk
 * is the costly part on a busy machine, so it runs only for the inodes asked about and stops as soon
 * as every one is found. Processes we may not look into (another user's, when not root) are counted
 * and reported, never fatal.
 */
import { closeSync, openSync, readFileSync, readSync, readdirSync, readlinkSync } from "node:fs";
import { endianness } from "node:os";
import { NotLinuxError } from "../errors.js";
import { parseTcpTable, type PortFilter, type TcpSocket } from "./parse.js";
import { readTcpSocketsNetlink } from "./netlink.js";
import type { OmittedSockets } from "./inet-diag.js";

export type { OmittedSockets } from "./inet-diag.js";
export type { PortFilter } from "./parse.js";

/** Which reader produced a table. */
export type TableSource = "netlink" | "procfs";

export interface SocketOwner {
  pid: number;
  command: string;
  uid: number | null;
  user: string | null;
}

export interface OwnedSocket extends TcpSocket {
  owners: SocketOwner[];
}

export interface TableReadOptions {
  /** Keep only rows whose local port is this one (filtered before full parsing). */
  localPort?: number;
  /**
   * Keep only rows whose local or remote port is in the given range (see PortFilter): filtered by
   * the kernel over netlink, before full parsing over procfs.
   */
  ports?: PortFilter;
  /** Look up owning processes (costs a walk of /proc/*\/fd). Default true. */
  owners?: boolean;
  /**
   * Where procfs is mounted; tests and containers may point elsewhere. `/proc/PID` reads the table of
   * that process's network namespace, which only procfs can: netlink answers for our own.
   */
  procRoot?: string;
  /**
   * For the *Async readers: "auto" (default) is netlink when it works here, procfs when it does not
   * (package not installed or not loadable, not Linux, the kernel refuses); naming one reader forces
   * it and its errors.
   */
  source?: "auto" | TableSource;
  /**
   * Keep at most this many sockets that no process owns (inode 0, not listening) per state, local
   * address and port, and count the rest in `omitted`, for callers that show a sample and totals.
   * Only the netlink reader summarises; procfs returns every row. Unset: every row.
   */
  ownerlessSample?: number;
  /** Bit mask of states to ask netlink for (see inet-diag.ts); procfs always gives its own set. */
  states?: number;
}

export interface TableSnapshot {
  sockets: OwnedSocket[];
  /** Processes whose fd tables could not be read (usually: not root). */
  unreadableProcesses: number;
  /** Whether the walk looked at all processes; false on a permission problem means owners may be missing. */
  ownersComplete: boolean;
  source: TableSource;
  /** Sockets counted rather than returned (see TableReadOptions.ownerlessSample). */
  omitted: OmittedSockets[];
  /** IPV6_V6ONLY by inode for owned AF_INET6 sockets; null when the reader cannot tell (procfs). */
  v6only: Map<number, boolean> | null;
}

export function assertLinux(what: string): void {
  if (process.platform !== "linux") throw new NotLinuxError(what);
}

// procfs files report size 0 and the kernel hands out /proc/net/tcp about 4 KiB per read(), so
// readFileSync allocates a fresh 64 KiB chunk per read and concatenates them: at 50,000 sockets that
// was 2,600 chunks and most of the garbage collector's work. One buffer, grown by doubling and kept
// for the next read, costs one copy per doubling instead.
let readBuffer = Buffer.allocUnsafe(1 << 16);

function readText(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    // tcp6 is absent on kernels without IPv6; that is an empty table, not an error.
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw e;
  }
  try {
    let length = 0;
    for (;;) {
      if (readBuffer.length - length < 8192) {
        const bigger = Buffer.allocUnsafe(readBuffer.length * 2);
        readBuffer.copy(bigger, 0, 0, length);
        readBuffer = bigger;
      }
      const n = readSync(fd, readBuffer, length, readBuffer.length - length, null);
      if (n === 0) break;
      length += n;
    }
    return readBuffer.toString("latin1", 0, length);
  } finally {
    closeSync(fd);
  }
}

/**
 * The raw rows, no owners. Each file costs a walk of the kernel's whole established hash (about 15 ms
 * with 262,144 buckets, however few sockets there are), so a caller that needs one family asks for it.
 */
export function readTcpSockets(
  options: Pick<TableReadOptions, "localPort" | "ports" | "procRoot"> & { family?: 4 | 6 } = {},
): TcpSocket[] {
  const root = options.procRoot ?? "/proc";
  const endian = endianness();
  const rows = options.family === 6 ? [] : parseTcpTable(readText(`${root}/net/tcp`), 4, endian, options.localPort, options.ports);
  if (options.family !== 4) {
    for (const r of parseTcpTable(readText(`${root}/net/tcp6`), 6, endian, options.localPort, options.ports)) rows.push(r);
  }
  return rows;
}

/**
 * A reader named by the user (the CLI's ADDRINUSE_TABLE=procfs or =netlink, to compare them or to
 * step around one); anything else is "auto". The addrinuse CLI refuses other values first
 * (tableSourceProblem), so that a typo does not silently compare a reader with itself.
 */
export function tableSourceNamed(name: string | undefined): "auto" | TableSource {
  return name === "procfs" || name === "netlink" ? name : "auto";
}

/** Why ADDRINUSE_TABLE's value cannot be used, or undefined when it can (unset, empty, auto, procfs, netlink). */
export function tableSourceProblem(name: string | undefined): string | undefined {
  if (name === undefined || name === "" || name === "auto" || name === "procfs" || name === "netlink") return undefined;
  return `bad ADDRINUSE_TABLE '${name.replace(/[^\x20-\x7e]/g, "?").slice(0, 40)}': expected procfs, netlink or auto`;
}

export type SocketReadOptions = Pick<TableReadOptions, "localPort" | "ports" | "procRoot" | "source" | "ownerlessSample" | "states"> & {
  family?: 4 | 6;
};

/**
 * The same rows as readTcpSockets, over netlink when it can (see TableReadOptions.source), and which
 * reader gave them.
 */
export async function readTcpSocketsAsync(
  options: SocketReadOptions = {},
): Promise<{ rows: TcpSocket[]; omitted: OmittedSockets[]; source: TableSource; v6only?: Map<number, boolean> }> {
  const source = options.source ?? "auto";
  const ownNamespace = options.procRoot === undefined || options.procRoot === "/proc";
  if (source === "netlink" || (source === "auto" && ownNamespace)) {
    try {
      return { ...(await readTcpSocketsNetlink(options)), source: "netlink" };
    } catch (e) {
      if (source === "netlink") throw e;
    }
  }
  return { rows: readTcpSockets(options), omitted: [], source: "procfs" };
}

let passwdCache: Map<number, string> | undefined;
function userName(uid: number): string | null {
  if (!passwdCache) {
    passwdCache = new Map();
    try {
      for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
        const f = line.split(":");
        if (f.length > 2) passwdCache.set(Number(f[2]), f[0]!);
      }
    } catch {
      // No passwd file (minimal containers): users are shown by uid.
    }
  }
  return passwdCache.get(uid) ?? null;
}

function processInfo(root: string, pid: number): SocketOwner {
  let command = "";
  try {
    command = readFileSync(`${root}/${pid}/cmdline`, "latin1").replace(/\0+$/, "").replace(/\0/g, " ");
  } catch {
    // Process exited between the fd walk and now.
  }
  let uid: number | null = null;
  try {
    const status = readFileSync(`${root}/${pid}/status`, "latin1");
    const m = /^Uid:\s+(\d+)/m.exec(status);
    if (m) uid = Number(m[1]);
    if (!command) {
      const n = /^Name:\s+(.*)$/m.exec(status);
      if (n) command = `[${n[1]}]`;
    }
  } catch {
    // As above.
  }
  return { pid, command, uid, user: uid === null ? null : (userName(uid) ?? String(uid)) };
}

function netnsOf(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null; // another user's process when not root, or gone
  }
}

/** Finds the processes holding each inode. Stops walking once all are found. */
export function findSocketOwners(
  inodes: Iterable<number>,
  procRoot = "/proc",
): { owners: Map<number, SocketOwner[]>; unreadable: number } {
  const wanted = new Set<number>();
  for (const i of inodes) if (i !== 0) wanted.add(i);
  const owners = new Map<number, SocketOwner[]>();
  let unreadable = 0;
  if (wanted.size === 0) return { owners, unreadable };
  const remaining = new Set(wanted);
  const infoCache = new Map<number, SocketOwner>();
  let pids: string[];
  try {
    pids = readdirSync(procRoot).filter((n) => n.charCodeAt(0) >= 48 && n.charCodeAt(0) <= 57);
  } catch {
    return { owners, unreadable: 1 };
  }
  const visit = (p: string) => {
    const pid = Number(p);
    let fds: string[];
    try {
      fds = readdirSync(`${procRoot}/${p}/fd`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EACCES" || code === "EPERM") unreadable++;
      return; // ENOENT: the process exited while we looked.
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`${procRoot}/${p}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!link.startsWith("socket:[")) continue;
      const inode = Number(link.slice(8, -1));
      if (!wanted.has(inode)) continue;
      let info = infoCache.get(pid);
      if (!info) {
        info = processInfo(procRoot, pid);
        infoCache.set(pid, info);
      }
      const list = owners.get(inode) ?? [];
      if (!list.some((o) => o.pid === pid)) list.push(info);
      owners.set(inode, list);
      remaining.delete(inode);
    }
  };
  // A socket sits in the table of the network namespace it was made in, and the processes holding it
  // are nearly always in that namespace too (fd passing and setns() are the exceptions). So processes
  // in other namespaces wait for a second pass: under `ip netns exec` or in a container that shares
  // the host's pids, one readlink each instead of every fd of every process on the machine. Where
  // everything shares one namespace this costs one readlink per process visited.
  const mine = netnsOf(`${procRoot}/self/ns/net`);
  const elsewhere: string[] = [];
  for (const p of pids) {
    if (mine !== null && netnsOf(`${procRoot}/${p}/ns/net`) !== mine) {
      elsewhere.push(p);
      continue;
    }
    visit(p);
    // Sockets can be shared across fork(), so one owner found is not all owners; but once every inode
    // has some owner the user already has a name to act on, and the walk is the slow part.
    if (remaining.size === 0) return { owners, unreadable };
  }
  for (const p of elsewhere) {
    visit(p);
    if (remaining.size === 0) break;
  }
  return { owners, unreadable };
}

// Shared by every row without an owner (all TIME_WAIT rows): one array instead of 50,000. Frozen, so a
// caller that tried to add to it would fail loudly rather than give every row that owner.
const NO_OWNERS = Object.freeze([]) as unknown as SocketOwner[];

export function readTcpTable(options: TableReadOptions = {}): TableSnapshot {
  assertLinux("addrinuse");
  return withOwners(readTcpSockets(options), [], "procfs", options, null);
}

/** readTcpTable over netlink when it can (see TableReadOptions.source). */
export async function readTcpTableAsync(options: TableReadOptions = {}): Promise<TableSnapshot> {
  assertLinux("addrinuse");
  const { rows, omitted, source, v6only } = await readTcpSocketsAsync(options);
  return withOwners(rows, omitted, source, options, v6only ?? null);
}

function withOwners(
  rows: TcpSocket[],
  omitted: OmittedSockets[],
  source: TableSource,
  options: TableReadOptions,
  v6only: Map<number, boolean> | null,
): TableSnapshot {
  // The rows are fresh objects of one shape: adding `owners` in place is one hidden-class transition,
  // where a spread copy per row cost as much as the parse at 50,000 rows.
  const sockets = rows as OwnedSocket[];
  const wantOwners = options.owners ?? true;
  if (!wantOwners) {
    for (const s of sockets) s.owners = NO_OWNERS;
    return { sockets, unreadableProcesses: 0, ownersComplete: false, source, omitted, v6only };
  }
  const inodes: number[] = [];
  for (const s of sockets) if (s.inode !== 0) inodes.push(s.inode);
  const { owners, unreadable } = findSocketOwners(inodes, options.procRoot);
  for (const s of sockets) s.owners = s.inode === 0 ? NO_OWNERS : (owners.get(s.inode) ?? NO_OWNERS);
  return { sockets, unreadableProcesses: unreadable, ownersComplete: unreadable === 0, source, omitted, v6only };
}

/**
 * The inodes of the sockets one process holds, from its /proc/PID/fd links ("socket:[INODE]"), to
 * find its rows in the TCP table. Empty when the process is gone or not ours to look into.
 */
export function socketInodesOf(pid: number, procRoot = "/proc"): Set<number> {
  const dir = `${procRoot}/${pid}/fd`;
  let fds: string[];
  try {
    fds = readdirSync(dir);
  } catch {
    return new Set();
  }
  const inodes = new Set<number>();
  for (const fd of fds) {
    let link = "";
    try {
      link = readlinkSync(`${dir}/${fd}`);
    } catch {
      // the fd closed meanwhile
    }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(Number(m[1]));
  }
  return inodes;
}

/**
 * The least round trip the kernel has seen (tcpi_min_rtt) on this process's established connection
 * from `localPort` to `remotePort`, in milliseconds, or null when netlink is unavailable or the
 * socket is not in the table. The kernel times ACKs as they come, so a busy event loop does not
 * inflate it the way a round trip timed in JavaScript would be (a connect on the testbed timed in
 * JavaScript took 3.4 ms; the kernel's least was 0.02 ms).
 */
export async function tcpRoundTripMs(localPort: number, remotePort: number): Promise<number | null> {
  try {
    const { rows, minRttUs } = await readTcpSocketsNetlink({ localPort, states: 1 << 1, roundTrip: true });
    const row = rows.find((r) => r.remotePort === remotePort && r.state === "ESTABLISHED");
    const us = row ? minRttUs.get(row) : undefined;
    return us === undefined ? null : us / 1000;
  } catch {
    return null;
  }
}
