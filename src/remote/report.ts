/**
 * What a run leaves behind: counts by state, failures with reasons, and the TIME_WAIT ledger: who
 * closed each connection, and how many of this run's local ports the kernel still holds in
 * TIME_WAIT afterwards (read from the kernel table, not assumed).
 */
import { unmapV4 } from "../core/address.js";
import { escapeTextForTerminal } from "../core/terminal-safe.js";
import type { PortFilter, TcpSocket } from "../kernel/parse.js";
import type { HostResult, HostState } from "./engine.js";

export interface Ledger {
  connections: number;
  remoteClosed: number;
  localClosed: number;
  reset: number;
  /** Local sockets of this run in TIME_WAIT when the run ended (or on their way: FIN_WAIT_*, CLOSING). */
  localTimeWait: number;
  /**
   * Hosts that ran with no connection this run could see (an -R exec program's own, if it made
   * one): what they left is not in localTimeWait, and the summary says so rather than claim 0.
   */
  notSeen: number;
}

export interface RunSummary {
  hosts: number;
  counts: Record<HostState, number>;
  nonZeroExit: number;
  failures: { host: string; state: HostState; cause: string | null; code: string | null; message: string }[];
  /** Failed hosts by cause (remote/failure-cause.ts), largest first. */
  causes: Record<string, number>;
  /** Connection attempts retried (ssh handshakes the server dropped before its banner), and on how many hosts. */
  retries: { attempts: number; hosts: number };
  ledger: Ledger;
  durationMs: number;
}

/**
 * A port filter that keeps every kernel row computeLedger can count (and, with `peerSide`, the other
 * end of this run's connections when the hosts are in this network namespace, as the demo hosts are),
 * so that the read at the end of a run skips the rest of a table that may hold thousands of other
 * programs' sockets. An own-side row must match a result's local port and remote port, so either
 * span alone finds them all; the narrower is used: rsh's local ports sit in 512-1023 while ssh's
 * are ephemeral and spread over 28,000 ports, all towards port 22. The peer's rows have this run's
 * local ports as their remote port. Null: no connection was made, nothing to read.
 */
export function ledgerPortFilter(results: readonly HostResult[], peerSide = false): PortFilter | null {
  let lMin = Infinity;
  let lMax = -1;
  let rMin = Infinity;
  let rMax = -1;
  for (const r of results) {
    if (r.localPort === null || !r.remoteAddress) continue;
    const rp = r.remotePort ?? 0;
    if (r.localPort < lMin) lMin = r.localPort;
    if (r.localPort > lMax) lMax = r.localPort;
    if (rp < rMin) rMin = rp;
    if (rp > rMax) rMax = rp;
  }
  if (lMax < 0) return null;
  const local: [number, number] = [lMin, lMax];
  if (peerSide) return { local, remote: local };
  return lMax - lMin <= rMax - rMin ? { local } : { remote: [rMin, rMax] };
}

/**
 * The TIME_WAITs the hosts keep for this run's connections: rows on `hostPort` at one of the hosts'
 * addresses whose remote end is one of this run's (host address, local port) pairs. Not every
 * TIME_WAIT on the hosts' port: earlier runs' are still there for up to 60 s.
 */
export function countPeerTimeWait(
  results: readonly HostResult[],
  rows: readonly TcpSocket[],
  hostPort: number,
): number {
  const ours = new Set<string>();
  for (const r of results) if (r.localPort !== null && r.remoteAddress) ours.add(`${unmapV4(r.remoteAddress)} ${r.localPort}`);
  let n = 0;
  for (const row of rows) {
    if (row.state === "TIME_WAIT" && row.localPort === hostPort && ours.has(`${unmapV4(row.localAddress)} ${row.remotePort}`)) n++;
  }
  return n;
}

const LEAVES_TIME_WAIT = new Set<TcpSocket["state"]>(["TIME_WAIT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING"]);

export function computeLedger(results: readonly HostResult[], rows: readonly TcpSocket[]): Ledger {
  const ours = new Set<string>();
  for (const r of results) {
    if (r.localPort !== null && r.remoteAddress) ours.add(`${r.localPort} ${unmapV4(r.remoteAddress)} ${r.remotePort ?? 0}`);
  }
  let tw = 0;
  for (const row of rows) {
    // A connection this side closed first and whose peer's FIN is still on its way is in FIN_WAIT_*
    // or CLOSING when the table is read, and in TIME_WAIT a moment later (a program's own ssh, just
    // exited): it is what the run leaves, so it counts. Our own sockets never pass through them.
    if (!LEAVES_TIME_WAIT.has(row.state)) continue;
    if (ours.has(`${row.localPort} ${unmapV4(row.remoteAddress)} ${row.remotePort}`)) tw++;
  }
  const by = (c: string) => results.filter((r) => r.closedBy === c).length;
  return {
    connections: results.filter((r) => r.closedBy !== null).length,
    remoteClosed: by("remote"),
    localClosed: by("local"),
    reset: by("reset"),
    localTimeWait: tw,
    notSeen: results.filter((r) => r.state === "done" && r.closedBy === null).length,
  };
}

export function summarise(results: readonly HostResult[], rows: readonly TcpSocket[], durationMs: number): RunSummary {
  const counts: Record<HostState, number> = { queued: 0, connecting: 0, running: 0, done: 0, failed: 0, timedout: 0, cancelled: 0 };
  for (const r of results) counts[r.state]++;
  return {
    hosts: results.length,
    counts,
    nonZeroExit: results.filter((r) => r.state === "done" && (r.exitCode ?? 0) !== 0).length,
    failures: results
      .filter((r) => r.state !== "done" || (r.exitCode ?? 0) !== 0)
      .map((r) => ({
        host: r.host,
        state: r.state,
        cause: r.cause ?? null,
        code: r.error?.code ?? null,
        message: r.error?.message ?? `exit code ${r.exitCode}`,
      })),
    ledger: computeLedger(results, rows),
    durationMs,
    causes: countCauses(results),
    retries: {
      attempts: results.reduce((n, r) => n + (r.retries ?? 0), 0),
      hosts: results.filter((r) => (r.retries ?? 0) > 0).length,
    },
  };
}

function countCauses(results: readonly HostResult[]): Record<string, number> {
  const n = new Map<string, number>();
  for (const r of results) if (r.cause) n.set(r.cause, (n.get(r.cause) ?? 0) + 1);
  return Object.fromEntries([...n].sort((a, b) => b[1] - a[1]));
}

export function formatSummary(s: RunSummary): string {
  const out: string[] = [];
  const parts = (["done", "failed", "timedout", "cancelled"] as const).filter((k) => s.counts[k] > 0).map((k) => `${s.counts[k]} ${k}`);
  out.push(
    `multi-rsh: ${s.hosts} host${s.hosts === 1 ? "" : "s"} in ${(s.durationMs / 1000).toFixed(2)} s: ${parts.join(", ") || "nothing run"}` +
      (s.nonZeroExit ? ` (${s.nonZeroExit} exited non-zero)` : ""),
  );
  // A message may quote the host (rshd's refusal text, an ssh banner): never raw control bytes.
  if (s.retries?.attempts) {
    out.push(`  retried: ${s.retries.attempts} connection${s.retries.attempts === 1 ? "" : "s"} on ${s.retries.hosts} host${s.retries.hosts === 1 ? "" : "s"} (dropped by the server before its banner)`);
  }
  const causes = Object.entries(s.causes ?? {});
  if (causes.length) out.push(`  causes: ${causes.map(([c, n]) => `${n} ${c}`).join(", ")}`);
  for (const f of s.failures.slice(0, 50)) {
    out.push(`  ${f.host}: ${f.state}${f.cause ? ` (${f.cause})` : ""}${f.code ? ` ${f.code}` : ""}: ${escapeTextForTerminal(f.message)}`);
  }
  if (s.failures.length > 50) out.push(`  ... and ${s.failures.length - 50} more (see --json)`);
  const l = s.ledger;
  out.push(
    `TIME_WAIT ledger: ${l.connections} connection${l.connections === 1 ? "" : "s"}: ${l.remoteClosed} closed by the remote first, ${l.localClosed} by us first, ${l.reset} reset; ` +
      `local TIME_WAIT left by this run: ${l.localTimeWait}` +
      (l.notSeen ? ` (not counted: ${l.notSeen} host${l.notSeen === 1 ? "" : "s"} whose program's connection, if any, this run could not see)` : ""),
  );
  return out.join("\n") + "\n";
}
