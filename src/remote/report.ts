/**
 * What a run leaves behind: counts by state, failures with reasons, and the TIME_WAIT ledger: who
 * closed each connection, and how many of this run's local ports the kernel still holds in
 * TIME_WAIT afterwards (read from the kernel table, not assumed).
 */
import { unmapV4 } from "../core/address.js";
import type { TcpSocket } from "../kernel/parse.js";
import type { HostResult, HostState } from "./engine.js";

export interface Ledger {
  connections: number;
  remoteClosed: number;
  localClosed: number;
  reset: number;
  /** Local sockets of this run still in TIME_WAIT when the run ended. */
  localTimeWait: number;
}

export interface RunSummary {
  hosts: number;
  counts: Record<HostState, number>;
  nonZeroExit: number;
  failures: { host: string; state: HostState; code: string | null; message: string }[];
  ledger: Ledger;
  durationMs: number;
}

export function computeLedger(results: readonly HostResult[], rows: readonly TcpSocket[]): Ledger {
  const ours = new Set<string>();
  for (const r of results) {
    if (r.localPort !== null && r.remoteAddress) ours.add(`${r.localPort} ${unmapV4(r.remoteAddress)} ${r.remotePort ?? 0}`);
  }
  let tw = 0;
  for (const row of rows) {
    if (row.state !== "TIME_WAIT") continue;
    if (ours.has(`${row.localPort} ${unmapV4(row.remoteAddress)} ${row.remotePort}`)) tw++;
  }
  const by = (c: string) => results.filter((r) => r.closedBy === c).length;
  return {
    connections: results.filter((r) => r.closedBy !== null).length,
    remoteClosed: by("remote"),
    localClosed: by("local"),
    reset: by("reset"),
    localTimeWait: tw,
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
        code: r.error?.code ?? null,
        message: r.error?.message ?? `exit code ${r.exitCode}`,
      })),
    ledger: computeLedger(results, rows),
    durationMs,
  };
}

export function formatSummary(s: RunSummary): string {
  const out: string[] = [];
  const parts = (["done", "failed", "timedout", "cancelled"] as const).filter((k) => s.counts[k] > 0).map((k) => `${s.counts[k]} ${k}`);
  out.push(
    `multi-rsh: ${s.hosts} host${s.hosts === 1 ? "" : "s"} in ${(s.durationMs / 1000).toFixed(2)} s: ${parts.join(", ") || "nothing run"}` +
      (s.nonZeroExit ? ` (${s.nonZeroExit} exited non-zero)` : ""),
  );
  for (const f of s.failures.slice(0, 50)) out.push(`  ${f.host}: ${f.state}${f.code ? ` ${f.code}` : ""}: ${f.message}`);
  if (s.failures.length > 50) out.push(`  ... and ${s.failures.length - 50} more (see --json)`);
  const l = s.ledger;
  out.push(
    `TIME_WAIT ledger: ${l.connections} connection${l.connections === 1 ? "" : "s"}: ${l.remoteClosed} closed by the remote first, ${l.localClosed} by us first, ${l.reset} reset; ` +
      `local TIME_WAIT left by this run: ${l.localTimeWait}`,
  );
  return out.join("\n") + "\n";
}
