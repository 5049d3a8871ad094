/**
 * multi-rsh over real Debian in.rshd (under openbsd-inetd) in the testbed's namespaces: the features
 * the demo hosts also cover, checked once more against the real daemon, with the kernel as judge.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { main } from "../../src/cli/multi-rsh.js";
import { readTcpSockets } from "../../src/kernel/read.js";
import { captureIO } from "../helpers/io.js";
import { assertRouteOverBridge, down, missingRequirement, up } from "./testbed.js";

const PREFIX = "aitbm";
const NET = "10.248";
const needs = missingRequirement();

test("real in.rshd: host prefixes, exit codes, -S, -b, --stderr, and no local TIME_WAIT after the run", { skip: needs ?? false, timeout: 120_000 }, async (t) => {
  t.after(() => down({ prefix: PREFIX }));
  const tb = await up({ hosts: 3, prefix: PREFIX, net: NET });
  const addrs = tb.hosts.map((h) => h.address);
  assertRouteOverBridge(addrs, tb.bridge);
  const hosts = addrs.join(",");
  const run = async (args: string[]) => {
    const io = captureIO();
    const code = await main(args, io);
    return { code, out: io.out(), err: io.err() };
  };

  const plain = await run(["-w", hosts, "hostname"]);
  assert.equal(plain.code, 0, plain.err);
  assert.deepEqual(plain.out.trim().split("\n").sort(), tb.hosts.map((h) => `${h.address}: ${h.name}`).sort());

  const failOn = tb.hosts[1]!.name;
  const cmd = `[ "$(hostname)" = ${failOn} ] && exit 5; echo ok`;
  assert.equal((await run(["-w", hosts, cmd])).code, 1);
  assert.equal((await run(["-S", "-w", hosts, cmd])).code, 5);

  const gathered = await run(["-b", "-w", hosts, "echo same"]);
  assert.match(gathered.out, new RegExp(`\\(3\\)\\n-+\\nsame\\n`));

  const sep = await run(["--json", "--stderr", "-w", hosts, "echo out; echo err >&2"]);
  const doc = JSON.parse(sep.out);
  for (const r of doc.results) {
    assert.deepEqual(r.output, ["out"]);
    assert.deepEqual(r.stderr, ["err"]);
    assert.equal(r.closedBy, "remote");
  }
  const tuples = new Set<string>(doc.results.map((r: { host: string; localPort: number }) => `${r.host} ${r.localPort}`));
  const localTw = readTcpSockets().filter((s) => s.state === "TIME_WAIT" && s.remotePort === 514 && tuples.has(`${s.remoteAddress} ${s.localPort}`));
  assert.equal(localTw.length, 0);
  assert.equal(doc.ledger.localTimeWait, 0);
});
