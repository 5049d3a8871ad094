/**
 * Client-side port exhaustion, for `addrinuse why --connect HOST:PORT`. Pure: the caller brings the
 * kernel rows whose remote end is the destination and the kernel settings.
 *
 * connect() without bind() picks a local port from net.ipv4.ip_local_port_range (less
 * ip_local_reserved_ports) such that the 4-tuple (source address, source port, destination address,
 * destination port) is unique (__inet_hash_connect). So the limit is per source address AND per
 * destination: the range's size of connections, live or in TIME_WAIT, from one source address to one
 * destination address and port. Past it connect() fails with EADDRNOTAVAIL ("Cannot assign requested
 * address"), not EADDRINUSE.
 *
 * TIME_WAIT counts against the limit unless net.ipv4.tcp_tw_reuse lets connect() take over a
 * TIME_WAIT 4-tuple: 1 everywhere, 2 (the default since Linux 5.7) on loopback only, and then only
 * with TCP timestamps on and at least a second after the TIME_WAIT socket's last segment
 * (tcp_twsk_unique), so that the peer can tell old segments from new ones. It does not shorten
 * TIME_WAIT and does nothing for servers or incoming connections.
 */
import { formatEndpoint, unmapV4 } from "../core/address.js";
import { seconds } from "./diagnose.js";

export interface ConnectRow {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  state: string;
  timerMs: number;
  owners: { pid: number; command: string }[];
}

export interface ExhaustionSettings {
  ephemeralRange: readonly [number, number];
  reservedPorts: readonly (readonly [number, number])[];
  /** net.ipv4.tcp_tw_reuse: 0, 1, 2 (loopback only); null if unreadable. */
  twReuse: number | null;
  /** net.ipv4.tcp_timestamps (tw_reuse needs them); null if unreadable. */
  timestamps: number | null;
}

export interface SourceUse {
  localAddress: string;
  /** Distinct local ports from the range toward the destination, in any state. */
  used: number;
  timeWait: number;
  /** TIME_WAIT entries connect() may take over now (tcp_tw_reuse), already left out of `blocking`. */
  reusableTimeWait: number;
  /** Ports connect() cannot pick now. */
  blocking: number;
  byState: Record<string, number>;
  /** Time until the first TIME_WAIT toward the destination expires, ms; null if none. */
  nextFreeMs: number | null;
  exhausted: boolean;
}

export interface ExhaustionReport {
  destination: string;
  host: string;
  port: number;
  ephemeralRange: readonly [number, number];
  /** Ports of the range connect() may pick: its size less the reserved ones. */
  available: number;
  twReuse: number | null;
  twReuseApplies: boolean;
  sources: SourceUse[];
  exhausted: boolean;
  /** Connections toward the destination whose local port is outside the range (bound on purpose). */
  outsideRange: number;
  summary: { cause: string; holder: string | null; remedy: string };
  advice: string[];
}

const LOOPBACK = (a: string) => a.startsWith("127.") || a === "::1";

export function exhaustion(host: string, port: number, rows: readonly ConnectRow[], s: ExhaustionSettings): ExhaustionReport {
  const [lo, hi] = s.ephemeralRange;
  let reserved = 0;
  for (let p = lo; p <= hi; p++) if (s.reservedPorts.some(([a, b]) => p >= a && p <= b)) reserved++;
  const available = hi - lo + 1 - reserved;
  const h = unmapV4(host);
  const twReuseApplies = s.timestamps !== 0 && (s.twReuse === 1 || (s.twReuse === 2 && LOOPBACK(h)));
  const bySource = new Map<string, { ports: Set<number>; reusable: Set<number>; tw: number; states: Record<string, number>; next: number | null; pids: Set<number> }>();
  let outsideRange = 0;
  for (const r of rows) {
    if (r.remotePort !== port || unmapV4(r.remoteAddress) !== h || r.state === "LISTEN") continue;
    if (r.localPort < lo || r.localPort > hi) {
      outsideRange++;
      continue;
    }
    const src = unmapV4(r.localAddress);
    let e = bySource.get(src);
    if (!e) {
      e = { ports: new Set(), reusable: new Set(), tw: 0, states: {}, next: null, pids: new Set() };
      bySource.set(src, e);
    }
    e.ports.add(r.localPort);
    e.states[r.state] = (e.states[r.state] ?? 0) + 1;
    for (const o of r.owners) e.pids.add(o.pid);
    if (r.state === "TIME_WAIT") {
      e.tw++;
      if (e.next === null || r.timerMs < e.next) e.next = r.timerMs;
      // tcp_twsk_unique: reusable a second after the TIME_WAIT began (60 s timer, so under 59 s left).
      if (twReuseApplies && r.timerMs < 59_000) e.reusable.add(r.localPort);
    }
  }
  const sources: SourceUse[] = [...bySource].map(([localAddress, e]) => {
    const blocking = e.ports.size - e.reusable.size;
    return {
      localAddress,
      used: e.ports.size,
      timeWait: e.tw,
      reusableTimeWait: e.reusable.size,
      blocking,
      byState: e.states,
      nextFreeMs: e.next,
      exhausted: blocking >= available,
    };
  });
  sources.sort((a, b) => b.blocking - a.blocking);
  const exhausted = sources.some((x) => x.exhausted);
  const destination = formatEndpoint(h, port);
  const worst = sources[0];
  const pids = [...new Set([...bySource.values()].flatMap((e) => [...e.pids]))];
  const advice: string[] = [];
  if (worst) {
    const states = Object.entries(worst.byState).map(([k, v]) => `${v} ${k}`).join(", ");
    advice.push(
      `From ${worst.localAddress}, ${worst.used} of the ${available} local ports connect() may pick (net.ipv4.ip_local_port_range ${lo}-${hi}${reserved ? `, less ${reserved} reserved` : ""}) are in 4-tuples toward ${destination} (${states}).` +
        (worst.exhausted
          ? ` That is all of them: connect() to ${destination} fails with EADDRNOTAVAIL ("Cannot assign requested address"), while other destinations still work.`
          : ` ${available - worst.blocking} are left.`) +
        (worst.nextFreeMs !== null ? ` The first TIME_WAIT among them expires in ${seconds(worst.nextFreeMs)}.` : ""),
    );
  } else {
    advice.push(`No connection toward ${destination} holds a port of the ephemeral range (${lo}-${hi}, ${available} ports).`);
  }
  if (worst && worst.timeWait > 0) {
    advice.push(
      `tcp_tw_reuse=${s.twReuse ?? "?"}${s.twReuse === 2 ? " (loopback only)" : ""}: ` +
        (twReuseApplies
          ? `connect() may take over a TIME_WAIT 4-tuple toward ${destination} once it is a second old (TCP timestamps on both ends tell old segments from new); ${worst.reusableTimeWait} of ${worst.timeWait} are reusable now. It does not shorten TIME_WAIT and does nothing for servers.`
          : `TIME_WAIT 4-tuples toward ${destination} are not reused, so each holds its port for the whole 60 s. sysctl -w net.ipv4.tcp_tw_reuse=1 lets connect() take one over a second after it began (timestamps needed, outgoing connections only); it does not shorten TIME_WAIT.`),
    );
  }
  advice.push(
    `Remedies, best first: let the remote side close first (then the TIME_WAIT lands on the server, as multi-rsh arranges); reuse connections (keep-alive pools) instead of one per request; more source addresses (each local address has its own range toward the destination: bind() to another one); a wider net.ipv4.ip_local_port_range.`,
  );
  const summary = worst
    ? worst.exhausted
      ? { cause: `client-side port exhaustion: all ${available} ephemeral ports from ${worst.localAddress} are in 4-tuples toward ${destination}`, holder: pids.length ? `pid ${pids.join(", ")} (and the kernel's TIME_WAIT)` : "the kernel's TIME_WAIT", remedy: worst.timeWait > 0 ? "let the remote side close first, or reuse connections" : "reuse connections, or add source addresses" }
      : { cause: `${worst.blocking} of ${available} ephemeral ports toward ${destination} in use: not exhausted`, holder: pids.length ? `pid ${pids.join(", ")}` : null, remedy: "none needed yet" }
    : { cause: `nothing toward ${destination} holds an ephemeral port`, holder: null, remedy: "none needed" };
  return { destination, host: h, port, ephemeralRange: s.ephemeralRange, available, twReuse: s.twReuse, twReuseApplies, sources, exhausted, outsideRange, summary, advice };
}
