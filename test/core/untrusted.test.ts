import { test } from "node:test";
import assert from "node:assert/strict";
import { BoundedBytes, oneLine } from "../../src/core/untrusted.js";
import { keepEnds } from "../../src/remote/transports/openssh.js";

test("oneLine escapes control characters and bounds the length", () => {
  assert.equal(oneLine("a\u0000b\nc\u001b[31m\u007f\u0085\u2028"), "a\\x00b\\x0ac\\x1b[31m\\x7f\\x85\\u2028");
  assert.equal(oneLine("x".repeat(10), 4), "xxxx... (6 more characters)");
  assert.equal(oneLine("ok: 'ünïcode'"), "ok: 'ünïcode'");
});

test("BoundedBytes keeps the first bytes, counts all, and says when the limit is passed", () => {
  const b = new BoundedBytes(4, 10);
  b.push(Buffer.from("abc"));
  b.push(Buffer.from("defg"));
  assert.equal(b.over, false);
  b.push(Buffer.from("hijk"));
  assert.equal(b.over, true);
  assert.deepEqual(b.text(), { text: "abcd", dropped: 7 });
});

test("keepEnds keeps the start and the end of an endless ssh log, at its size", () => {
  let log = "debug1: Connection established.\n";
  for (let i = 0; i < 50; i++) {
    log += "debug1: Remote: spam\n".repeat(1000);
    if (log.length > 64 * 1024) log = keepEnds(log, 64 * 1024);
  }
  log += "Permission denied (publickey).\n";
  assert.ok(log.length < 64 * 1024 + 100);
  assert.ok(log.startsWith("debug1: Connection established.\n"));
  assert.ok(log.endsWith("Permission denied (publickey).\n"));
});

test("writeJson writes what JSON.stringify(value, null, 2) writes, in pieces", async () => {
  const { writeJson } = await import("../../src/cli/multi-rsh/output-sink.js");
  const doc = {
    a: 1,
    s: "x\u0000\"\\\n",
    none: null,
    gone: undefined,
    empty: [],
    obj: {},
    list: [1, "two", null, undefined, [3, [4]], { k: [] }],
    results: [{ host: "h", output: ["l1", "l2"], error: { code: "E", message: "m" } }],
  };
  let out = "";
  let pieces = 0;
  writeJson(doc, 0, (s) => {
    out += s;
    pieces++;
  });
  assert.equal(out, JSON.stringify(doc, null, 2));
  assert.ok(pieces > 10);
});
