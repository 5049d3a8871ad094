/**
 * What connectFrom knows about a port range between its reads of the kernel table: the table's rows
 * for the range, read once and shared by every call, and what this process did with the range since
 * (ports handed out, ports whose bind was refused). Apart from connect-from.ts because this is the
 * process-wide state and the kernel I/O; the choice of a port from the rows (pickLocalPorts) is pure
 * and stays there.
 *
 * A read of the whole kernel table costs ~15 ms of kernel time on a machine with a large established
 * hash, however empty it is, plus parsing every row, which at a hundred calls a second would be a
 * core's worth. So calls share a snapshot up to `tableMaxAgeMs` old (and a read already under way),
 * and what this process did since the snapshot is known without the kernel: every read takes a new
 * epoch when it starts, every port we handed out to a destination is marked with the newest epoch at
 * that time, and a snapshot hides the ports whose mark is not older than itself (a read that started
 * before the connect may or may not show it). What other processes did since the snapshot shows up
 * as EADDRNOTAVAIL (retried with a fresh read), or, for a TIME_WAIT they made in that window, as its
 * silent reuse: callers sharing a port range with other programs towards one destination pass
 * tableMaxAgeMs: 0.
 */
import { readTcpSocketsAsync, type TableSource } from "../kernel/read.js";
import type { TcpSocket } from "../kernel/parse.js";

export interface Snapshot {
  /** The rows pickLocalPorts looks at: a local or remote port in the snapshot's range. */
  rows: TcpSocket[];
  epoch: number;
  /** When its read started. */
  at: number;
  /**
   * The ports of the range that any row mentions, as its local or its remote port; made on first use.
   * A fan-out makes hundreds of calls per reading, so this is worked out once per reading.
   */
  touched?: Set<number>;
}

/**
 * The rows the allocator needs for `range`: those whose local port is in it (listeners, our own
 * 4-tuples, other sockets sharing the port) and those whose remote port is in it (the destination's
 * end of a 4-tuple when the destination is in this network namespace). Read over netlink with the
 * range as a kernel-side filter, so the kernel neither prints nor sends the rest of the table; over
 * procfs (no `netlink` package, or `source: "procfs"`) the same rows, dropped before full parsing.
 */
export async function allocatorRows(
  range: readonly [number, number],
  family?: 4 | 6,
  source: "auto" | TableSource = "auto",
): Promise<{ rows: TcpSocket[]; source: TableSource }> {
  const r = await readTcpSocketsAsync({ ports: { local: range, remote: range }, source, ...(family ? { family } : {}) });
  return { rows: r.rows, source: r.source };
}

/**
 * The ports of the range that no row of the table mentions at all. pickLocalPorts would call such a
 * port "free" whatever the destination: nothing listens on it, no 4-tuple to anywhere uses it. So the
 * first of them in the walk (after the ports this process knows it handed out) can be tried without
 * classifying the whole range for every destination: a fan-out of hundreds calls this hundreds of
 * times per reading, which the full classification made a visible share of a short run's CPU.
 */
export function firstUntouched(
  snap: Snapshot,
  range: readonly [number, number],
  start: number,
  skip: ReadonlySet<number>,
  demote: ReadonlySet<number>,
): number | undefined {
  const [from, to] = range;
  let touched = snap.touched;
  if (!touched) {
    touched = new Set();
    for (const r of snap.rows) {
      if (r.localPort >= from && r.localPort <= to) touched.add(r.localPort);
      if (r.remotePort >= from && r.remotePort <= to) touched.add(r.remotePort);
    }
    snap.touched = touched;
  }
  const total = to - from + 1;
  for (let i = 0; i < total; i++) {
    let p = start - i;
    if (p < from) p += total;
    if (!touched.has(p) && !skip.has(p) && !demote.has(p)) return p;
  }
  return undefined;
}

/** Keyed by family and range: a snapshot holds only its range's rows. */
const snapshots = new Map<string, Snapshot>();
const reading = new Map<string, Promise<Snapshot>>();
let epoch = 0;
// Per destination: port -> epoch of the newest read started when we handed it out (Infinity while bound and
// not yet connected: bound-only sockets are not in /proc/net/tcp at all).
export const handedOut = new Map<string, Map<number, number>>();

/** The epoch of the newest read started: what a port handed out now is marked with. */
export function currentEpoch(): number {
  return epoch;
}

/** The snapshot for `range`: a shared one up to `maxAgeMs` old, the read under way, or (`fresh`) a new read. */
export function kernelTable(family: 4 | 6, range: readonly [number, number], maxAgeMs: number, fresh: boolean): Promise<Snapshot> {
  const key = `${family} ${range[0]}-${range[1]}`;
  if (!fresh) {
    const cached = snapshots.get(key);
    if (cached && performance.now() - cached.at <= maxAgeMs) return Promise.resolve(cached);
    // A fan-out's first calls all arrive before the first read is back: one read serves them all.
    const pending = reading.get(key);
    if (pending) return pending;
  }
  const e = ++epoch;
  const at = performance.now();
  const p = allocatorRows(range, family).then(({ rows }) => {
    const snap: Snapshot = { rows, epoch: e, at };
    const current = snapshots.get(key);
    if (!current || current.epoch < e) snapshots.set(key, snap);
    if (handedOut.size > 1024) {
      // Many destinations each called once: drop the marks every current snapshot already covers.
      const covered = Math.min(...[...snapshots.values()].map((x) => x.epoch));
      for (const [k, m] of handedOut) {
        for (const [port, mark] of m) if (mark < covered) m.delete(port);
        if (m.size === 0) handedOut.delete(k);
      }
    }
    return snap;
  });
  reading.set(key, p);
  const done = () => {
    if (reading.get(key) === p) reading.delete(key);
  };
  p.then(done, done);
  return p;
}

// Ports whose bind was refused lately (a socket without SO_REUSEADDR holds them, e.g. an rsh client
// from rresvport): the table cannot show that, so without this every call would try them first.
const bindRefused = new Map<number, number>();
const BIND_REFUSED_MS = 1000;

export function markBindRefused(port: number, now: number): void {
  bindRefused.set(port, now);
}

export function recentlyRefused(now: number): Set<number> {
  const out = new Set<number>();
  for (const [p, at] of bindRefused) {
    if (now - at > BIND_REFUSED_MS) bindRefused.delete(p);
    else out.add(p);
  }
  return out;
}
