import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { simulate } from "../../src/lab/closing-model.js";
import { namespaceUnavailable } from "../../src/lab/netns.js";
import { releaseLeftovers, runScenario } from "../../src/lab/run.js";
import { SCENARIOS, scenarioById, type Scenario } from "../../src/lab/scenarios.js";

function ourNamespaces(): string[] {
  try {
    return execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
      .split("\n")
      .map((l) => l.split(" ")[0]!)
      .filter((n) => n.startsWith("ailab"));
  } catch {
    return [];
  }
}

const FINAL: Record<number, { client: string; server: string }> = {
  1: { client: "TIME_WAIT", server: "CLOSED" },
  2: { client: "CLOSED", server: "TIME_WAIT" },
  3: { client: "TIME_WAIT", server: "TIME_WAIT" },
  4: { client: "CLOSED", server: "CLOSED" },
  5: { client: "CLOSED", server: "TIME_WAIT" },
  6: { client: "CLOSED", server: "CLOSED" },
  7: { client: "CLOSED", server: "CLOSED" },
  8: { client: "FIN_WAIT_2", server: "LAST_ACK" },
};

test("the scenario table's models end where the note and Linux say they do", () => {
  assert.deepEqual(SCENARIOS.map((s) => s.id), [1, 2, 3, 4, 5, 6, 7, 8]);
  for (const s of SCENARIOS) {
    const run = simulate(s.script);
    assert.deepEqual(run.errors, [], `scenario ${s.id}`);
    assert.deepEqual(run.final, FINAL[s.id], `scenario ${s.id}`);
  }
});

for (const s of SCENARIOS) {
  test(`lab ${s.id} (${s.title}): both ends end in the model's states on the real kernel`, async (t) => {
    const why = s.needs ? await namespaceUnavailable(s.needs === "netns+tc") : null;
    if (why) return t.skip(why);
    const r = await runScenario(s);
    t.after(() => releaseLeftovers(r));
    const finals = { client: r.sides.client.observed.at(-1), server: r.sides.server.observed.at(-1) };
    if (s.id === 3 && r.status === "not-forced") {
      // Allowed, but then it must be one of the honest alternatives, never the simultaneous model.
      assert.notDeepEqual(finals, FINAL[3]);
      assert.ok(r.reason, "a not-forced run says which FIN arrived first");
      return;
    }
    assert.equal(r.status, "match", `${r.reason ?? ""} ${JSON.stringify(r.timeline)}`);
    assert.deepEqual(finals, FINAL[s.id]);
    assert.deepEqual({ client: r.sides.client.model.at(-1), server: r.sides.server.model.at(-1) }, FINAL[s.id]);
    for (const side of ["client", "server"] as const) {
      const final: string | undefined = finals[side];
      const l = r.sides[side].leftover;
      if (final === "CLOSED") assert.equal(l, null);
      else assert.equal(l?.state, final);
      if (final === "TIME_WAIT" || final === "FIN_WAIT_2") {
        // Read from the kernel's timer, not waited for: 60 s of TIME_WAIT, 60 s of tcp_fin_timeout by default.
        assert.equal(l?.kernelTimer, "timewait");
        assert.ok(l!.timerLeftMs > 0 && l!.timerLeftMs <= 60_000, `timer ${l!.timerLeftMs}`);
        assert.ok(l!.heldForMs! > 55_000 && l!.heldForMs! < 65_000, `held ${l!.heldForMs}`);
      }
    }
    if (s.needs) assert.deepEqual(ourNamespaces(), [], "namespaces torn down");
  });
}

test("simultaneous close without a delaying qdisc is reported as not forced, never as a match", async (t) => {
  // Both shutdown() calls in one tick on plain loopback: the first FIN is delivered inside the first
  // call, so the second end is already in CLOSE_WAIT when it closes.
  const s3 = scenarioById(3)!;
  const plain: Scenario = {
    ...s3,
    needs: null,
    async run(ctx) {
      const agent = await ctx.agent();
      const { port } = await agent.request("listen", { name: "server", host: "127.0.0.1" });
      const { localPort } = await agent.request("connect", { name: "client", host: "127.0.0.1", port });
      ctx.watchPair({ clientProc: "/proc", serverProc: "/proc", clientPort: localPort!, serverPort: port! });
      await ctx.settle();
      await ctx.act("both shutdown() in one tick", undefined, () => agent.request("end-both", { names: ["client", "server"] }));
      await ctx.settle();
    },
  };
  const r = await runScenario(plain);
  t.after(() => releaseLeftovers(r));
  assert.notEqual(r.status, "mismatch", `${r.reason} ${JSON.stringify(r.timeline)}`);
  if (r.status === "match") {
    assert.deepEqual([r.sides.client.observed.at(-1), r.sides.server.observed.at(-1)], ["TIME_WAIT", "TIME_WAIT"]);
  } else {
    assert.equal(r.status, "not-forced");
    const finals = [r.sides.client.observed.at(-1), r.sides.server.observed.at(-1)].sort();
    assert.deepEqual(finals, ["CLOSED", "TIME_WAIT"]);
    assert.match(r.reason!, /FIN arrived before/);
  }
});

test("a run that does not follow its model is reported as a mismatch with the reason", async (t) => {
  // Scenario 1's live run judged against scenario 2's model.
  const wrong: Scenario = { ...scenarioById(1)!, script: scenarioById(2)!.script };
  const r = await runScenario(wrong, { settleTimeoutMs: 300 });
  t.after(() => releaseLeftovers(r));
  assert.equal(r.status, "mismatch");
  assert.match(r.reason!, /^(client|server): /);
  assert.ok(r.notes.some((n) => /the model holds/.test(n)), "the settle that never came is noted");
});
