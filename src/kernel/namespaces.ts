/**
 * The network namespaces of this machine and the listeners in them. A socket lives in the namespace
 * it was made in, and a bind only conflicts within one namespace: a server inside a container or
 * under `ip netns exec` does not block the host's port, and the host's table does not show it.
 *
 * Namespaces are found through /proc/PID/ns/net (one per distinct inode, with its processes) and
 * named through the files that pin them: /run/netns/NAME (ip netns) and /run/docker/netns/ID
 * (Docker's sandboxes), whose inode is the namespace's. Another namespace's table is read through
 * /proc/PID/net/tcp{,6} of one of its processes (netlink answers only for our own); a namespace with
 * no process (pinned by a file only) cannot be read that way and is listed without its table.
 */
import { readdirSync, readlinkSync, statSync } from "node:fs";
import { findSocketOwners, readTcpSockets, type SocketOwner } from "./read.js";

export interface NetworkNamespace {
  /** The namespace's inode, as in `net:[INODE]`. */
  inode: number;
  /** `ip netns` names and other pinning files (/run/docker/netns/...), if any. */
  names: string[];
  /** Some of its processes (the first few found). */
  pids: number[];
  own: boolean;
}

const PIN_DIRS = ["/run/netns", "/run/docker/netns", "/var/run/docker/netns"];

function nsInode(link: string | null): number | null {
  const m = link === null ? null : /^net:\[(\d+)\]$/.exec(link);
  return m ? Number(m[1]) : null;
}

function readLink(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

/** Every network namespace we can see, our own first; at most `limit` others. */
export function listNetworkNamespaces(procRoot = "/proc", limit = 1024): NetworkNamespace[] {
  const own = nsInode(readLink(`${procRoot}/self/ns/net`));
  const byInode = new Map<number, NetworkNamespace>();
  const get = (inode: number) => {
    let n = byInode.get(inode);
    if (!n) {
      n = { inode, names: [], pids: [], own: inode === own };
      byInode.set(inode, n);
    }
    return n;
  };
  if (own !== null) get(own);
  let pids: string[] = [];
  try {
    pids = readdirSync(procRoot).filter((p) => p.charCodeAt(0) >= 48 && p.charCodeAt(0) <= 57);
  } catch {
    // no procfs
  }
  for (const p of pids) {
    const inode = nsInode(readLink(`${procRoot}/${p}/ns/net`));
    if (inode === null) continue;
    if (!byInode.has(inode) && byInode.size > limit) continue;
    const n = get(inode);
    if (n.pids.length < 8) n.pids.push(Number(p));
  }
  for (const dir of PIN_DIRS) {
    let files: string[];
    try {
      files = readdirSync(dir);
    } catch {
      continue;
    }
    for (const f of files) {
      try {
        const inode = statSync(`${dir}/${f}`).ino;
        if (!byInode.has(inode) && byInode.size > limit) continue;
        const n = get(inode);
        const name = dir === "/run/netns" ? f : `${dir}/${f}`;
        if (!n.names.includes(name)) n.names.push(name);
      } catch {
        // not a namespace file
      }
    }
  }
  return [...byInode.values()].sort((a, b) => Number(b.own) - Number(a.own));
}

export interface ListenerElsewhere {
  namespace: NetworkNamespace;
  localAddress: string;
  localPort: number;
  state: string;
  inode: number;
  owners: SocketOwner[];
}

export interface ElsewhereScan {
  found: ListenerElsewhere[];
  /** Namespaces whose table was read. */
  looked: number;
  /** Namespaces left unread when the time budget ran out. */
  skipped: number;
}

/**
 * Listening sockets on `port` in every other namespace that has a process to read through, within a
 * time budget: each /proc/PID/net/tcp read walks the kernel's whole established hash (shared by all
 * namespaces; ~5-15 ms here), so a machine with hundreds of namespaces is read newest first (most
 * likely the one just started) until the budget is spent, and the rest are counted.
 */
export function listenersElsewhere(port: number, namespaces: readonly NetworkNamespace[], budgetMs = 500, procRoot = "/proc"): ElsewhereScan {
  const found: ListenerElsewhere[] = [];
  const deadline = performance.now() + budgetMs;
  let looked = 0;
  let skipped = 0;
  const order = namespaces.filter((n) => !n.own && n.pids.length > 0).sort((a, b) => b.inode - a.inode);
  for (const ns of order) {
    if (performance.now() > deadline) {
      skipped++;
      continue;
    }
    looked++;
    let rows;
    try {
      rows = readTcpSockets({ procRoot: `${procRoot}/${ns.pids[0]}`, localPort: port });
    } catch {
      continue; // the process left, or we may not read it
    }
    for (const r of rows) {
      if (r.state !== "LISTEN") continue;
      found.push({ namespace: ns, localAddress: r.localAddress, localPort: r.localPort, state: r.state, inode: r.inode, owners: [] });
    }
  }
  if (found.length) {
    const { owners } = findSocketOwners(found.map((f) => f.inode), procRoot);
    for (const f of found) f.owners = owners.get(f.inode) ?? [];
  }
  return { found, looked, skipped };
}
