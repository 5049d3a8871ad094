import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CLOSING_STATES,
  comparePath,
  heldBy,
  linuxCloseCall,
  orphanRetransmitBudgetMs,
  pathStates,
  simulate,
  transition,
  type ClosingEvent,
  type ClosingState,
  type Segment,
} from "../../src/lab/closing-model.js";

type Row = [ClosingState, ClosingEvent, ClosingState, Segment[], boolean?];
const close: ClosingEvent = { kind: "close" };
const abort: ClosingEvent = { kind: "abort" };
const rcv = (segment: Segment | "FIN+ACK"): ClosingEvent => ({ kind: "receive", segment });
const timeout = (timer: "time-wait" | "fin-wait-2" | "retransmit"): ClosingEvent => ({ kind: "timeout", timer });

// Every state × event: [from, event, to, segments sent, is an error]. RFC 9293 §3.10.
const TABLE: Row[] = [
  // CLOSE (§3.10.4)
  ["LISTEN", close, "CLOSED", []],
  ["ESTABLISHED", close, "FIN_WAIT_1", ["FIN"]],
  ["CLOSE_WAIT", close, "LAST_ACK", ["FIN"]],
  ["FIN_WAIT_1", close, "FIN_WAIT_1", [], true],
  ["FIN_WAIT_2", close, "FIN_WAIT_2", [], true],
  ["CLOSING", close, "CLOSING", [], true],
  ["LAST_ACK", close, "LAST_ACK", [], true],
  ["TIME_WAIT", close, "TIME_WAIT", [], true],
  ["CLOSED", close, "CLOSED", [], true],
  // ABORT (§3.10.5)
  ["LISTEN", abort, "CLOSED", []],
  ["ESTABLISHED", abort, "CLOSED", ["RST"]],
  ["FIN_WAIT_1", abort, "CLOSED", ["RST"]],
  ["FIN_WAIT_2", abort, "CLOSED", ["RST"]],
  ["CLOSE_WAIT", abort, "CLOSED", ["RST"]],
  ["CLOSING", abort, "CLOSED", []],
  ["LAST_ACK", abort, "CLOSED", []],
  ["TIME_WAIT", abort, "CLOSED", []],
  ["CLOSED", abort, "CLOSED", [], true],
  // FIN arrives
  ["LISTEN", rcv("FIN"), "LISTEN", []],
  ["ESTABLISHED", rcv("FIN"), "CLOSE_WAIT", ["ACK"]],
  ["FIN_WAIT_1", rcv("FIN"), "CLOSING", ["ACK"]],
  ["FIN_WAIT_2", rcv("FIN"), "TIME_WAIT", ["ACK"]],
  ["CLOSE_WAIT", rcv("FIN"), "CLOSE_WAIT", []],
  ["CLOSING", rcv("FIN"), "CLOSING", []],
  ["LAST_ACK", rcv("FIN"), "LAST_ACK", []],
  ["TIME_WAIT", rcv("FIN"), "TIME_WAIT", ["ACK"]],
  ["CLOSED", rcv("FIN"), "CLOSED", ["RST"]],
  // ACK of our FIN arrives
  ["LISTEN", rcv("ACK"), "LISTEN", []],
  ["ESTABLISHED", rcv("ACK"), "ESTABLISHED", []],
  ["FIN_WAIT_1", rcv("ACK"), "FIN_WAIT_2", []],
  ["FIN_WAIT_2", rcv("ACK"), "FIN_WAIT_2", []],
  ["CLOSE_WAIT", rcv("ACK"), "CLOSE_WAIT", []],
  ["CLOSING", rcv("ACK"), "TIME_WAIT", []],
  ["LAST_ACK", rcv("ACK"), "CLOSED", []],
  ["TIME_WAIT", rcv("ACK"), "TIME_WAIT", []],
  ["CLOSED", rcv("ACK"), "CLOSED", ["RST"]],
  // FIN+ACK: ACK processed before FIN (§3.10.7.4)
  ["ESTABLISHED", rcv("FIN+ACK"), "CLOSE_WAIT", ["ACK"]],
  ["FIN_WAIT_1", rcv("FIN+ACK"), "TIME_WAIT", ["ACK"]],
  ["FIN_WAIT_2", rcv("FIN+ACK"), "TIME_WAIT", ["ACK"]],
  ["CLOSING", rcv("FIN+ACK"), "TIME_WAIT", ["ACK"]],
  // RST arrives
  ["LISTEN", rcv("RST"), "LISTEN", []],
  ["ESTABLISHED", rcv("RST"), "CLOSED", []],
  ["FIN_WAIT_1", rcv("RST"), "CLOSED", []],
  ["FIN_WAIT_2", rcv("RST"), "CLOSED", []],
  ["CLOSE_WAIT", rcv("RST"), "CLOSED", []],
  ["CLOSING", rcv("RST"), "CLOSED", []],
  ["LAST_ACK", rcv("RST"), "CLOSED", []],
  ["TIME_WAIT", rcv("RST"), "CLOSED", []],
  ["CLOSED", rcv("RST"), "CLOSED", []],
  // Timers
  ["TIME_WAIT", timeout("time-wait"), "CLOSED", []],
  ["FIN_WAIT_2", timeout("fin-wait-2"), "CLOSED", []],
  ["FIN_WAIT_1", timeout("retransmit"), "CLOSED", []],
  ["CLOSING", timeout("retransmit"), "CLOSED", []],
  ["LAST_ACK", timeout("retransmit"), "CLOSED", []],
  ["ESTABLISHED", timeout("time-wait"), "ESTABLISHED", [], true],
  ["CLOSE_WAIT", timeout("fin-wait-2"), "CLOSE_WAIT", [], true],
  ["TIME_WAIT", timeout("retransmit"), "TIME_WAIT", [], true],
];

const describe = (e: ClosingEvent) =>
  e.kind === "receive" ? `receive ${e.segment}` : e.kind === "timeout" ? `timeout ${e.timer}` : `${e.kind}()`;

for (const [from, event, to, send, isError] of TABLE) {
  test(`${from} + ${describe(event)} -> ${to}${send.length ? ` sending ${send.join(",")}` : ""}${isError ? " (refused)" : ""}`, () => {
    const t = transition(from, event);
    assert.equal(t.next, to);
    assert.deepEqual(t.send, send);
    assert.equal(t.error !== undefined, !!isError);
  });
}

test("the table covers every state for close, abort, FIN, ACK and RST", () => {
  for (const ev of [close, abort, rcv("FIN"), rcv("ACK"), rcv("RST")]) {
    for (const s of CLOSING_STATES) {
      assert.ok(TABLE.some(([f, e]) => f === s && describe(e) === describe(ev)), `${s} + ${describe(ev)} missing`);
    }
  }
});

test("client closes first: the client ends in TIME_WAIT, the server passes LAST_ACK to CLOSED", () => {
  const run = simulate([{ do: "settle" }, { do: "close", side: "client" }, { do: "deliver-all" }, { do: "settle" }, { do: "close", side: "server" }, { do: "deliver-all" }]);
  assert.deepEqual(pathStates(run.paths.client), ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]);
  assert.deepEqual(pathStates(run.paths.server), ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]);
  assert.deepEqual(run.paths.client.map((p) => p.held), [true, false, true, true]);
  assert.deepEqual(run.paths.server.map((p) => p.held), [true, true, false, true]);
  assert.deepEqual(run.segments.map((s) => `${s.from}:${s.segment}`), ["client:FIN", "server:ACK", "server:FIN", "client:ACK"]);
  assert.ok(run.segments.every((s) => s.delivered && s.receivedBy !== undefined));
  assert.deepEqual(run.errors, []);
});

test("both FINs in flight at once: both ends pass CLOSING and both keep TIME_WAIT", () => {
  const run = simulate([{ do: "close", side: "client" }, { do: "close", side: "server" }, { do: "deliver-all" }]);
  assert.deepEqual(pathStates(run.paths.client), ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]);
  assert.deepEqual(pathStates(run.paths.server), ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]);
});

test("an abort sends RST and the other end goes straight to CLOSED, no TIME_WAIT anywhere", () => {
  const run = simulate([{ do: "abort", side: "client" }, { do: "deliver-all" }]);
  assert.deepEqual(run.final, { client: "CLOSED", server: "CLOSED" });
  assert.deepEqual(run.segments.map((s) => s.segment), ["RST"]);
});

test("a FIN lost to a cut link leaves FIN_WAIT_2 on one end and LAST_ACK on the other", () => {
  const run = simulate([
    { do: "close", side: "client" },
    { do: "deliver-all" },
    { do: "settle" },
    { do: "cut", to: "client" },
    { do: "close", side: "server" },
    { do: "deliver-all" },
  ]);
  assert.deepEqual(run.final, { client: "FIN_WAIT_2", server: "LAST_ACK" });
  assert.equal(run.segments.at(-1)!.lost, true);
  const after = simulate([{ do: "close", side: "client" }, { do: "deliver-all" }, { do: "timeout", side: "client", timer: "fin-wait-2" }]);
  assert.equal(after.final.client, "CLOSED");
});

test("a segment to a CLOSED end is answered with RST", () => {
  const run = simulate([{ do: "abort", side: "client" }, { do: "cut", to: "server" }, { do: "close", side: "server" }, { do: "deliver", to: "client" }], {
    client: "ESTABLISHED",
    server: "CLOSE_WAIT",
  });
  assert.deepEqual(run.segments.map((s) => `${s.from}:${s.segment}`), ["client:RST", "server:FIN", "client:RST"]);
  assert.deepEqual(run.segments.map((s) => s.lost), [true, false, true], "the link towards the server is cut");
  assert.deepEqual(run.errors, []);
});

test("script errors are reported, not thrown", () => {
  const run = simulate([{ do: "close", side: "client" }, { do: "close", side: "client" }]);
  assert.match(run.errors[0]!, /connection closing/);
});

test("Linux turns close() into an abort with unread data or SO_LINGER 0", () => {
  assert.equal(linuxCloseCall({ unreadData: false, lingerZero: false }), "close");
  assert.equal(linuxCloseCall({ unreadData: true, lingerZero: false }), "abort");
  assert.equal(linuxCloseCall({ unreadData: false, lingerZero: true }), "abort");
});

test("what holds each leftover: timers for TIME_WAIT and orphaned FIN_WAIT_2, the program for CLOSE_WAIT", () => {
  assert.equal(heldBy("TIME_WAIT", true).timer, "time-wait");
  assert.equal(heldBy("FIN_WAIT_2", true).timer, "fin-wait-2");
  assert.equal(heldBy("FIN_WAIT_2", false).timer, "none");
  assert.equal(heldBy("CLOSE_WAIT", false).timer, "none");
  assert.equal(heldBy("LAST_ACK", true).timer, "retransmit");
  assert.equal(heldBy("CLOSED", false).timer, "none");
});

test("an orphan's FIN retransmissions last about 102 s with the default tcp_orphan_retries=0", () => {
  assert.equal(orphanRetransmitBudgetMs(0), 200 * 511);
  assert.equal(orphanRetransmitBudgetMs(1), 600);
  assert.equal(orphanRetransmitBudgetMs(20, 200) <= 21 * 120_000, true);
});

test("comparePath: a missed transient state still matches; a wrong or missing held state does not", () => {
  const model = simulate([{ do: "settle" }, { do: "close", side: "client" }, { do: "deliver-all" }, { do: "settle" }, { do: "close", side: "server" }, { do: "deliver-all" }]).paths;
  assert.deepEqual(comparePath(["ESTABLISHED", "FIN_WAIT_2", "TIME_WAIT"], model.client), { match: true });
  assert.deepEqual(comparePath(["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"], model.client), { match: true });
  assert.equal(comparePath(["ESTABLISHED", "TIME_WAIT"], model.client).match, false, "FIN_WAIT_2 is held and was not seen");
  assert.equal(comparePath(["ESTABLISHED", "FIN_WAIT_2", "CLOSED"], model.client).match, false);
  assert.equal(comparePath(["ESTABLISHED", "CLOSING", "TIME_WAIT"], model.client).match, false);
  assert.equal(comparePath(["ESTABLISHED", "CLOSE_WAIT", "CLOSED"], model.server).match, true);
  assert.equal(comparePath(["ESTABLISHED", "CLOSE_WAIT"], model.server).match, false, "ends too early");
  assert.equal(comparePath([], model.server).match, false);
});
