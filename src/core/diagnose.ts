/**
 * Why a port cannot be bound, in the note's words. Pure: the caller brings the kernel rows for the
 * port and the outcome of a real bind attempt; this decides which case it is and what to do.
 *
 * Cases (from "Bind: Address Already in Use"):
 *  - a live listener on an overlapping address: someone is serving there;
 *  - a more specific address over a wildcard, or the wildcard over specific ones: Linux refuses both
 *    directions for listeners, which is what stops the hijack the note describes;
 *  - only TIME_WAIT: the side that closed first keeps the 4-tuple for 60 s; a server with
 *    SO_REUSEADDR (every Node server) may bind anyway, a program without it may not;
 *  - orphaned FIN_WAIT_1/FIN_WAIT_2/CLOSING/LAST_ACK with no listener: connections left over from a
 *    closed server (the note's listening-socket case), which the kernel finishes on its own;
 *  - the port is the local end of a live connection someone else opened.
 */
import { addressesOverlap, formatEndpoint, isWildcard, unmapV4 } from "./address.js";

export interface SocketRow {
  family: 4 | 6;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  state: string;
  timer: string;
  timerMs: number;
  inode: number;
  owners: { pid: number; command: string; user: string | null }[];
}

export type BindOutcome =
  | { ok: true }
  | { ok: false; errno: string; message: string };

export type DiagnosisKind =
  | "free"
  | "listener"
  | "wildcard-over-specific"
  | "specific-over-wildcard"
  | "time-wait"
  | "closing-orphans"
  | "outgoing"
  | "permission"
  | "unknown";

export interface StateGroup {
  state: string;
  count: number;
  /** Longest time left on the kernel timer among the group, ms (TIME_WAIT, FIN_WAIT_2, ...). */
  longestTimerMs: number | null;
  /** The listed sockets: all `count` of them unless the caller passed some as OmittedRows. */
  sockets: SocketRow[];
}

export interface Diagnosis {
  port: number;
  host: string;
  bindable: boolean;
  /** What a program that does not set SO_REUSEADDR would get. */
  withoutReuseAddr: "ok" | "EADDRINUSE";
  kinds: DiagnosisKind[];
  groups: StateGroup[];
  /** Plain-words explanation and remedies, one paragraph per item. */
  advice: string[];
}

const CLOSING_STATES = new Set(["FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "LAST_ACK"]);
const STATE_ORDER = [
  "LISTEN",
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "NEW_SYN_RECV",
  "CLOSE_WAIT",
  "LAST_ACK",
  "FIN_WAIT_1",
  "FIN_WAIT_2",
  "CLOSING",
  "TIME_WAIT",
  "CLOSE",
];

export function seconds(ms: number): string {
  return ms >= 10_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * Sockets the caller counted instead of listing (src/kernel's ownerlessSample): ownerless rows in one
 * state on one local address and port. They add to counts and timers; only listed rows are shown.
 */
export interface OmittedRows {
  state: string;
  localAddress: string;
  localPort: number;
  count: number;
  longestTimerMs: number | null;
}

export function groupByState(rows: readonly SocketRow[], omitted: readonly OmittedRows[] = []): StateGroup[] {
  const map = new Map<string, StateGroup>();
  const group = (state: string) => {
    let g = map.get(state);
    if (!g) {
      g = { state, count: 0, longestTimerMs: null, sockets: [] };
      map.set(state, g);
    }
    return g;
  };
  for (const r of rows) {
    const g = group(r.state);
    g.count++;
    g.sockets.push(r);
    if (r.timer !== "none") g.longestTimerMs = Math.max(g.longestTimerMs ?? 0, r.timerMs);
  }
  for (const o of omitted) {
    const g = group(o.state);
    g.count += o.count;
    if (o.longestTimerMs !== null) g.longestTimerMs = Math.max(g.longestTimerMs ?? 0, o.longestTimerMs);
  }
  const rank = (s: string) => {
    const i = STATE_ORDER.indexOf(s);
    return i < 0 ? STATE_ORDER.length : i;
  };
  return [...map.values()].sort((a, b) => rank(a.state) - rank(b.state));
}

function ownerText(r: SocketRow): string {
  if (r.owners.length === 0) return "no owner";
  return r.owners.map((o) => `pid ${o.pid} (${o.command.split(" ")[0] || "?"}${o.user ? `, ${o.user}` : ""})`).join(", ");
}

export function diagnose(
  port: number,
  host: string,
  rows: readonly SocketRow[],
  bind: BindOutcome,
  omitted: readonly OmittedRows[] = [],
): Diagnosis {
  // A port with 50,000 sockets has a handful of local addresses: decide each overlap once. The kinds
  // are then read per state group, so the TIME_WAIT group, the big one, is counted, not walked.
  const overlapByAddress = new Map<string, boolean>();
  const overlaps = (addr: string) => {
    let v = overlapByAddress.get(addr);
    if (v === undefined) {
      v = addressesOverlap(addr, host);
      overlapByAddress.set(addr, v);
    }
    return v;
  };
  const relevant: SocketRow[] = [];
  for (const r of rows) if (r.localPort === port && overlaps(r.localAddress)) relevant.push(r);
  const relevantOmitted = omitted.filter((o) => o.localPort === port && overlaps(o.localAddress));
  const groups = groupByState(relevant, relevantOmitted);
  const kinds: DiagnosisKind[] = [];
  const advice: string[] = [];
  const listeners: SocketRow[] = [];
  const live: SocketRow[] = [];
  let timeWaitCount = 0;
  let timeWaitLongest = 0;
  let orphanCount = 0;
  let orphanLongest = 0;
  const orphanStates = new Set<string>();
  for (const g of groups) {
    if (g.state === "TIME_WAIT") {
      // Listed and omitted alike; every TIME_WAIT socket has its timer running.
      timeWaitCount = g.count;
      timeWaitLongest = g.longestTimerMs ?? 0;
      continue;
    }
    for (const r of g.sockets) {
      if (r.state === "LISTEN") listeners.push(r);
      else if (CLOSING_STATES.has(r.state) && r.owners.length === 0 && r.inode === 0) {
        orphanCount++;
        orphanStates.add(r.state);
        if (r.timerMs > orphanLongest) orphanLongest = r.timerMs;
      } else live.push(r);
    }
  }
  // Omitted rows are ownerless and never listeners: TIME_WAIT (counted above), orphans, or live with
  // no owner.
  let liveOmitted = 0;
  for (const o of relevantOmitted) {
    if (o.state === "TIME_WAIT") continue;
    if (CLOSING_STATES.has(o.state)) {
      orphanCount += o.count;
      orphanStates.add(o.state);
      if ((o.longestTimerMs ?? 0) > orphanLongest) orphanLongest = o.longestTimerMs ?? 0;
    } else liveOmitted += o.count;
  }
  let relevantCount = relevant.length;
  for (const o of relevantOmitted) relevantCount += o.count;

  if (!bind.ok && bind.errno === "EACCES") {
    kinds.push("permission");
    advice.push(
      `Binding ${formatEndpoint(host, port)} needs privilege: ports below net.ipv4.ip_unprivileged_port_start (usually 1024) are for root or CAP_NET_BIND_SERVICE. Run as root, grant the capability (setcap cap_net_bind_service=+ep $(which node)), or use a port above 1024.`,
    );
  }

  for (const l of listeners) {
    const who = ownerText(l);
    const lAddr = unmapV4(l.localAddress);
    const hAddr = unmapV4(host);
    if (lAddr === hAddr || (isWildcard(lAddr) && isWildcard(hAddr))) {
      if (!kinds.includes("listener")) kinds.push("listener");
      const pids = l.owners.map((o) => o.pid);
      advice.push(
        `A live server is listening on ${formatEndpoint(l.localAddress, port)}: ${who}. ` +
          (pids.length
            ? `Stop it (kill ${pids.join(" ")}, or stop its service) or give your program another port.`
            : `Its owner could not be named (run as root to see every process); stop that server or use another port.`),
      );
    } else if (isWildcard(lAddr)) {
      if (!kinds.includes("specific-over-wildcard")) kinds.push("specific-over-wildcard");
      advice.push(
        `${who} listens on every address (${formatEndpoint(l.localAddress, port)}). Binding the more specific ${hAddr} over it is the hijack the note warns about (a second server stealing one address's connections); Linux refuses it, even with SO_REUSEADDR. Stop that server, or make it bind only the addresses it needs.`,
      );
    } else {
      if (!kinds.includes("wildcard-over-specific")) kinds.push("wildcard-over-specific");
      advice.push(
        `${who} listens on the specific address ${formatEndpoint(l.localAddress, port)}, so a bind to every address (${hAddr}) on this port is refused. Bind your server to a specific address instead (another one is still free, e.g. with --host), or stop that server.`,
      );
    }
  }

  if (timeWaitCount > 0) {
    kinds.push("time-wait");
    advice.push(
      `${timeWaitCount} connection${timeWaitCount === 1 ? "" : "s"} on this port ${timeWaitCount === 1 ? "is" : "are"} in TIME_WAIT, the kernel's memory of a connection this side closed first; the last one goes in ${seconds(timeWaitLongest)} (Linux keeps TIME_WAIT a fixed 60 s). ` +
        `A server that sets SO_REUSEADDR before bind (every Node server does) can bind anyway; one that does not gets EADDRINUSE until then. ` +
        `To stop making them: let the remote side close first (clients hang up, the server waits for their FIN), or set SO_REUSEADDR. ` +
        `A client that binds this fixed local port still cannot reach the same remote address and port until the entry expires.`,
    );
  }

  if (orphanCount > 0) {
    kinds.push("closing-orphans");
    advice.push(
      `${orphanCount} connection${orphanCount === 1 ? "" : "s"} in ${[...orphanStates].join("/")} belong to no process: left over from a server that closed its socket (a listening socket with pending connections goes through FIN_WAIT_1 as the note says). The kernel finishes them on its own${orphanLongest ? ` (timer: ${seconds(orphanLongest)})` : ""}; orphaned FIN_WAIT_2 is bounded by net.ipv4.tcp_fin_timeout. A server with SO_REUSEADDR can bind over them.`,
    );
  }

  const liveCount = live.length + liveOmitted;
  if (liveCount > 0 && listeners.length === 0) {
    kinds.push("outgoing");
    const owners = new Set(live.map(ownerText));
    if (liveOmitted > 0) owners.add("no owner");
    const example = live[0];
    advice.push(
      `The port is the local end of ${liveCount} live connection${liveCount === 1 ? "" : "s"} (${[...owners].join("; ")})${example ? `, e.g. to ${formatEndpoint(example.remoteAddress, example.remotePort)}` : ""}. Ports taken by outgoing connections come from net.ipv4.ip_local_port_range: move your server out of that range, or add its port to net.ipv4.ip_local_reserved_ports.`,
    );
  }

  if (bind.ok && kinds.length === 0) kinds.push("free");
  if (!bind.ok && kinds.length === 0) {
    kinds.push("unknown");
    advice.push(
      `The bind failed (${bind.errno}: ${bind.message}) but the TCP table shows nothing on this port in this network namespace. It may be held in another namespace or container, by a UDP or SCTP socket, or the address may not exist on this machine.`,
    );
  }

  const withoutReuseAddr = relevantCount > 0 || !bind.ok ? "EADDRINUSE" : "ok";
  return { port, host, bindable: bind.ok, withoutReuseAddr, kinds, groups, advice };
}
