import { test } from "node:test";
import assert from "node:assert/strict";
import { startDemoHosts } from "../../src/remote/demo/rshd.js";
import { openSession } from "../../src/remote/session.js";

const noop = () => {};

test("a session runs every host and its ledger matches the kernel: the hosts closed first, no local TIME_WAIT", async (t) => {
  const demo = await startDemoHosts({ count: 4, first: 60 });
  t.after(() => demo.close());
  const session = await openSession({
    transport: "rsh",
    transportOptions: { port: demo.port, localPorts: demo.reservedOnly ? "reserved" : [40000, 60000] },
    hosts: demo.addresses,
    parallel: 2,
    separateStderr: false,
  });
  assert.equal(session.transport, "rsh");
  assert.equal(session.parallel, 2);
  const out = new Map<string, string>();
  const run = session.run({
    command: "echo $MULTI_RSH_HOST",
    timeoutMs: 20_000,
    connectTimeoutMs: 5000,
    commandTimeoutMs: 0,
    user: "",
    localUser: "root",
    onOutput: (host, _s, b) => out.set(host, (out.get(host) ?? "") + b.toString()),
    onState: noop,
  });
  const report = await run.finish({ source: "auto", demoHosts: demo });
  assert.deepEqual(report.results.map((r) => r.host), demo.addresses);
  for (const r of report.results) {
    assert.equal(r.state, "done", `${r.host}: ${r.error?.message}`);
    assert.equal(r.closedBy, "remote");
    assert.equal(out.get(r.host)?.trim(), r.host);
  }
  const l = report.summary.ledger;
  assert.equal(l.connections, 4);
  assert.equal(l.remoteClosed, 4);
  assert.equal(l.localTimeWait, 0);
  // The other end of the same connections, read from the same kernel table: the hosts hold them.
  assert.equal(report.demoHosts?.serverClosedFirst, 4);
  assert.equal(report.demoHosts?.hostTimeWait, 4);
});

test("an unknown transport name is refused when the session opens, before any host runs", async () => {
  await assert.rejects(
    openSession({ transport: "telnet", transportOptions: {}, hosts: ["127.0.0.1"], parallel: 1, separateStderr: false }),
    (e: Error & { code?: string }) => e.code === "AIU_USAGE" && /telnet/.test(e.message),
  );
});
