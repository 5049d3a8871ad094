/**
 * Figure 1 of the note, drawn from a lab run: one ladder per scenario, client lane on the left,
 * server lane on the right, time going down.
 *
 * Rows are the model's transitions in order (a ladder diagram, so crossing FINs stay readable even
 * when loopback delivers them in the same millisecond); the left column gives each row's real offset
 * in ms, taken from the run. A state box is solid when the kernel table showed that state and dashed
 * when the model passes through it too fast for the sampler to see. Arrows are the segments the model
 * sends between those states (FIN, ACK, RST), placed at the rows of the transitions that sent and
 * received them; a segment lost to a downed link ends in a cross. Under each ladder, bars on one
 * scale for the whole figure compare the run with how long the kernel holds each leftover
 * (TIME_WAIT's real 60 s, FIN_WAIT_2's tcp_fin_timeout, LAST_ACK's retransmissions).
 *
 * Plain SVG strings; no dependencies.
 */
import type { ClosingState, ModelRun, Side } from "./closing-model.js";
import type { ScenarioResult } from "./run.js";
import type { TimelineEntry } from "./sampler.js";

const PANEL_W = 830;
const ROW_H = 34;
const TOP = 62;
const LANE: Record<Side, number> = { client: 310, server: 590 };
const BOX_W = 120;
const BAR_X = 170;
const BAR_W = 540;

const COLOURS: Partial<Record<ClosingState, string>> & { default: string } = {
  ESTABLISHED: "#d8f0d8",
  TIME_WAIT: "#ffd59a",
  CLOSED: "#e4e4e4",
  FIN_WAIT_2: "#cfe3ff",
  CLOSE_WAIT: "#f3d6f3",
  LAST_ACK: "#f3d6f3",
  default: "#dfe9f7",
};
const SEGMENT_COLOUR: Record<string, string> = { FIN: "#1f5fbf", ACK: "#2e8b3d", RST: "#c0392b" };

export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function seconds(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(0)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/**
 * A time in ms for each model transition: actions take the time the lab marked them, state changes
 * the time the sampler first saw the new state; the rest (states too brief to see, or no state
 * change) are placed between their neighbours. Never earlier than the transition before.
 */
export function alignTransitions(model: ModelRun, timeline: readonly TimelineEntry[]): number[] {
  const times: (number | undefined)[] = [];
  const usedState = new Set<TimelineEntry>();
  let floor = 0;
  for (const t of model.transitions) {
    let at: number | undefined;
    if (t.label) {
      // Two ends acting in one tick share one mark (scenario 3), so marks are not used up.
      const a = timeline.find((e) => e.kind === "action" && e.label === t.label && e.tMs >= floor);
      if (a) at = a.tMs;
    }
    if (at === undefined && t.to !== t.from) {
      const s = timeline.find((e) => e.kind === "state" && e.side === t.side && e.state === t.to && !usedState.has(e) && e.tMs >= floor);
      if (s) {
        at = s.tMs;
        usedState.add(s);
      }
    }
    times.push(at);
    if (at !== undefined) floor = at;
  }
  // Fill the gaps by interpolation between known neighbours.
  const out: number[] = [];
  for (let i = 0; i < times.length; i++) {
    const known = times[i];
    if (known !== undefined) {
      out.push(known);
      continue;
    }
    const prev = i > 0 ? out[i - 1]! : 0;
    let j = i + 1;
    while (j < times.length && times[j] === undefined) j++;
    const next = j < times.length ? times[j]! : prev;
    // i is the first of (j - i) unknowns between prev and next: take one equal step.
    out.push(Math.round((prev + (next - prev) / (j - i + 1)) * 10) / 10);
  }
  for (let i = 1; i < out.length; i++) out[i] = Math.max(out[i]!, out[i - 1]!);
  return out;
}

function wrap(text: string, max: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const w of text.split(" ")) {
    if (line && (line + " " + w).length > max) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines;
}

const STATUS_TEXT: Record<string, string> = {
  match: "matches the model",
  mismatch: "DOES NOT match the model",
  "not-forced": "not forced",
  skipped: "skipped",
  error: "failed",
};

function panelHeight(r: ScenarioResult): number {
  const rows = r.model.transitions.length + 3;
  const bars = 1 + (["client", "server"] as Side[]).filter((s) => r.sides[s].leftover?.heldForMs).length;
  return TOP + rows * ROW_H + 30 + bars * 24 + 20;
}

function panel(r: ScenarioResult, scaleMs: number): string {
  const out: string[] = [];
  const h = panelHeight(r);
  out.push(`<rect x="0.5" y="0.5" width="${PANEL_W - 1}" height="${h - 1}" fill="#fff" stroke="#bbb"/>`);
  const status = `${STATUS_TEXT[r.status] ?? r.status}${r.reason && r.status !== "match" ? `: ${r.reason}` : ""}`;
  out.push(`<text x="14" y="24" font-size="15" font-weight="bold">${r.id}. ${escapeXml(r.title)}</text>`);
  out.push(`<text x="14" y="42" font-size="11" fill="${r.status === "match" ? "#2e7d32" : r.status === "mismatch" || r.status === "error" ? "#c0392b" : "#8a6d00"}">${escapeXml(`${r.where}; ${status}`.slice(0, 120))}</text>`);
  if (r.status === "skipped" || r.status === "error") return out.join("\n");

  const model = r.model;
  const rows = model.transitions.length + 3;
  const y = (row: number) => TOP + row * ROW_H;
  const times = alignTransitions(model, r.timeline);
  const endRow = rows - 1;
  out.push(`<text x="${LANE.client}" y="${TOP - 6}" font-size="13" text-anchor="middle" font-weight="bold">client</text>`);
  out.push(`<text x="${LANE.server}" y="${TOP - 6}" font-size="13" text-anchor="middle" font-weight="bold">server</text>`);
  out.push(`<text x="14" y="${TOP - 6}" font-size="10" fill="#666">t (ms)</text>`);
  for (const side of ["client", "server"] as Side[]) {
    out.push(`<line x1="${LANE[side]}" y1="${y(0)}" x2="${LANE[side]}" y2="${y(endRow)}" stroke="#999" stroke-dasharray="2 3"/>`);
  }
  // Time labels, one per row that starts something.
  out.push(`<text x="14" y="${y(0) + 14}" font-size="10" fill="#666">0</text>`);
  times.forEach((t, i) => out.push(`<text x="14" y="${y(i + 1) + 4}" font-size="10" fill="#666">${t.toFixed(1)}</text>`));
  for (let i = 0; i < times.length; i++) out.push(`<line x1="50" y1="${y(i + 1)}" x2="${PANEL_W - 10}" y2="${y(i + 1)}" stroke="#f0f0f0"/>`);

  // State boxes.
  for (const side of ["client", "server"] as Side[]) {
    const seen = new Set(r.sides[side].observed);
    const path = model.paths[side];
    const enters: number[] = [0];
    model.transitions.forEach((t, i) => {
      if (t.side === side && t.to !== t.from) enters.push(i + 1);
    });
    path.forEach((p, k) => {
      const from = enters[k] ?? 0;
      const to = k + 1 < enters.length ? enters[k + 1]! : endRow;
      const top = y(from) + (from === 0 ? 0 : 3);
      const height = Math.max(y(to) - top - 3, 14);
      const fill = COLOURS[p.state] ?? COLOURS.default;
      const dashed = seen.has(p.state) ? "" : ` stroke-dasharray="4 3"`;
      const leftover = k === path.length - 1 ? r.sides[side].leftover : null;
      out.push(`<rect x="${LANE[side] - BOX_W / 2}" y="${top}" width="${BOX_W}" height="${height}" rx="4" fill="${seen.has(p.state) ? fill : "#fff"}" stroke="#555"${dashed}/>`);
      out.push(`<text x="${LANE[side]}" y="${top + Math.min(height / 2 + 4, 18)}" font-size="11" text-anchor="middle" font-family="monospace">${p.state}</text>`);
      if (leftover?.heldForMs) {
        out.push(`<text x="${LANE[side]}" y="${top + Math.min(height / 2 + 4, 18) + 13}" font-size="10" text-anchor="middle" fill="#7a4a00">${leftover.estimated ? "~" : ""}${seconds(leftover.heldForMs)} (kernel)</text>`);
      }
    });
  }

  // Action labels, outside the lanes.
  model.transitions.forEach((t, i) => {
    if (!t.label || (t.cause !== "close()" && t.cause !== "abort()")) return;
    const lines = wrap(t.label, 30);
    const x = t.side === "client" ? LANE.client - BOX_W / 2 - 6 : LANE.server + BOX_W / 2 + 6;
    const anchor = t.side === "client" ? "end" : "start";
    lines.forEach((l, n) => out.push(`<text x="${x}" y="${y(i + 1) + 4 + n * 12}" font-size="10" font-style="italic" text-anchor="${anchor}" fill="#333">${escapeXml(l)}</text>`));
  });

  // Segments.
  for (const seg of model.segments) {
    const sx = seg.from === "client" ? LANE.client + BOX_W / 2 : LANE.server - BOX_W / 2;
    const tx = seg.from === "client" ? LANE.server - BOX_W / 2 : LANE.client + BOX_W / 2;
    const sy = y(seg.sentBy + 1) + 2;
    const colour = SEGMENT_COLOUR[seg.segment] ?? "#333";
    if (seg.receivedBy === undefined) {
      const mx = (sx + tx) / 2;
      const my = sy + ROW_H * 0.6;
      out.push(`<line x1="${sx}" y1="${sy}" x2="${mx}" y2="${my}" stroke="${colour}" stroke-width="1.6"/>`);
      out.push(`<path d="M${mx - 5},${my - 5} L${mx + 5},${my + 5} M${mx - 5},${my + 5} L${mx + 5},${my - 5}" stroke="${colour}" stroke-width="2"/>`);
      out.push(`<text x="${mx}" y="${my - 8}" font-size="10" text-anchor="middle" fill="${colour}">${seg.segment} lost</text>`);
      continue;
    }
    const ty = y(seg.receivedBy + 1) - 2;
    out.push(`<line x1="${sx}" y1="${sy}" x2="${tx}" y2="${ty}" stroke="${colour}" stroke-width="1.6" marker-end="url(#arrow-${seg.segment})"/>`);
    const lx = sx + (tx - sx) * 0.3;
    const ly = sy + (ty - sy) * 0.3 - 4;
    out.push(`<text x="${lx}" y="${ly}" font-size="10" text-anchor="middle" fill="${colour}" font-weight="bold">${seg.segment}</text>`);
  }

  // Bars on one scale: the run, then what the kernel holds afterwards.
  let by = y(endRow) + 30;
  const runMs = Math.max(times.at(-1) ?? 0, r.timeline.at(-1)?.tMs ?? 0);
  const bar = (label: string, ms: number, colour: string, estimated: boolean) => {
    const w = Math.max(1.5, (ms / scaleMs) * BAR_W);
    out.push(`<text x="${BAR_X - 8}" y="${by + 11}" font-size="10" text-anchor="end">${escapeXml(label)}</text>`);
    out.push(`<rect x="${BAR_X}" y="${by + 2}" width="${w.toFixed(1)}" height="11" fill="${colour}"${estimated ? ` stroke="#7a4a00" stroke-dasharray="3 2"` : ""}/>`);
    out.push(`<text x="${BAR_X + w + 6}" y="${by + 11}" font-size="10">${estimated ? "~" : ""}${seconds(ms)}</text>`);
    by += 24;
  };
  bar("the run", runMs, "#9bb7e0", false);
  for (const side of ["client", "server"] as Side[]) {
    const l = r.sides[side].leftover;
    if (l?.heldForMs) bar(`${side} ${l.state}`, l.heldForMs, "#f0a830", l.estimated);
  }
  return out.join("\n");
}

const DEFS = `<defs>${Object.entries(SEGMENT_COLOUR)
  .map(([k, c]) => `<marker id="arrow-${k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="${c}"/></marker>`)
  .join("")}</defs>`;

/** Every result as a panel, two columns when there is more than one. */
export function renderSvg(results: readonly ScenarioResult[], title = "How TCP connections close, as this machine's kernel did it"): string {
  const scaleMs = Math.max(60_000, ...results.flatMap((r) => (["client", "server"] as Side[]).map((s) => r.sides[s].leftover?.heldForMs ?? 0)));
  const cols = results.length > 1 ? 2 : 1;
  const gap = 16;
  const heights = results.map(panelHeight);
  const rowsOfPanels: number[] = [];
  for (let i = 0; i < results.length; i += cols) rowsOfPanels.push(Math.max(...heights.slice(i, i + cols)));
  const header = 70;
  const width = cols * PANEL_W + (cols + 1) * gap;
  const height = header + rowsOfPanels.reduce((a, b) => a + b + gap, 0) + gap;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    DEFS,
    `<rect width="${width}" height="${height}" fill="#fafafa"/>`,
    `<text x="${gap}" y="30" font-size="19" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="${gap}" y="52" font-size="11" fill="#444">${escapeXml("Boxes: states (solid = seen in the kernel table, dashed = too brief to see). Arrows: FIN, ACK, RST as RFC 9293 sends them. Bars: one scale for the run and for how long the kernel keeps each leftover.")}</text>`,
  ];
  let yOff = header;
  results.forEach((r, i) => {
    const col = i % cols;
    if (col === 0 && i > 0) yOff += rowsOfPanels[i / cols - 1]! + gap;
    const x = gap + col * (PANEL_W + gap);
    parts.push(`<g transform="translate(${x},${yOff})">`, panel(r, scaleMs), `</g>`);
  });
  parts.push(`</svg>`);
  return parts.join("\n") + "\n";
}

/** A page with the figure and each scenario's timeline as a table. */
export function renderHtml(results: readonly ScenarioResult[]): string {
  const body: string[] = [];
  for (const r of results) {
    body.push(`<section><h2>${r.id}. ${escapeXml(r.title)} <small>${escapeXml(STATUS_TEXT[r.status] ?? r.status)}</small></h2>`);
    body.push(`<p>${escapeXml(r.shows)}</p>`);
    if (r.reason) body.push(`<p><b>${escapeXml(r.reason)}</b></p>`);
    if (r.timeline.length) {
      body.push(`<table><tr><th>t (ms)</th><th>client</th><th>server</th></tr>`);
      for (const e of r.timeline) {
        const cell = e.kind === "action" ? `<i>${escapeXml(e.label)}</i>` : `${e.state}${e.timer === "timewait" ? ` (timer ${seconds(e.timerMs)})` : ""}`;
        const [c, s] = e.kind === "action" && !e.side ? [cell, cell] : (e.side ?? "client") === "client" ? [cell, ""] : ["", cell];
        body.push(`<tr><td>${e.tMs.toFixed(1)}</td><td>${c}</td><td>${s}</td></tr>`);
      }
      body.push(`</table>`);
    }
    for (const n of r.notes) body.push(`<p class="note">${escapeXml(n)}</p>`);
    body.push(`</section>`);
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>addrinuse lab</title>
<style>body{font-family:Helvetica,Arial,sans-serif;max-width:1600px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;font-family:monospace;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}small{font-weight:normal;color:#555}.note{color:#555;font-size:13px}</style>
</head><body>
<h1>addrinuse lab</h1>
${renderSvg(results)}
${body.join("\n")}
</body></html>
`;
}
