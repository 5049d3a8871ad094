/**
 * Connect from a local port chosen so that the connection's 4-tuple is neither live nor in TIME_WAIT.
 *
 * Why the kernel does not do this for us: libuv sets SO_REUSEADDR on every bind, clients that pass
 * `localPort` included. Two sockets that both set SO_REUSEADDR may share a local port unless one is a
 * listener, so bind() succeeds and the 4-tuple is only checked at connect(): a live one surfaces as
 * EADDRNOTAVAIL, and one in TIME_WAIT is silently taken over whenever the old connection used TCP
 * timestamps (the default): for an explicitly bound port __inet_hash_connect calls
 * __inet_check_established with twp == NULL, and tcp_twsk_unique then allows the reuse whatever
 * net.ipv4.tcp_tw_reuse says. That is the reuse the note warns about: a late segment of the old
 * connection can land in the new one.
 *
 * So we read the kernel table once per round (only the rows with a local or remote port in the range,
 * see range-snapshot.ts), drop every candidate whose 4-tuple to this destination
 * is in the table (any state, TIME_WAIT included), every port a listener holds on an overlapping
 * address (bind would fail), and every port another call in this process holds bound but not yet
 * connected (bound-only sockets are not in /proc/net/tcp). The rest are tried in descending order,
 * like rresvport(3), from a start that rotates between calls so that concurrent callers spread out.
 * Ports with no socket at all come first; ports the kernel shows in use towards other destinations
 * come after them (legal with SO_REUSEADDR on both sides, but a socket without it blocks the bind).
 *
 * A TIME_WAIT kept by the *peer* (the destination is on this machine and closed first, which is what
 * a remote-closes-first protocol like rsh arranges) is the same 4-tuple seen from the other end. Linux
 * accepts a new SYN over its own TIME_WAIT when sequence numbers or timestamps show it is new
 * (RFC 6191, tcp_timewait_state_process), so those ports are usable; they are ordered last.
 *
 * This file holds the choice (pickLocalPorts, pure) and the rounds of a call; the shared table
 * reading and the process's own marks are in range-snapshot.ts, one bind+connect in bind-and-connect.ts.
 */
import net from "node:net";
import { ArgumentError, PortsExhaustedError } from "../errors.js";
import type { TcpSocket } from "../kernel/parse.js";
import { addressesOverlap, formatEndpoint, isWildcard, unmapV4 } from "../core/address.js";
import { bindAndConnect } from "./bind-and-connect.js";
import { currentEpoch, firstUntouched, handedOut, kernelTable, markBindRefused, recentlyRefused } from "./range-snapshot.js";

export interface ConnectFromOptions {
  host: string;
  port: number;
  /** "reserved" = 512..1023, what rshd demands (binding below 1024 needs root). */
  localPorts: "reserved" | [number, number];
  /** Default: unspecified (the kernel picks the source address by route). */
  localAddress?: string;
  signal?: AbortSignal;
  /** For the whole call, all attempts together; 0/undefined = none. */
  connectTimeoutMs?: number;
  /** Ports to avoid in addition to what the kernel table says (e.g. already handed out in this process) */
  exclude?: ReadonlySet<number>;
  /**
   * How old a shared reading of the kernel table may be (default 100); 0 = read it for this call.
   * Retry rounds always read afresh.
   */
  tableMaxAgeMs?: number;
}

export interface ConnectFromResult {
  socket: net.Socket;
  localPort: number;
  /** Connect attempts made, the successful one included. */
  attempts: number;
}

export const RESERVED_PORTS: readonly [number, number] = [512, 1023];

/** The columns of a kernel row that port choice depends on. */
export type PortRow = Pick<TcpSocket, "localAddress" | "localPort" | "remoteAddress" | "remotePort" | "state">;

export interface PickInput {
  range: readonly [number, number];
  rows: readonly PortRow[];
  host: string;
  port: number;
  localAddress?: string;
  /** Ports not to offer (caller's exclude list, ports pending in this process, ports that failed). */
  exclude?: ReadonlySet<number>;
  /** Why an excluded port is excluded, for the counts; default "excluded". */
  excludeReason?: (port: number) => string;
  /** Where the descending walk starts (wraps around within the range); default the top. */
  start?: number;
  /** Candidates to try only after all others (e.g. a bind there just failed). */
  demote?: ReadonlySet<number>;
}

export interface PickResult {
  /** Usable ports, best first. */
  candidates: number[];
  /**
   * Every port of the range counted once, by why it is or is not a candidate: a TCP state for a
   * 4-tuple to this destination that is in the table ("TIME_WAIT", "ESTABLISHED", ...), "LISTEN" for a
   * listener on an overlapping address, the exclude reason, and for candidates "free", "shared" (in use
   * towards other destinations) or "TIME_WAIT at peer".
   */
  byState: Record<string, number>;
  total: number;
}

/** Pure: which ports of `range` may be used to reach host:port, best first. */
export function pickLocalPorts(input: PickInput): PickResult {
  const [from, to] = input.range;
  const host = unmapV4(input.host);
  const local =
    input.localAddress === undefined || isWildcard(unmapV4(input.localAddress))
      ? undefined
      : unmapV4(input.localAddress);
  const bindAddress = input.localAddress ?? (net.isIP(host) === 6 ? "::" : "0.0.0.0");

  // Worst reason per port: a blocking reason wins over a candidate label.
  const blocked = new Map<number, string>();
  const shared = new Set<number>();
  const peerTimeWait = new Set<number>();
  for (const r of input.rows) {
    if (r.localPort >= from && r.localPort <= to) {
      if (r.state === "LISTEN") {
        if (addressesOverlap(r.localAddress, bindAddress)) blocked.set(r.localPort, "LISTEN");
        continue;
      }
      const sameTuple =
        r.remotePort === input.port &&
        unmapV4(r.remoteAddress) === host &&
        (local === undefined || unmapV4(r.localAddress) === local);
      if (sameTuple) {
        if (!blocked.has(r.localPort)) blocked.set(r.localPort, r.state);
      } else {
        shared.add(r.localPort);
      }
    }
    // The peer's end of the same 4-tuple, when the destination lives in this network namespace.
    if (
      r.localPort === input.port &&
      r.remotePort >= from &&
      r.remotePort <= to &&
      unmapV4(r.localAddress) === host &&
      (local === undefined || unmapV4(r.remoteAddress) === local)
    ) {
      if (r.state === "TIME_WAIT") peerTimeWait.add(r.remotePort);
      else if (r.state !== "LISTEN" && !blocked.has(r.remotePort)) blocked.set(r.remotePort, r.state);
    }
  }

  const total = to - from + 1;
  let start = input.start ?? to;
  if (start < from || start > to) start = to;
  const free: number[] = [];
  const sharedList: number[] = [];
  const peerList: number[] = [];
  const byState: Record<string, number> = {};
  const count = (label: string) => {
    byState[label] = (byState[label] ?? 0) + 1;
  };
  for (let i = 0; i < total; i++) {
    // Descending from `start`, wrapping from `from` back to `to`.
    let p = start - i;
    if (p < from) p += total;
    if (input.exclude?.has(p)) {
      count(input.excludeReason?.(p) ?? "excluded");
      continue;
    }
    const why = blocked.get(p);
    if (why !== undefined) {
      count(why);
    } else if (peerTimeWait.has(p)) {
      count("TIME_WAIT at peer");
      peerList.push(p);
    } else if (shared.has(p)) {
      count("shared");
      sharedList.push(p);
    } else {
      count("free");
      free.push(p);
    }
  }
  const ordered = [...free, ...sharedList, ...peerList];
  const demote = input.demote;
  const candidates =
    demote && demote.size > 0 ? [...ordered.filter((p) => !demote.has(p)), ...ordered.filter((p) => demote.has(p))] : ordered;
  return { candidates, byState, total };
}

/** Describes counts like "480 TIME_WAIT, 20 ESTABLISHED, 12 LISTEN", largest first. */
export function describeCounts(byState: Record<string, number>): string {
  return Object.entries(byState)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${n} ${k}`)
    .join(", ");
}

// Rotates so that successive calls start their descending walk at different ports.
let cursor = 0;

export const DEFAULT_TABLE_MAX_AGE_MS = 100;
const MAX_ROUNDS = 4;
// A failed bind costs under a millisecond (0.7 ms measured on a loaded machine); other programs'
// rresvport(3) sockets (no SO_REUSEADDR, and invisible in the table between bind and connect) can
// refuse a few hundred reserved ports at once.
const MAX_ATTEMPTS_PER_ROUND = 128;

function validate(o: ConnectFromOptions): [number, number] {
  if (o === null || typeof o !== "object") throw new ArgumentError("connectFrom: options must be an object");
  if (typeof o.host !== "string" || net.isIP(o.host) === 0) {
    throw new ArgumentError(`connectFrom: host must be an IPv4 or IPv6 address, got ${JSON.stringify(o.host)}`);
  }
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) {
    throw new ArgumentError(`connectFrom: port must be an integer 1..65535, got ${String(o.port)}`);
  }
  let range: [number, number];
  if (o.localPorts === "reserved") range = [RESERVED_PORTS[0], RESERVED_PORTS[1]];
  else if (Array.isArray(o.localPorts) && o.localPorts.length === 2) range = [o.localPorts[0], o.localPorts[1]];
  else throw new ArgumentError(`connectFrom: localPorts must be "reserved" or [from, to]`);
  for (const p of range) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      throw new ArgumentError(`connectFrom: localPorts must be integers 1..65535, got [${range.join(", ")}]`);
    }
  }
  if (range[0] > range[1]) {
    throw new ArgumentError(`connectFrom: localPorts [${range.join(", ")}] has from > to`);
  }
  if (o.localAddress !== undefined && net.isIP(o.localAddress) === 0) {
    throw new ArgumentError(`connectFrom: localAddress must be an IP address, got ${JSON.stringify(o.localAddress)}`);
  }
  if (o.localAddress !== undefined && net.isIP(unmapV4(o.localAddress)) !== net.isIP(unmapV4(o.host))) {
    throw new ArgumentError(`connectFrom: localAddress ${o.localAddress} and host ${o.host} are of different families`);
  }
  if (o.connectTimeoutMs !== undefined && (!Number.isInteger(o.connectTimeoutMs) || o.connectTimeoutMs < 0)) {
    throw new ArgumentError(`connectFrom: connectTimeoutMs must be a non-negative integer, got ${String(o.connectTimeoutMs)}`);
  }
  if (o.tableMaxAgeMs !== undefined && (!Number.isInteger(o.tableMaxAgeMs) || o.tableMaxAgeMs < 0)) {
    throw new ArgumentError(`connectFrom: tableMaxAgeMs must be a non-negative integer, got ${String(o.tableMaxAgeMs)}`);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
    throw new ArgumentError("connectFrom: signal must be an AbortSignal");
  }
  return range;
}

/**
 * Connects to host:port from a local port in `localPorts` whose 4-tuple is neither live nor in
 * TIME_WAIT. Rejects with PortsExhaustedError (counts by state) when no port is left, AddrinuseError
 * AIU_NOT_ROOT / AIU_CONNECT_REFUSED / AIU_CONNECT_TIMEOUT / AIU_CONNECT_FAILED, or `signal.reason` on abort.
 * Whichever side closes the returned socket first keeps the TIME_WAIT; for a reusable port range,
 * let the remote close first.
 */
export function connectFrom(o: ConnectFromOptions): Promise<ConnectFromResult> {
  // Validation throws here, at the call, not as a rejection later.
  const range = validate(o);
  return run(o, range);
}

async function run(o: ConnectFromOptions, range: [number, number]): Promise<ConnectFromResult> {
  if (o.signal?.aborted) throw o.signal.reason;
  const deadline = o.connectTimeoutMs ? Date.now() + o.connectTimeoutMs : undefined;
  const host = unmapV4(o.host);
  const family = net.isIP(host) === 4 ? 4 : 6;
  const key = formatEndpoint(host, o.port) + (o.localAddress ? ` from ${unmapV4(o.localAddress)}` : "");
  // Fetched afresh after every await: a finishing call may have dropped an empty map meanwhile.
  const marks = (): Map<number, number> => {
    let m = handedOut.get(key);
    if (!m) {
      m = new Map();
      handedOut.set(key, m);
    }
    return m;
  };
  const failed = new Map<number, string>();
  const size = range[1] - range[0] + 1;
  const maxAge = o.tableMaxAgeMs ?? DEFAULT_TABLE_MAX_AGE_MS;
  let attempts = 0;
  let last: PickResult | undefined;
  // One bind-and-connect from p: marked pending meanwhile (so concurrent calls skip it), then handed
  // out as of the current reading; a retryable refusal is remembered for the rounds after.
  const tryPort = async (p: number): Promise<ConnectFromResult | null> => {
    attempts++;
    marks().set(p, Infinity);
    const r = await bindAndConnect(o, p, deadline);
    if (r.ok) {
      marks().set(p, currentEpoch());
      return { socket: r.socket, localPort: p, attempts };
    }
    marks().delete(p);
    if (!r.retry) throw r.error;
    failed.set(p, r.errno);
    if (r.errno === "EADDRINUSE") markBindRefused(p, performance.now());
    return null;
  };
  try {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const before = currentEpoch();
      const snap = await kernelTable(family, range, maxAge, round > 0 || maxAge === 0);
      if (o.signal?.aborted) throw o.signal.reason;
      const fresh = snap.epoch > before;
      const mine = marks();
      for (const [p, e] of mine) if (e < snap.epoch) mine.delete(p);
      const start = range[1] - (cursor++ % size);
      const skip = new Set<number>([...(o.exclude ?? []), ...failed.keys()]);
      for (const [p, e] of mine) if (e >= snap.epoch) skip.add(p);
      const demote = recentlyRefused(performance.now());
      const quick = firstUntouched(snap, range, start, skip, demote);
      if (quick !== undefined) {
        const done = await tryPort(quick);
        if (done) return done;
        skip.add(quick);
        if (failed.get(quick) === "EADDRINUSE") demote.add(quick);
      }
      last = pickLocalPorts({
        range,
        rows: snap.rows,
        host,
        port: o.port,
        ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}),
        exclude: skip,
        demote,
        excludeReason: (p) =>
          failed.get(p) ??
          (o.exclude?.has(p) ? "excluded" : mine.get(p) === Infinity ? "pending in this process" : "in use in this process"),
        start,
      });
      // Nothing left by a shared reading: read afresh before saying so (and count states, not marks).
      if (last.candidates.length === 0) {
        if (fresh) break;
        continue;
      }
      let tried = 0;
      for (const p of last.candidates) {
        if (tried >= MAX_ATTEMPTS_PER_ROUND) break;
        // Another call may have taken it while we awaited an earlier attempt.
        const mark = marks().get(p);
        if (mark !== undefined && mark >= snap.epoch) continue;
        tried++;
        const done = await tryPort(p);
        if (done) return done;
      }
    }
  } finally {
    if (handedOut.get(key)?.size === 0) handedOut.delete(key);
  }
  const byState: Record<string, number> = { ...(last?.byState ?? {}) };
  const what = `${size} candidate port${size === 1 ? "" : "s"} ${range[0]}..${range[1]} to ${formatEndpoint(o.host, o.port)}`;
  const gaveUp = last !== undefined && last.candidates.length > 0;
  throw new PortsExhaustedError(
    `${what}: ${gaveUp ? `gave up after ${attempts} attempts` : "none usable"}: ${describeCounts(byState)}. ` +
      `A TIME_WAIT to this destination lasts 60 s on the side that closed first: let the remote side close first, widen the range, or wait.`,
    byState,
  );
}
