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

export function groupByState(rows: readonly SocketRow[]): StateGroup[] {
  const map = new Map<string, StateGroup>();
  for (const r of rows) {
    let g = map.get(r.state);
    if (!g) {
      g = { state: r.state, count: 0, longestTimerMs: null, sockets: [] };
      map.set(r.state, g);
    }
    g.count++;
    g.sockets.push(r);
    if (r.timer !== "none") g.longestTimerMs = Math.max(g.longestTimerMs ?? 0, r.timerMs);
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
): Diagnosis {
  const relevant = rows.filter((r) => r.localPort === port && addressesOverlap(r.localAddress, host));
  const groups = groupByState(relevant);
  const kinds: DiagnosisKind[] = [];
  const advice: string[] = [];
  const listeners = relevant.filter((r) => r.state === "LISTEN");
  const timeWait = relevant.filter((r) => r.state === "TIME_WAIT");
  const orphans = relevant.filter((r) => CLOSING_STATES.has(r.state) && r.owners.length === 0 && r.inode === 0);
  // A Set, not orphans.includes(): a busy server port has thousands of each, and that was quadratic.
  const orphanSet = new Set(orphans);
  const live = relevant.filter((r) => r.state !== "LISTEN" && r.state !== "TIME_WAIT" && !orphanSet.has(r));
  const where = formatEndpoint(host, port);

  if (!bind.ok && bind.errno === "EACCES") {
    kinds.push("permission");
    advice.push(
      `Binding ${where} needs privilege: ports below net.ipv4.ip_unprivileged_port_start (usually 1024) are for root or CAP_NET_BIND_SERVICE. Run as root, grant the capability (setcap cap_net_bind_service=+ep $(which node)), or use a port above 1024.`,
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

  if (timeWait.length > 0) {
    kinds.push("time-wait");
    // A loop, not Math.max(...rows): spreading ~125,000+ arguments overflows the stack, and one port can hold that many.
    let longest = 0;
    for (const r of timeWait) if (r.timerMs > longest) longest = r.timerMs;
    advice.push(
      `${timeWait.length} connection${timeWait.length === 1 ? "" : "s"} on this port ${timeWait.length === 1 ? "is" : "are"} in TIME_WAIT, the kernel's memory of a connection this side closed first; the last one goes in ${seconds(longest)} (Linux keeps TIME_WAIT a fixed 60 s). ` +
        `A server that sets SO_REUSEADDR before bind (every Node server does) can bind anyway; one that does not gets EADDRINUSE until then. ` +
        `To stop making them: let the remote side close first (clients hang up, the server waits for their FIN), or set SO_REUSEADDR. ` +
        `A client that binds this fixed local port still cannot reach the same remote address and port until the entry expires.`,
    );
  }

  if (orphans.length > 0) {
    kinds.push("closing-orphans");
    let longest = 0;
    for (const r of orphans) if (r.timerMs > longest) longest = r.timerMs;
    advice.push(
      `${orphans.length} connection${orphans.length === 1 ? "" : "s"} in ${[...new Set(orphans.map((r) => r.state))].join("/")} belong to no process: left over from a server that closed its socket (a listening socket with pending connections goes through FIN_WAIT_1 as the note says). The kernel finishes them on its own${longest ? ` (timer: ${seconds(longest)})` : ""}; orphaned FIN_WAIT_2 is bounded by net.ipv4.tcp_fin_timeout. A server with SO_REUSEADDR can bind over them.`,
    );
  }

  if (live.length > 0 && listeners.length === 0) {
    kinds.push("outgoing");
    const owners = [...new Set(live.map(ownerText))];
    advice.push(
      `The port is the local end of ${live.length} live connection${live.length === 1 ? "" : "s"} (${owners.join("; ")}), e.g. to ${formatEndpoint(live[0]!.remoteAddress, live[0]!.remotePort)}. Ports taken by outgoing connections come from net.ipv4.ip_local_port_range: move your server out of that range, or add its port to net.ipv4.ip_local_reserved_ports.`,
    );
  }

  if (bind.ok && kinds.length === 0) kinds.push("free");
  if (!bind.ok && kinds.length === 0) {
    kinds.push("unknown");
    advice.push(
      `The bind failed (${bind.errno}: ${bind.message}) but the TCP table shows nothing on this port in this network namespace. It may be held in another namespace or container, by a UDP or SCTP socket, or the address may not exist on this machine.`,
    );
  }

  const withoutReuseAddr = relevant.length > 0 || !bind.ok ? "EADDRINUSE" : "ok";
  return { port, host, bindable: bind.ok, withoutReuseAddr, kinds, groups, advice };
}
