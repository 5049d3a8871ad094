/**
 * `addrinuse lab`: run the closing scenarios on this machine's kernel and show, for each, the states
 * both ends went through (ms offsets), whether they match RFC 9293's model, and what the kernel still
 * holds afterwards and for how long. `--svg`/`--html` draw the note's Figure 1 from the run.
 *
 * Exit: 0 when every scenario run matched, was "not forced" (scenario 3, said so) or was skipped
 * with a reason; 1 when one did not match or failed; 2 for a bad scenario number.
 */
import { accessSync, constants, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { UsageError } from "../../errors.js";
import { renderHtml, renderSvg } from "../../lab/figure.js";
import { Agent } from "../../lab/agent.js";
import { removeStaleNamespaces, teardownAll, teardownAllSync } from "../../lab/netns.js";
import { releaseLeftovers, runScenario, type ScenarioResult } from "../../lab/run.js";
import { SCENARIOS, type Scenario } from "../../lab/scenarios.js";
import { StatusLine, table } from "../display.js";
import { EXIT_FAIL, EXIT_OK } from "../exit.js";
import { showsProgress, type CliIO } from "../io.js";

export interface LabOptions {
  which: "list" | "all" | number;
  json: boolean;
  svg?: string;
  html?: string;
  /** Drop the run's loopback leftovers afterwards (root, ss -K). */
  release?: boolean;
  /** How an interrupted run ends the process once it has cleaned up (tests replace it). */
  exit?: (code: number) => void;
}

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
/** As a program killed by SIGPIPE reports itself: `lab all | head -1`. */
const EPIPE_EXIT = 141;

interface ErrorEmitter {
  on?(event: "error", fn: (e: NodeJS.ErrnoException) => void): unknown;
  off?(event: "error", fn: (e: NodeJS.ErrnoException) => void): unknown;
}

/**
 * Until `release()`: a signal (Ctrl-C, kill) or a stdout whose reader went away (EPIPE) stops the
 * run here, kills the agents and deletes the namespaces (with their qdiscs), then exits; leaving
 * any other way (a crash) still deletes them as the process exits. Without this the scenario's own
 * teardown never runs on those paths, and its namespaces outlive it.
 */
function guardRun(io: CliIO, exit: (code: number) => void): { release(): void } {
  let stopping = false;
  const stop = (code: number) => {
    if (stopping) return;
    stopping = true;
    Agent.killAll();
    void teardownAll().finally(() => exit(code));
  };
  const onSignal: Record<string, () => void> = {};
  for (const [sig, code] of Object.entries(SIGNAL_EXIT)) {
    onSignal[sig] = () => stop(code);
    io.signals.on(sig, onSignal[sig]!);
  }
  const out = io.stdout as ErrorEmitter;
  const onError = (e: NodeJS.ErrnoException) => stop(e.code === "EPIPE" ? EPIPE_EXIT : 1);
  out.on?.("error", onError);
  process.on("exit", teardownAllSync);
  return {
    release() {
      for (const [sig, fn] of Object.entries(onSignal)) io.signals.off(sig, fn);
      out.off?.("error", onError);
      // The last write's EPIPE may come after this: nothing is left to clean, only to exit quietly.
      out.on?.("error", () => {});
      process.off("exit", teardownAllSync);
    },
  };
}

export function scenarioArg(text: string): "all" | number {
  const t = text.trim().toLowerCase();
  if (t === "all") return "all";
  if (/^\d+$/.test(t) && SCENARIOS.some((s) => s.id === Number(t))) return Number(t);
  throw new UsageError(`bad scenario '${text}': expected ${SCENARIOS[0]!.id}-${SCENARIOS[SCENARIOS.length - 1]!.id} or 'all' (addrinuse lab --list shows them)`);
}

function where(s: Scenario): string {
  return s.needs === null ? "loopback" : s.needs === "netns" ? "namespaces (root)" : "namespace + tc tbf (root)";
}

function listText(): string {
  const rows = [["#", "scenario", "where"], ...SCENARIOS.map((s) => [String(s.id), s.title, where(s)])];
  return `${table(rows)}\n\nRun one with \`addrinuse lab N\`, every one with \`addrinuse lab all\`.\n`;
}

const STATUS_WORD: Record<string, string> = {
  match: "MATCH",
  mismatch: "MISMATCH",
  "not-forced": "NOT FORCED",
  skipped: "SKIPPED",
  error: "FAILED",
};

function secondsText(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export function resultText(r: ScenarioResult): string {
  const lines: string[] = [];
  lines.push(`lab ${r.id}: ${r.title} (${r.where}) ... ${STATUS_WORD[r.status] ?? r.status}${r.reason ? `: ${r.reason}` : ""}`);
  lines.push(`  ${r.shows}`);
  if (r.status === "skipped") return lines.join("\n") + "\n";
  const rows: string[][] = [["t ms", "client", "server"]];
  for (const e of r.timeline) {
    if (e.kind === "action") {
      const cell = `> ${e.label}`;
      rows.push([e.tMs.toFixed(1), e.side === "server" ? "" : cell, e.side === "server" ? cell : ""]);
    } else {
      const timer = e.timer === "timewait" ? ` (timer ${secondsText(e.timerMs)})` : "";
      rows.push([e.tMs.toFixed(1), e.side === "client" ? e.state + timer : "", e.side === "server" ? e.state + timer : ""]);
    }
  }
  lines.push(table(rows, "  "));
  lines.push(`  model (${r.modelLabel}):`);
  for (const side of ["client", "server"] as const) {
    const s = r.sides[side];
    const verdict = s.verdict.match ? "fits" : `does not fit: ${s.verdict.reason}`;
    lines.push(`    ${side.padEnd(6)} model ${s.model.join(" > ")}`);
    lines.push(`    ${"".padEnd(6)} seen  ${s.observed.join(" > ") || "nothing"}  (${verdict})`);
  }
  for (const side of ["client", "server"] as const) {
    const l = r.sides[side].leftover;
    if (!l) {
      lines.push(`  ${side} leftover: none, the kernel keeps nothing`);
      continue;
    }
    const held = l.heldForMs === null ? "until its program closes it" : `${l.estimated ? "about " : ""}${secondsText(l.heldForMs)} in all`;
    const left = l.kernelTimer === "none" ? "no kernel timer" : `kernel ${l.kernelTimer} timer, ${secondsText(l.timerLeftMs)} left at the last read`;
    lines.push(`  ${side} leftover: ${l.state}, held ${held} (${left}); ended by ${l.endedBy}`);
  }
  if (r.ports && !r.ports.inNamespace && (r.sides.client.leftover || r.sides.server.leftover)) {
    lines.push(`  see it: addrinuse why ${r.ports.server} --host 127.0.0.1 (server port), addrinuse why ${r.ports.client} --host 127.0.0.1 (client port)`);
  }
  for (const n of r.notes) lines.push(`  note: ${n}`);
  lines.push(`  ${r.tableReads} reads of the kernel table in ${r.durationMs} ms`);
  return lines.join("\n") + "\n";
}

function assertWritable(file: string): void {
  try {
    accessSync(dirname(resolve(file)), constants.W_OK);
  } catch (e) {
    throw new UsageError(`cannot write '${file}': ${(e as NodeJS.ErrnoException).code ?? String(e)} (does its directory exist?)`);
  }
}

function ok(r: ScenarioResult): boolean {
  return r.status === "match" || r.status === "not-forced" || r.status === "skipped";
}

export async function runLab(o: LabOptions, io: CliIO): Promise<number> {
  if (o.which === "list") {
    if (o.json) {
      io.stdout.write(JSON.stringify({ scenarios: SCENARIOS.map((s) => ({ id: s.id, slug: s.slug, title: s.title, shows: s.shows, needs: s.needs })) }, null, 2) + "\n");
    } else io.stdout.write(listText());
    return EXIT_OK;
  }
  // Checked before the run, so a typo in a path does not cost a whole run.
  for (const file of [o.svg, o.html]) if (file !== undefined) assertWritable(file);
  const chosen = o.which === "all" ? SCENARIOS : SCENARIOS.filter((s) => s.id === o.which);
  const status = new StatusLine(io.stderr, showsProgress(io));
  const results: ScenarioResult[] = [];
  const guard = guardRun(io, o.exit ?? ((code) => process.exit(code)));
  try {
    // What runs that were killed before this fix, or by SIGKILL, left: their process is gone.
    const removed = await removeStaleNamespaces();
    if (removed.length && !o.json) io.stderr.write(`addrinuse lab: removed ${removed.length} namespace${removed.length === 1 ? "" : "s"} left by an interrupted run (${removed.join(" ")})\n`);
    for (const s of chosen) {
      const r = await runScenario(s, { onProgress: (t) => status.set(t) });
      status.clear();
      if (o.release) await releaseLeftovers(r);
      results.push(r);
      if (!o.json) io.stdout.write((results.length > 1 ? "\n" : "") + resultText(r));
    }
    if (o.json) {
      io.stdout.write(JSON.stringify({ ok: results.every(ok), results, ...(removed.length ? { removedStale: removed } : {}) }, null, 2) + "\n");
    } else if (results.length > 1) {
      const rows = [["#", "scenario", "result", "leftovers"]];
      for (const r of results) {
        const left = (["client", "server"] as const)
          .map((side) => r.sides[side].leftover)
          .map((l, i) => (l ? `${i === 0 ? "client" : "server"} ${l.state}${l.heldForMs ? ` ${l.estimated ? "~" : ""}${secondsText(l.heldForMs)}` : ""}` : ""))
          .filter(Boolean)
          .join(", ");
        rows.push([String(r.id), r.title, STATUS_WORD[r.status] ?? r.status, left || "none"]);
      }
      io.stdout.write(`\n${table(rows)}\n`);
    }
    if (o.svg) {
      writeFileSync(o.svg, renderSvg(results));
      io.stderr.write(`addrinuse lab: figure written to ${o.svg}\n`);
    }
    if (o.html) {
      writeFileSync(o.html, renderHtml(results));
      io.stderr.write(`addrinuse lab: page written to ${o.html}\n`);
    }
    return results.every(ok) ? EXIT_OK : EXIT_FAIL;
  } finally {
    // Held to the last write: the summary and figure lines can meet a closed stdout too.
    guard.release();
  }
}

export function registerLab(program: Command, io: CliIO, done: (code: number) => void): void {
  program
    .command("lab")
    .description("reproduce each way a TCP connection closes on this kernel, compare with RFC 9293's states, and show what is left and for how long")
    .argument("[scenario]", "scenario number, or 'all'", scenarioArg)
    .option("--list", "list the scenarios")
    .option("--json", "JSON on stdout")
    .option("--svg <file>", "draw the closing diagram (the note's Figure 1) from this run as SVG")
    .option("--html <file>", "write a page with the diagram and the timelines")
    .option("--release", "afterwards, drop what a loopback run left in the kernel (root; ss -K); namespace runs always clean up")
    .action(async (which: "all" | number | undefined, opts: { list?: boolean; json?: boolean; svg?: string; html?: string; release?: boolean }) => {
      if (opts.list && which !== undefined) throw new UsageError("give a scenario or --list, not both");
      done(
        await runLab(
          { which: opts.list || which === undefined ? "list" : which, json: !!opts.json, release: !!opts.release, ...(opts.svg ? { svg: opts.svg } : {}), ...(opts.html ? { html: opts.html } : {}) },
          io,
        ),
      );
    });
}
