/**
 * Why a port cannot be bound, in the note's words. Pure: the caller brings the kernel rows for the
 * port, the outcome of a real bind attempt and a few kernel settings; this decides which case it is
 * and what to do.
 *
 * Cases (from "Bind: Address Already in Use", checked against real binds in test/cli/why.test.ts):
 *  - a live listener on an overlapping address: someone is serving there; two or more listeners on
 *    one address are a SO_REUSEPORT group;
 *  - a more specific address over a wildcard, or the wildcard over specific ones: Linux refuses both
 *    directions for listeners, which is what stops the hijack the note describes. An IPv6 wildcard
 *    covers IPv4 too unless it is IPV6_V6ONLY (read per socket over netlink);
 *  - sockets that are not listening: TIME_WAIT, orphaned FIN_WAIT_*, connections, bound-only sockets.
 *    Linux lets a new bind share the port with them only when BOTH sockets set SO_REUSEADDR
 *    (inet_csk_bind_conflict: `sk->sk_reuse && sk2->sk_reuse && sk2->sk_state != TCP_LISTEN`). Node
 *    sets it on servers, never on clients, so a TIME_WAIT left by a server does not block a Node
 *    server and one left by an outgoing connection does. The bind attempt tells which it is;
 *  - connections on the port with no listener: accepted by a server that has stopped listening, or
 *    outgoing ones whose local port the kernel took from ip_local_port_range;
 *  - not in use at all: EACCES (privileged port), EADDRNOTAVAIL (an address this machine lacks).
 *
 * The listener cases are in listener-conflicts.ts, the counting by state in state-groups.ts.
 */
import { addressesOverlap, addressFamily, formatEndpoint, unmapV4 } from "../core/address.js";
import { explainListeners } from "./listener-conflicts.js";
import { groupByState, type OmittedRows, type StateGroup } from "./state-groups.js";
import type { SocketEnds } from "../kernel/parse.js";

export interface SocketRow extends SocketEnds {
  timer: string;
  timerMs: number;
  inode: number;
  /** The socket's uid as the kernel reports it (the reuseport group's owner). */
  uid?: number;
  /** IPV6_V6ONLY of an owned IPv6 socket, when the reader could tell (netlink); unset otherwise. */
  v6only?: boolean;
  owners: { pid: number; command: string; user: string | null }[];
}

export type BindOutcome =
  | { ok: true }
  | { ok: false; errno: string; message: string };

export type DiagnosisKind =
  | "free"
  | "listener"
  | "reuseport-group"
  | "wildcard-over-specific"
  | "specific-over-wildcard"
  | "dual-stack"
  | "time-wait"
  | "closing-orphans"
  | "accepted"
  | "outgoing"
  | "connection"
  | "bound"
  | "permission"
  | "address-not-available"
  /** Found beyond the port's own table (src/cli/addrinuse/why-more.ts): */
  | "other-namespace"
  | "container"
  | "dnat"
  | "socket-activation"
  | "unknown";

/** The kernel settings a diagnosis depends on; each is optional (the advice is vaguer without it). */
export interface DiagnoseContext {
  /** net.ipv4.ip_local_port_range: where the kernel picks outgoing connections' local ports. */
  ephemeralRange?: readonly [number, number];
  /** net.ipv4.ip_local_reserved_ports, parsed (parsePortRanges). */
  reservedPorts?: readonly (readonly [number, number])[];
  /** Processes whose fds could not be read: an owned socket with no owner found is then hidden. */
  unreadableProcesses?: number;
  /**
   * The reader asked for bound-inactive sockets (netlink, Linux 6.5+): a CLOSE row with an inode and
   * no remote end is then a socket that was bound and never listened or connected.
   */
  boundInactiveListed?: boolean;
}

export interface Diagnosis {
  port: number;
  host: string;
  bindable: boolean;
  /** What a program that does not set SO_REUSEADDR would get. */
  withoutReuseAddr: "ok" | "EADDRINUSE";
  kinds: DiagnosisKind[];
  /** The first thing to read: the cause, who holds the port (null: nobody), and one remedy. */
  summary: { cause: string; holder: string | null; remedy: string };
  groups: StateGroup[];
  /** Plain-words explanation and remedies, one paragraph per item. */
  advice: string[];
}

const CLOSING_STATES = new Set(["FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "LAST_ACK"]);

export function seconds(ms: number): string {
  return ms >= 10_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * A process's command line as one safe line: argv comes from whoever started the process, so control
 * characters (a newline would break the table, an escape sequence would drive the terminal) are
 * shown escaped, and a long one is cut at a word boundary with a visible mark, never mid-word (a cut
 * `--listen :: 18080` must not read as port 1808).
 */
export function printableCommand(command: string, max = 60): string {
  // eslint-disable-next-line no-control-regex
  let t = command.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => (c === "\n" ? "\\n" : c === "\t" ? "\\t" : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`));
  if (t.length > max) {
    const cut = t.lastIndexOf(" ", max);
    t = cut > max / 2 ? `${t.slice(0, cut)} …` : `${t.slice(0, max)}…`;
  }
  return t;
}

/** Who holds a row, in words: pids, or why there is none to name. */
export function ownerLabel(r: SocketRow, unreadableProcesses = 0): string {
  if (r.owners.length > 0) {
    return r.owners.map((o) => `pid ${o.pid} (${printableCommand(o.command.split(" ")[0] || "?", 40)}${o.user ? `, ${o.user}` : ""})`).join(", ");
  }
  // inode 0: the kernel's own (TIME_WAIT, orphans, unaccepted connections), no process has it.
  if (r.inode === 0) return "no owner";
  return unreadableProcesses > 0 ? "owner hidden (run as root to see it)" : "owner not found (exited, or in another pid namespace)";
}

/** "8080,9000-9010" (net.ipv4.ip_local_reserved_ports) into ranges; junk is skipped. */
export function parsePortRanges(text: string | null | undefined): [number, number][] {
  const out: [number, number][] = [];
  for (const part of (text ?? "").split(/[\s,]+/)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (m) out.push([Number(m[1]), Number(m[2] ?? m[1])]);
  }
  return out;
}

function inRanges(port: number, ranges: readonly (readonly [number, number])[] | undefined): boolean {
  return (ranges ?? []).some(([lo, hi]) => port >= lo && port <= hi);
}

/** Whether a socket bound to `held` (IPV6_V6ONLY `v6only`) conflicts with a bind to `wanted`. */
function rowOverlaps(held: string, v6only: boolean | undefined, wanted: string): boolean {
  // A v6only [::] covers IPv6 addresses only; the kernel lets IPv4 binds past it.
  if (v6only === true && unmapV4(held) === "::" && addressFamily(wanted) === 4) return false;
  return addressesOverlap(held, wanted);
}

function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}

export function diagnose(
  port: number,
  host: string,
  rows: readonly SocketRow[],
  bind: BindOutcome,
  omitted: readonly OmittedRows[] = [],
  context: DiagnoseContext = {},
): Diagnosis {
  const unreadable = context.unreadableProcesses ?? 0;
  const who = (r: SocketRow) => ownerLabel(r, unreadable);
  // A port with 50,000 sockets has a handful of local addresses: decide each overlap once. The kinds
  // are then read per state group, so the TIME_WAIT group, the big one, is counted, not walked. Only
  // owned sockets carry v6only, and they are few.
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
  const v6onlyBeside: SocketRow[] = [];
  for (const r of rows) {
    if (r.localPort !== port) continue;
    if (r.v6only === undefined ? overlaps(r.localAddress) : rowOverlaps(r.localAddress, r.v6only, host)) relevant.push(r);
    else if (r.v6only === true && r.state === "LISTEN") v6onlyBeside.push(r);
  }
  const relevantOmitted = omitted.filter((o) => o.localPort === port && overlaps(o.localAddress));
  const groups = groupByState(relevant, relevantOmitted);
  const kinds: DiagnosisKind[] = [];
  const advice: string[] = [];
  const summaries: Diagnosis["summary"][] = [];
  const addKind = (k: DiagnosisKind) => {
    if (!kinds.includes(k)) kinds.push(k);
  };
  const listeners: SocketRow[] = [];
  const live: SocketRow[] = [];
  const bound: SocketRow[] = [];
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
      else if (r.state === "CLOSE" && r.inode !== 0 && r.remotePort === 0) bound.push(r);
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
  const hAddr = unmapV4(host);
  const where = formatEndpoint(host, port);
  const range = context.ephemeralRange;
  const portInRange = range !== undefined && port >= range[0] && port <= range[1];
  const reserved = inRanges(port, context.reservedPorts);

  if (!bind.ok && bind.errno === "EACCES") {
    addKind("permission");
    advice.push(
      `Binding ${where} needs privilege: ports below net.ipv4.ip_unprivileged_port_start (usually 1024) are for root or CAP_NET_BIND_SERVICE. Nothing needs to hold the port for this; it is EACCES, not EADDRINUSE. Run as root, grant the capability (setcap cap_net_bind_service=+ep $(which node)), or use a port above 1024.`,
    );
    summaries.push({ cause: "permission denied: a privileged port (EACCES), not a port in use", holder: null, remedy: "use a port above 1024, or grant CAP_NET_BIND_SERVICE" });
  }
  if (!bind.ok && bind.errno === "EADDRNOTAVAIL") {
    addKind("address-not-available");
    advice.push(
      `${hAddr} is not an address of this machine (in this network namespace), so the bind fails with EADDRNOTAVAIL, not EADDRINUSE: nothing holds the port. Bind an address the machine has (ip -br addr) or all addresses; to bind an address before it is configured, set net.ipv4.ip_nonlocal_bind=1 (net.ipv6.ip_nonlocal_bind for IPv6), the system-wide form of IP_FREEBIND, which Node cannot set per socket.`,
    );
    summaries.push({ cause: `${hAddr} is not an address of this machine (EADDRNOTAVAIL), not a port in use`, holder: null, remedy: "bind an address this machine has, or all addresses" });
  }

  // Listeners on an overlapping address: listener-conflicts.ts.
  explainListeners(listeners, port, host, who, unreadable, { addKind, advice, summaries });

  // Sockets that do not listen block a bind unless both sides set SO_REUSEADDR; the bind says which.
  const noListener = listeners.length === 0;
  const reuseVerdict = (what: string) =>
    !noListener
      ? ""
      : bind.ok
        ? ` A Node server binds anyway: Linux lets a bind share the port with sockets that do not listen when both set SO_REUSEADDR, and ${what} did (libuv sets it on every server socket); a program without SO_REUSEADDR gets EADDRINUSE.`
        : bind.errno === "EADDRINUSE"
          ? ` Even a Node server (SO_REUSEADDR) gets EADDRINUSE here: Linux lets a bind share the port with a socket that does not listen only when BOTH set SO_REUSEADDR, and ${what} did not (connect() without bind never sets it: Node's and most programs' clients).`
          : "";

  if (timeWaitCount > 0) {
    addKind("time-wait");
    advice.push(
      `${plural(timeWaitCount, "connection")} on this port ${timeWaitCount === 1 ? "is" : "are"} in TIME_WAIT, the kernel's memory of a connection this side closed first; the last one goes in ${seconds(timeWaitLongest)} (Linux keeps TIME_WAIT a fixed 60 s).` +
        reuseVerdict("the socket that left them") +
        ` To stop making them: let the remote side close first (clients hang up, the server waits for their FIN), or set SO_REUSEADDR. ` +
        `A client that binds this fixed local port still cannot reach the same remote address and port until the entry expires.` +
        (noListener && !bind.ok && portInRange && !reserved
          ? ` Port ${port} is inside net.ipv4.ip_local_port_range (${range![0]}-${range![1]}), so outgoing connections will keep taking it: reserve it for your server (sysctl -w net.ipv4.ip_local_reserved_ports=${port}).`
          : ""),
    );
    summaries.push(
      noListener && !bind.ok && bind.errno === "EADDRINUSE"
        ? { cause: `${plural(timeWaitCount, "TIME_WAIT socket")} left by a socket without SO_REUSEADDR`, holder: "no owner (the kernel)", remedy: `wait ${seconds(timeWaitLongest)}, or destroy them (addrinuse free ${port} --yes)` }
        : { cause: `${plural(timeWaitCount, "TIME_WAIT socket")}`, holder: "no owner (the kernel)", remedy: bind.ok ? "none needed for a Node server; others set SO_REUSEADDR" : `wait ${seconds(timeWaitLongest)}` },
    );
  }

  if (orphanCount > 0) {
    addKind("closing-orphans");
    advice.push(
      `${plural(orphanCount, "connection")} in ${[...orphanStates].join("/")} belong to no process: left over from a program that closed its socket (a listening socket with pending connections goes through FIN_WAIT_1 as the note says). The kernel finishes them on its own${orphanLongest ? ` (timer: ${seconds(orphanLongest)})` : ""}; orphaned FIN_WAIT_2 is bounded by net.ipv4.tcp_fin_timeout.` +
        reuseVerdict("the socket that left them"),
    );
    summaries.push({ cause: `${plural(orphanCount, "orphaned closing connection")}`, holder: "no owner (the kernel)", remedy: `wait${orphanLongest ? ` ${seconds(orphanLongest)}` : ""}; the kernel finishes them` });
  }

  if (bound.length > 0) {
    addKind("bound");
    const names = [...new Set(bound.map(who))].join("; ");
    advice.push(
      `${names} ${bound.length === 1 ? "has a socket" : `has ${bound.length} sockets`} bound to ${formatEndpoint(bound[0]!.localAddress, port)} that ${bound.length === 1 ? "neither listens nor is" : "neither listen nor are"} connected (bind() with no listen() or connect() yet): ${bound.length === 1 ? "it holds" : "they hold"} the port until closed.` +
        reuseVerdict("that socket") +
        ` Close it in that program, or stop the program.`,
    );
    summaries.push({ cause: `a socket bound to the port that does not listen`, holder: names, remedy: "close it in that program, or stop the program" });
  }

  const liveCount = live.length + liveOmitted;
  if (liveCount > 0 && noListener) {
    // Which way a connection went is not in the kernel's table; the port numbers say it: an
    // outgoing connection's local port comes from ip_local_port_range, an accepted one's remote does.
    const inRange = (p: number) => range !== undefined && p >= range[0] && p <= range[1];
    // Both or neither in the range (a listener on an ephemeral port, listen(0); a reserved-port client)
    // leaves the direction open, and the advice says so.
    const outgoing = live.filter((r) => inRange(r.localPort) && !inRange(r.remotePort));
    const accepted = live.filter((r) => !inRange(r.localPort) && inRange(r.remotePort));
    const other = live.filter((r) => inRange(r.localPort) === inRange(r.remotePort));
    const describe = (list: SocketRow[], extra: number) => {
      const owners = new Set(list.map(who));
      if (extra > 0) owners.add("no owner");
      const example = list[0];
      return `${plural(list.length + extra, "live connection")} (${[...owners].join("; ")})${example ? `, e.g. to ${formatEndpoint(example.remoteAddress, example.remotePort)}` : ""}`;
    };
    const pidsOf = (list: SocketRow[]) => [...new Set(list.flatMap((r) => r.owners.map((o) => o.pid)))];
    if (outgoing.length > 0 || (liveOmitted > 0 && portInRange)) {
      addKind("outgoing");
      const n = outgoing.length + (portInRange ? liveOmitted : 0);
      advice.push(
        `The port is the local end of ${describe(outgoing, portInRange ? liveOmitted : 0)}: outgoing, the kernel took port ${port} from net.ipv4.ip_local_port_range (${range![0]}-${range![1]}) for ${n === 1 ? "it" : "them"}.` +
          reuseVerdict(n === 1 ? "that connection" : "those connections") +
          (reserved
            ? ` Port ${port} is in net.ipv4.ip_local_reserved_ports already, so ${n === 1 ? "this one was" : "these were"} bound to it on purpose or made before the reservation; they free the port when closed.`
            : ` So that outgoing connections stop taking it: sysctl -w net.ipv4.ip_local_reserved_ports=${port} (persist it in /etc/sysctl.d/), or move your server below ${range![0]}.`),
      );
      const pids = pidsOf(outgoing);
      summaries.push({ cause: `an outgoing connection took port ${port} from the ephemeral range`, holder: describe(outgoing, 0), remedy: reserved ? (pids.length ? `close it (kill ${pids.join(" ")})` : "wait for it to close") : `reserve it: sysctl -w net.ipv4.ip_local_reserved_ports=${port}` });
    }
    if (accepted.length > 0) {
      addKind("accepted");
      const pids = pidsOf(accepted);
      advice.push(
        `The port is the local end of ${describe(accepted, 0)} accepted by a server that has since stopped listening (the remote ports are ephemeral, this one is not); ${pids.length ? `pid ${pids.join(", ")} still holds them` : "their holder still has them"} and they free the port when closed.` +
          reuseVerdict(accepted.length === 1 ? "that connection (it inherits its listener's SO_REUSEADDR)" : "those connections (they inherit their listener's SO_REUSEADDR)") +
          ` To free it now: close them in that program${pids.length ? ` or stop it (kill ${pids.join(" ")})` : ""}.`,
      );
      summaries.push({ cause: `connections accepted by a server that stopped listening`, holder: describe(accepted, 0), remedy: pids.length ? `close them, or stop pid ${pids.join(" ")}` : "close them" });
    }
    if (other.length > 0 || (liveOmitted > 0 && !portInRange)) {
      addKind("connection");
      const extra = portInRange ? 0 : liveOmitted;
      const pids = pidsOf(other);
      advice.push(
        `The port is the local end of ${describe(other, extra)}: accepted by a server that has since stopped listening, or outgoing${portInRange ? " (the port is inside net.ipv4.ip_local_port_range, where the kernel picks outgoing connections' ports)" : " from an explicitly bound port"}; the kernel does not record which. ${other.length + extra === 1 ? "It frees" : "They free"} the port when closed.` +
          reuseVerdict("those connections") +
          (pids.length ? ` To free it now: stop pid ${pids.join(" ")} or have it close them.` : "") +
          (portInRange && !reserved ? ` If outgoing connections keep taking it: sysctl -w net.ipv4.ip_local_reserved_ports=${port}.` : ""),
      );
      summaries.push({ cause: `live connections on the port`, holder: describe(other, extra), remedy: pids.length ? `close them, or stop pid ${pids.join(" ")}` : "wait for them to close" });
    }
  }

  if (v6onlyBeside.length > 0 && bind.ok) {
    const names = [...new Set(v6onlyBeside.map(who))].join("; ");
    advice.push(`${names} listens on ${formatEndpoint("::", port)} with IPV6_V6ONLY: IPv6 only, so it leaves IPv4's ${hAddr} free (a Node server with no host, dual-stack [::], would be refused).`);
  }

  if (bind.ok && kinds.length === 0) kinds.push("free");
  if (!bind.ok && kinds.length === 0) {
    kinds.push("unknown");
    advice.push(
      `The bind failed (${bind.errno}: ${bind.message}) but the TCP table shows nothing on this port in this network namespace.${context.boundInactiveListed ? "" : " It may be a socket bound but not listening (the kernel lists those over netlink only, Linux 6.5+);"} It may be held in another namespace or container, or by an SCTP socket.`,
    );
    summaries.push({ cause: `the bind failed (${bind.errno}) and the TCP table shows nothing here`, holder: null, remedy: "look in other network namespaces (ip netns, containers)" });
  }

  const withoutReuseAddr = relevantCount > 0 || !bind.ok ? "EADDRINUSE" : "ok";
  const summary = summaries[0] ?? { cause: "nothing holds the port", holder: null, remedy: "none needed" };
  return { port, host, bindable: bind.ok, withoutReuseAddr, kinds, summary, groups, advice };
}
