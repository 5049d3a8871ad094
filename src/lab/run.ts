/**
 * Runs one scenario on the real kernel and compares what the sampler saw with the model.
 *
 * Verdicts: "match" when both ends' observed states fit the scenario's model (comparePath: every
 * held state seen, nothing the model does not have, same last state); "not-forced" when they fit one
 * of the scenario's honest alternatives instead (the kernel delivered one FIN before the other was
 * sent); "mismatch" otherwise, with the first reason; "skipped" with a one-line reason when the run
 * needs what this machine does not give (root, `ip`, `tc`); "error" when the run itself failed.
 * Agents and namespaces are torn down whatever happens.
 */
import { readFileSync } from "node:fs";
import {
  comparePath,
  heldBy,
  orphanRetransmitBudgetMs,
  simulate,
  SIDES,
  type ClosingState,
  type ModelRun,
  type PathEntry,
  type ScriptStep,
  type Side,
  type Verdict,
} from "./closing-model.js";
import type { TimerKind } from "../kernel/parse.js";
import { Agent } from "./agent.js";
import { NamespaceSet, namespaceUnavailable, run } from "./netns.js";
import { Sampler, type ObservedState, type TimelineEntry, type Watch } from "./sampler.js";
import type { LabContext, Scenario } from "./scenarios.js";

export type LabStatus = "match" | "mismatch" | "not-forced" | "skipped" | "error";

export interface Leftover {
  state: ObservedState;
  /** The kernel's timer on the row when last read, and the time left on it. */
  kernelTimer: TimerKind;
  timerLeftMs: number;
  /** How long the kernel holds the state in all, from entering it to its timer ending; null when only a program can end it. */
  heldForMs: number | null;
  /** True when heldForMs is computed (retransmission back-off), not read from a kernel timer. */
  estimated: boolean;
  endedBy: string;
}

export interface SideResult {
  observed: ObservedState[];
  model: ClosingState[];
  verdict: Verdict;
  leftover: Leftover | null;
}

export interface ScenarioResult {
  id: number;
  slug: string;
  title: string;
  shows: string;
  where: "loopback" | "namespace";
  status: LabStatus;
  /** Why it is not a match / was skipped / failed. */
  reason?: string;
  /** Which model the run fits ("RFC 9293 with Linux's rules", or the alternative's label). */
  modelLabel: string;
  notes: string[];
  durationMs: number;
  tableReads: number;
  timeline: TimelineEntry[];
  sides: Record<Side, SideResult>;
  model: ModelRun;
  /** The connection's ports; `inNamespace` when it lived in a namespace the run made (and deleted). */
  ports: { client: number; server: number; inNamespace: boolean } | null;
}

export interface RunOptions {
  /** Progress text for a terminal (stderr). */
  onProgress?: (text: string) => void;
  /** How long to wait for each held state (default 5000 ms). */
  settleTimeoutMs?: number;
}

const PRIMARY = "RFC 9293 with Linux's rules";
let runCounter = 0;

/** The states both ends hold at each settle point, then at the end. */
function holdPoints(script: readonly ScriptStep[]): Record<Side, ClosingState>[] {
  const points: Record<Side, ClosingState>[] = [];
  script.forEach((s, i) => {
    if (s.do === "settle") points.push(simulate(script.slice(0, i + 1)).final);
  });
  points.push(simulate(script).final);
  return points;
}

function observedPath(timeline: readonly TimelineEntry[], side: Side): ObservedState[] {
  const out: ObservedState[] = [];
  for (const e of timeline) if (e.kind === "state" && e.side === side) out.push(e.state);
  return out;
}

function compareAll(timeline: readonly TimelineEntry[], paths: Record<Side, PathEntry[]>): Record<Side, Verdict> {
  const r = {} as Record<Side, Verdict>;
  for (const side of SIDES) r[side] = comparePath(observedPath(timeline, side) as ClosingState[], paths[side]);
  return r;
}

/**
 * /proc/sys shows the reader's own namespace, so a namespace this run made (procRoot /proc/PID) is
 * read as the kernel's per-namespace default, which is what a fresh namespace has.
 */
function intSysctl(procRoot: string, name: string, namespaceDefault: number): number {
  if (procRoot !== "/proc") return namespaceDefault;
  try {
    const n = Number(readFileSync(`/proc/sys/${name.replace(/\./g, "/")}`, "utf8").trim());
    return Number.isFinite(n) ? n : namespaceDefault;
  } catch {
    return namespaceDefault;
  }
}

function leftoverOf(sampler: Sampler, side: Side, orphan: boolean, procRoot: string): Leftover | null {
  const last = sampler.lastRow(side);
  const entry = [...sampler.timeline].reverse().find((e) => e.kind === "state" && e.side === side);
  if (!last?.row || !entry || entry.kind !== "state" || entry.state === "CLOSED") return null;
  const state = entry.state;
  const holder = heldBy(state as ClosingState, orphan);
  let heldForMs: number | null = null;
  if (last.row.timer === "timewait") heldForMs = Math.round(last.tMs - entry.tMs + last.row.timerMs);
  else if (holder.timer === "retransmit") heldForMs = orphanRetransmitBudgetMs(intSysctl(procRoot, "net.ipv4.tcp_orphan_retries", 0));
  return { state, kernelTimer: last.row.timer, timerLeftMs: last.row.timerMs, heldForMs, estimated: last.row.timer !== "timewait", endedBy: holder.endedBy };
}

export async function runScenario(scenario: Scenario, options: RunOptions = {}): Promise<ScenarioResult> {
  const settleTimeoutMs = options.settleTimeoutMs ?? 5000;
  const models = [
    { status: "match" as const, label: PRIMARY, script: scenario.script },
    ...(scenario.alternatives ?? []),
  ].map((m) => ({ ...m, run: simulate(m.script), points: holdPoints(m.script) }));
  const primary = models[0]!;
  const base = {
    id: scenario.id,
    slug: scenario.slug,
    title: scenario.title,
    shows: scenario.shows,
    where: scenario.needs ? ("namespace" as const) : ("loopback" as const),
  };
  const emptySides = (): Record<Side, SideResult> => {
    const r = {} as Record<Side, SideResult>;
    for (const side of SIDES) r[side] = { observed: [], model: primary.run.paths[side].map((p) => p.state), verdict: { match: false, reason: "not run" }, leftover: null };
    return r;
  };

  if (scenario.needs) {
    const why = await namespaceUnavailable(scenario.needs === "netns+tc");
    if (why) {
      return { ...base, status: "skipped", reason: why, modelLabel: PRIMARY, notes: [], durationMs: 0, tableReads: 0, timeline: [], sides: emptySides(), model: primary.run, ports: null };
    }
  }

  const sampler = new Sampler();
  const namespaces = new NamespaceSet();
  const agents: Agent[] = [];
  const notes: string[] = [];
  const procRoots: Record<Side, string> = { client: "/proc", server: "/proc" };
  let ports: ScenarioResult["ports"] = null;
  let settleIndex = 0;
  const progress = (t: string) => options.onProgress?.(`lab ${scenario.id}: ${t}`);

  const ctx: LabContext = {
    sampler,
    namespaces,
    tag: `${scenario.id}${process.pid % 10000}${runCounter++ % 10}`,
    async agent(netns) {
      const a = await Agent.start(netns);
      agents.push(a);
      return a;
    },
    async act(label, side, fn) {
      progress(label);
      sampler.mark(label, side);
      await fn();
    },
    async settle() {
      const k = settleIndex++;
      const wanted = models.map((m) => m.points[k]).filter((p): p is Record<Side, ClosingState> => p !== undefined);
      const ok = await sampler.waitFor((s) => wanted.some((w) => SIDES.every((side) => s.state(side) === w[side])), settleTimeoutMs);
      if (!ok) {
        const want = wanted.map((w) => `client ${w.client}, server ${w.server}`).join(" or ");
        notes.push(`after ${settleTimeoutMs} ms the kernel showed client ${sampler.state("client") ?? "nothing"}, server ${sampler.state("server") ?? "nothing"} (the model holds ${want})`);
      }
      return ok;
    },
    watchPair(o) {
      ports = { client: o.clientPort, server: o.serverPort, inNamespace: o.serverProc !== "/proc" };
      procRoots.client = o.clientProc;
      procRoots.server = o.serverProc;
      const watches: Watch[] = [
        { side: "client", procRoot: o.clientProc, localPort: o.clientPort, remotePort: o.serverPort },
        { side: "server", procRoot: o.serverProc, localPort: o.serverPort, remotePort: o.clientPort },
      ];
      for (const w of watches) sampler.watch(w);
    },
    note(text) {
      notes.push(text);
    },
  };

  const started = sampler.now();
  let failure: string | undefined;
  const leftovers: Record<Side, Leftover | null> = { client: null, server: null };
  sampler.start(1);
  try {
    progress("starting");
    await scenario.run(ctx);
    await sampler.sample();
    for (const side of SIDES) leftovers[side] = leftoverOf(sampler, side, scenario.orphan[side], procRoots[side]);
  } catch (e) {
    failure = (e as Error).message;
  } finally {
    await sampler.stop();
    await Promise.all(agents.map((a) => a.stop()));
    await namespaces.teardown();
  }

  // Offsets from the first state seen: process start-up is not part of the closing.
  const t0 = sampler.timeline.find((e) => e.kind === "state")?.tMs ?? 0;
  const timeline = sampler.timeline.map((e) => ({ ...e, tMs: Math.round((e.tMs - t0) * 10) / 10 }));
  const verdicts = models.map((m) => ({ m, v: compareAll(timeline, m.run.paths) }));
  const fit = verdicts.find(({ v }) => SIDES.every((side) => v[side].match));
  const shown = fit ?? verdicts[0]!;
  const sides = {} as Record<Side, SideResult>;
  for (const side of SIDES) {
    sides[side] = {
      observed: observedPath(timeline, side),
      model: shown.m.run.paths[side].map((p) => p.state),
      verdict: shown.v[side],
      leftover: leftovers[side],
    };
  }
  let status: LabStatus;
  let reason: string | undefined;
  if (failure) {
    status = "error";
    reason = failure;
  } else if (fit) {
    status = fit.m.status;
    if (status !== "match") reason = fit.m.label;
  } else {
    status = "mismatch";
    const bad = SIDES.find((side) => !shown.v[side].match)!;
    const v = shown.v[bad];
    reason = `${bad}: ${v.match ? "" : v.reason}`;
  }
  return {
    ...base,
    status,
    ...(reason ? { reason } : {}),
    modelLabel: shown.m.label,
    notes,
    durationMs: Math.round(sampler.now() - started),
    tableReads: sampler.reads,
    timeline,
    sides,
    model: shown.m.run,
    ports,
  };
}

/**
 * Destroys what a loopback run left in the kernel (its TIME_WAIT), with `ss -K` as root: for tests and
 * repeated runs. Namespace runs need nothing, deleting the namespace dropped their sockets. Resolves
 * to the number of leftovers it asked the kernel to drop; never throws.
 */
export async function releaseLeftovers(r: ScenarioResult): Promise<number> {
  if (!r.ports || r.ports.inNamespace || process.getuid?.() !== 0) return 0;
  const left = SIDES.filter((s) => r.sides[s].leftover !== null).length;
  if (left === 0) return 0;
  const { client: c, server: s } = r.ports;
  const filter = `( sport = :${c} and dport = :${s} ) or ( sport = :${s} and dport = :${c} )`;
  try {
    await run("ss", ["-K", "-tan", filter]);
    return left;
  } catch {
    return 0;
  }
}
