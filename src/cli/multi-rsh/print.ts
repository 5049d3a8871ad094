/**
 * What multi-rsh says about a run besides the hosts' own output: a line before it (the demo hosts,
 * duplicate hosts) and its end: the summary and TIME_WAIT ledger on stderr, or, with --json, one
 * document on stdout, or with --ndjson the run's own record after the hosts'.
 */
import type { FdLimitOutcome } from "../../kernel/fd-limit.js";
import type { DemoHosts } from "../../remote/demo/rshd.js";
import { formatSummary } from "../../remote/report.js";
import type { SessionReport } from "../../remote/session.js";
import type { CliIO } from "../io.js";
import type { Opts } from "./options.js";
import type { RunOutput } from "./output.js";
import type { Plan } from "./plan.js";
import type { Transfer } from "./transfer.js";

export function printStart(io: CliIO, p: Plan, demo: DemoHosts | null): void {
  if (demo) {
    io.stderr.write(
      `multi-rsh: demo: ${demo.addresses.length} built-in rsh hosts on 127.0.0.2-${2 + demo.addresses.length - 1} port ${demo.port}` +
        (demo.reservedOnly ? " (client on reserved ports, as root)" : " (not root: ordinary ports instead of reserved ones)") +
        "\n",
    );
  }
  if (p.duplicates.length) {
    io.stderr.write(`multi-rsh: ${p.duplicates.length} duplicate host${p.duplicates.length === 1 ? "" : "s"} run once: ${p.duplicates.slice(0, 10).join(", ")}${p.duplicates.length > 10 ? ", ..." : ""}\n`);
  }
}

/** A run's end, as printEnd needs it. */
export interface RunEnd {
  o: Opts;
  given(name: string): boolean;
  plan: Plan;
  report: SessionReport;
  exitCode: number;
  transport: string;
  /** Ours (stdin not sent, the fd limit), then the transport's. */
  notices: string[];
  fdLimit: FdLimitOutcome;
  parallel: number;
  rate: number;
  transfer: Transfer | null;
}

export function printEnd(io: CliIO, out: RunOutput, end: RunEnd): void {
  const { report, plan: p, transfer } = end;
  const { summary, results, demoHosts } = report;
  out.sink.flushGathered(p.hosts);
  const dropped = out.sink.dropped();
  const notices = end.notices.length ? { notices: end.notices } : {};
  // What both machine-readable forms say of the run as a whole.
  const totals = {
    counts: summary.counts,
    nonZeroExit: summary.nonZeroExit,
    ledger: summary.ledger,
    durationMs: summary.durationMs,
    exitCode: end.exitCode,
    ...(demoHosts ? { demoHosts } : {}),
    ...notices,
    ...(dropped ? { outputDropped: dropped } : {}),
  };
  if (out.mode === "json") {
    const dirs = out.dirs;
    const doc = {
      command: p.command,
      transport: end.transport,
      hosts: p.hosts,
      duplicates: p.duplicates,
      // Written in parts by writeDocument, in this place.
      results: null,
      ...totals,
      failures: summary.failures,
      causes: summary.causes,
      retries: summary.retries,
      fdLimit: { needed: end.fdLimit.needed, before: end.fdLimit.before, after: end.fdLimit.after, outcome: end.fdLimit.outcome, parallel: end.parallel },
      rate: end.rate,
      ...(transfer ? transfer.json(results) : {}),
      ...(dirs ? { outputDirs: { ...(end.o.o !== undefined ? { stdout: end.o.o } : {}), ...(end.o.e !== undefined ? { stderr: end.o.e } : {}) }, ...(dirs.problems.length ? { outputProblems: dirs.problems } : {}) } : {}),
    };
    out.sink.writeDocument(doc, results);
  } else if (out.mode === "ndjson") {
    // The host records went out as each ended; the run's own record closes the stream, on stdout
    // like the rest, so stderr stays quiet as with --json.
    const tail = {
      summary: {
        hosts: p.hosts.length,
        ...totals,
      },
    };
    io.stdout.write(JSON.stringify(tail) + "\n");
  } else {
    if (dropped) io.stderr.write(`multi-rsh: ${out.sink.droppedNotice(dropped)}\n`);
    for (const n of end.notices) io.stderr.write(`multi-rsh: ${n}\n`);
    for (const n of out.dirs?.problems.slice(0, 10) ?? []) io.stderr.write(`multi-rsh: ${n}\n`);
    if (transfer) io.stderr.write(transfer.describe(results));
    io.stderr.write(formatSummary(summary));
    // pdsh and clush read -t as the connect timeout: say what ours was when it cut hosts.
    const t = end.o.t;
    if (end.given("t") && t > 0 && results.some((r) => r.state === "timedout" && r.durationMs >= t * 1000 - 100)) {
      io.stderr.write(`multi-rsh: -t ${t} is the total time per host, connect included (pssh's -t); pdsh/clush's -t is --connect-timeout here, -t 0 = no limit\n`);
    }
    if (demoHosts) {
      io.stderr.write(
        `demo hosts' side: ${demoHosts.serverClosedFirst} of ${demoHosts.served} connections closed by the host first; the hosts hold ${demoHosts.hostTimeWait} TIME_WAIT (the remote end keeps them, as it should)\n`,
      );
    }
  }
}
