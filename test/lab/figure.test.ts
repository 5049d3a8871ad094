import { test } from "node:test";
import assert from "node:assert/strict";
import { simulate } from "../../src/lab/closing-model.js";
import { alignTransitions, escapeXml, renderHtml, renderSvg } from "../../src/lab/figure.js";
import type { ScenarioResult } from "../../src/lab/run.js";
import type { TimelineEntry } from "../../src/lab/sampler.js";
import { scenarioById } from "../../src/lab/scenarios.js";

// Scenario 1 as the sampler records it on loopback: FIN_WAIT_1 and LAST_ACK too brief to see.
const timeline: TimelineEntry[] = [
  { tMs: 0, kind: "state", side: "client", state: "ESTABLISHED", timer: "none", timerMs: 0, rxQueue: 0 },
  { tMs: 1, kind: "state", side: "server", state: "ESTABLISHED", timer: "none", timerMs: 0, rxQueue: 0 },
  { tMs: 10, kind: "action", side: "client", label: "client close()" },
  { tMs: 12, kind: "state", side: "client", state: "FIN_WAIT_2", timer: "timewait", timerMs: 60_000, rxQueue: 0 },
  { tMs: 12, kind: "state", side: "server", state: "CLOSE_WAIT", timer: "none", timerMs: 0, rxQueue: 0 },
  { tMs: 20, kind: "action", side: "server", label: "server close()" },
  { tMs: 22, kind: "state", side: "client", state: "TIME_WAIT", timer: "timewait", timerMs: 60_000, rxQueue: 0 },
  { tMs: 22, kind: "state", side: "server", state: "CLOSED", timer: "none", timerMs: 0, rxQueue: 0 },
];

function result(): ScenarioResult {
  const s = scenarioById(1)!;
  const model = simulate(s.script);
  return {
    id: 1,
    slug: s.slug,
    title: "client <closes> first",
    shows: s.shows,
    where: "loopback",
    status: "match",
    modelLabel: "RFC 9293 with Linux's rules",
    notes: [],
    durationMs: 30,
    tableReads: 30,
    timeline,
    sides: {
      client: {
        observed: ["ESTABLISHED", "FIN_WAIT_2", "TIME_WAIT"],
        model: model.paths.client.map((p) => p.state),
        verdict: { match: true },
        leftover: { state: "TIME_WAIT", kernelTimer: "timewait", timerLeftMs: 59_990, heldForMs: 60_000, estimated: false, endedBy: "kernel timer" },
      },
      server: { observed: ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"], model: model.paths.server.map((p) => p.state), verdict: { match: true }, leftover: null },
    },
    model,
    ports: { client: 40000, server: 40001, inNamespace: false },
  };
}

test("each model transition gets the time of its action or of the state the sampler saw, brief ones in between", () => {
  const r = result();
  const times = alignTransitions(r.model, r.timeline);
  // client close() -> FIN_WAIT_1 (action 10), server CLOSE_WAIT (seen 12), client FIN_WAIT_2 (seen 12),
  // server close() -> LAST_ACK (action 20), client TIME_WAIT (22), server CLOSED (22).
  assert.deepEqual(times, [10, 12, 12, 20, 22, 22]);
  for (let i = 1; i < times.length; i++) assert.ok(times[i]! >= times[i - 1]!);
});

test("the figure has both lanes, one arrow per segment, dashed boxes for unseen states and TIME_WAIT's 60 s", () => {
  const svg = renderSvg([result()]);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal((svg.match(/marker-end="url\(#arrow-/g) ?? []).length, 4, "FIN, ACK, FIN, ACK");
  assert.equal((svg.match(/stroke-dasharray="4 3"/g) ?? []).length, 2, "FIN_WAIT_1 and LAST_ACK were not seen");
  assert.match(svg, />client TIME_WAIT</);
  assert.match(svg, />60 s</);
  assert.match(svg, /client &lt;closes&gt; first/, "text is escaped");
  assert.doesNotMatch(svg, /<closes>/);
});

test("a skipped scenario is drawn as its title and reason only; the page carries the figure and the timeline", () => {
  const skipped: ScenarioResult = { ...result(), id: 3, status: "skipped", reason: "needs root", timeline: [] };
  const svg = renderSvg([result(), skipped]);
  assert.match(svg, /skipped: needs root/);
  const html = renderHtml([result()]);
  assert.match(html, /<td>22\.0<\/td><td>TIME_WAIT \(timer 60 s\)<\/td>/);
  assert.equal(escapeXml(`a<b & "c"`), "a&lt;b &amp; &quot;c&quot;");
});
