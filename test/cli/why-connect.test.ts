/**
 * Client-side exhaustion, live: a namespace whose ephemeral range is 6 ports (an even count: with an
 * odd one the kernel's two-parity scan in __inet_hash_connect can skip a port after wrapping, and
 * EADDRNOTAVAIL comes one connection early), a server in it, and a
 * client that connects until the kernel says EADDRNOTAVAIL. `why --connect` must count what the
 * kernel counted, before and after the client closes first (TIME_WAIT, tcp_tw_reuse off).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { canUseNetns, cliInNetns, makeNetns, nodeInNetns, sh } from "./netns.js";
import { exhaustion } from "../../src/diagnosis/exhaustion.js";
import { main } from "../../src/cli/addrinuse/addrinuse.js";
import { captureIO } from "../helpers/io.js";

const CLI = join(import.meta.dirname, "..", "..", "bin", "addrinuse.js");

// Inside the namespace: a server on 127.0.0.1:5000 (a fixed port is safe in a namespace of our own)
// and connections to it until connect() fails, at most 50. On "close" the clients end first.
const CLIENT = `
const net = require("net");
const srv = net.createServer((s) => s.on("end", () => s.end())).listen(5000, "127.0.0.1", async () => {
  const clients = [];
  let error = null;
  for (let i = 0; i < 50; i++) {
    const c = net.connect(5000, "127.0.0.1");
    const r = await new Promise((res) => { c.once("connect", () => res(null)); c.once("error", (e) => res(e.code)); });
    if (r) { error = r; break; }
    clients.push(c);
  }
  console.log(JSON.stringify({ connected: clients.length, error }));
  process.stdin.on("data", async () => {
    await Promise.all(clients.map((c) => new Promise((res) => { c.on("close", res); c.end(); })));
    const c = net.connect(5000, "127.0.0.1");
    const again = await new Promise((res) => { c.once("connect", () => res("connected")); c.once("error", (e) => res(e.code)); });
    c.destroy();
    console.log(JSON.stringify({ closed: clients.length, again }));
  });
});`;

test("why --connect counts the 4-tuples toward a destination against the range: live, then TIME_WAIT", { skip: canUseNetns() }, async (t) => {
  const ns = makeNetns(t, { "net.ipv4.ip_local_port_range": "40000 40005", "net.ipv4.tcp_tw_reuse": "0" });
  const run = await nodeInNetns(t, ns, CLIENT);
  assert.deepEqual(run.first, { connected: 6, error: "EADDRNOTAVAIL" }, "the kernel's own limit");
  assert.equal(sh(["ip", "netns", "exec", ns, "ss", "-Htan", "state", "established", "dport = :5000"]).trim().split("\n").length, 6, "ss agrees");

  const live = cliInNetns(ns, CLI, ["why", "--connect", "127.0.0.1:5000", "--json"]);
  assert.equal(live.status, 1, live.stderr);
  const doc = JSON.parse(live.stdout);
  assert.equal(doc.exhausted, true);
  assert.equal(doc.available, 6);
  assert.equal(doc.sources[0].localAddress, "127.0.0.1");
  assert.equal(doc.sources[0].used, 6);
  assert.equal(doc.sources[0].byState.ESTABLISHED, 6);
  assert.match(doc.summary.cause, /client-side port exhaustion/);
  const text = cliInNetns(ns, CLI, ["why", "--connect", "127.0.0.1:5000"]);
  assert.match(text.stdout, /^connect to 127\.0\.0\.1:5000: OUT OF LOCAL PORTS \(connect\(\) gets EADDRNOTAVAIL\)/);
  assert.match(text.stdout, /EADDRNOTAVAIL/);

  run.child.stdin!.write("close\n");
  const after = await run.next();
  assert.deepEqual(after, { closed: 6, again: "EADDRNOTAVAIL" }, "TIME_WAIT still holds every 4-tuple with tcp_tw_reuse=0");
  const tw = JSON.parse(cliInNetns(ns, CLI, ["why", "--connect", "127.0.0.1:5000", "--json"]).stdout);
  assert.equal(tw.exhausted, true);
  assert.equal(tw.sources[0].timeWait, 6);
  assert.equal(tw.twReuse, 0);
  assert.ok(tw.sources[0].nextFreeMs > 0 && tw.sources[0].nextFreeMs <= 60_000, String(tw.sources[0].nextFreeMs));
  assert.match(tw.advice.join(" "), /tcp_tw_reuse=1 lets connect\(\) take one over/);
  // Another destination port is not exhausted: the limit is per 4-tuple's destination.
  const other = JSON.parse(cliInNetns(ns, CLI, ["why", "--connect", "127.0.0.1:5001", "--json"]).stdout);
  assert.equal(other.exhausted, false);
});

test("tcp_tw_reuse: TIME_WAIT a second old is counted reusable on loopback with 2, not with 0; timestamps off disables it", () => {
  const rows = [40000, 40001].map((p, i) => ({ localAddress: "127.0.0.1", localPort: p, remoteAddress: "127.0.0.1", remotePort: 80, state: "TIME_WAIT", timerMs: i ? 59_800 : 30_000, owners: [] }));
  const base = { ephemeralRange: [40000, 40001] as const, reservedPorts: [], timestamps: 1 };
  assert.equal(exhaustion("127.0.0.1", 80, rows, { ...base, twReuse: 2 }).sources[0]!.reusableTimeWait, 1);
  assert.equal(exhaustion("127.0.0.1", 80, rows, { ...base, twReuse: 2 }).exhausted, false);
  assert.equal(exhaustion("127.0.0.1", 80, rows, { ...base, twReuse: 0 }).exhausted, true);
  assert.equal(exhaustion("127.0.0.1", 80, rows, { ...base, twReuse: 1, timestamps: 0 }).exhausted, true);
  // Reserved ports shrink what connect() may pick.
  assert.equal(exhaustion("127.0.0.1", 80, [], { ...base, twReuse: 0, reservedPorts: [[40001, 40001]] }).available, 1);
});

test("why --connect: bad destinations are one line and exit 2", async () => {
  for (const args of [["why", "--connect", "example.com:80"], ["why", "--connect", "127.0.0.1"], ["why", "--connect", "127.0.0.1:0"], ["why", "80", "--connect", "127.0.0.1:80"], ["why"]]) {
    const io = captureIO();
    assert.equal(await main(args, io), 2, args.join(" "));
    assert.equal(io.err().trim().split("\n").length, 1, io.err());
  }
});
