import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { assertRouteOverBridge, down, missingRequirement, run, status, TestbedError, up, type Testbed } from "../../testbed/testbed.js";
import { main as testbedMain } from "../../testbed/cli.js";
import { captureIO } from "../helpers/io.js";

// Not the default prefix and net, so a testbed someone brought up by hand survives the test run.
const PREFIX = "aitbt";
const NET = "10.247";
const needs = missingRequirement();
const missingClient = ["/usr/bin/rsh", "/usr/bin/ssh", "/usr/bin/pdsh"].find((p) => !existsSync(p));

/** Processes whose command line names the testbed's state dir (its daemons do), wherever they are. */
function daemonsLeft(): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "latin1").includes(`addrinuse-testbed/${PREFIX}/`)) out.push(Number(d));
    } catch {
      // Exited during the walk.
    }
  }
  return out;
}

function ours(): { namespaces: string[]; links: string[] } {
  const re = new RegExp(`^${PREFIX}`);
  const namespaces = existsSync("/run/netns") ? readdirSync("/run/netns").filter((n) => re.test(n)) : [];
  return { namespaces, links: readdirSync("/sys/class/net").filter((n) => re.test(n)) };
}

test("the testbed CLI rejects bad input with one line and exit 2", async () => {
  for (const argv of [["up", "--hosts", "0"], ["up", "--hosts", "5", "--fault", "sideways=1"], ["sideways"]]) {
    const io = captureIO();
    const code = await testbedMain(argv, io);
    assert.equal(code, 2, argv.join(" "));
    assert.equal(io.err().trim().split("\n").length, 1, io.err());
  }
});

test("the route check refuses addresses that do not go over the bridge, and names", { skip: needs ?? false }, () => {
  for (const a of ["127.0.0.1", "192.0.2.77", "example.org"]) {
    assert.throws(() => assertRouteOverBridge(a, `${PREFIX}0`), (e: unknown) => e instanceof TestbedError);
  }
});

test("five hosts answer the real rsh, pdsh and ssh clients, each with its own hostname; down leaves nothing", { skip: needs ?? missingClient ?? false, timeout: 120_000 }, async (t) => {
  t.after(() => down({ prefix: PREFIX }));
  let tb: Testbed = await up({ hosts: 5, prefix: PREFIX, net: NET });
  assert.equal(tb.created, true);
  assert.equal(tb.hosts.length, 5);
  const addrs = tb.hosts.map((h) => h.address);
  assertRouteOverBridge(addrs, tb.bridge);
  t.diagnostic(`up 5 hosts in ${tb.setupMs} ms, ${Math.round(tb.hostPssBytes / 2 ** 20)} MiB PSS`);
  assert.equal(daemonsLeft().length, 10, "an inetd and an sshd per host");

  const rsh = await run("rsh", [addrs[0]!, "hostname"], { timeoutMs: 20_000 });
  assert.equal(rsh.stdout.trim(), tb.hosts[0]!.name, rsh.stderr);

  const pdsh = await run("pdsh", ["-R", "rsh", "-w", addrs.join(","), "hostname"], { timeoutMs: 20_000 });
  const lines = pdsh.stdout.trim().split("\n").sort();
  assert.deepEqual(lines, tb.hosts.map((h) => `${h.address}: ${h.name}`).sort(), pdsh.stderr);

  const ssh = await run("ssh", ["-F", tb.files.sshConfig, addrs[4]!, "hostname; id -u"], { timeoutMs: 20_000 });
  assert.equal(ssh.code, 0, ssh.stderr);
  assert.deepEqual(ssh.stdout.trim().split("\n"), [tb.hosts[4]!.name, "0"]);

  // The same options again: nothing is rebuilt.
  tb = await up({ hosts: 5, prefix: PREFIX, net: NET });
  assert.equal(tb.created, false);
  assert.equal(status({ prefix: PREFIX }).up, true);

  await down({ prefix: PREFIX });
  assert.deepEqual(ours(), { namespaces: [], links: [] });
  const st = status({ prefix: PREFIX });
  assert.equal(st.up, false);
  assert.equal(st.processes, 0);
  assert.deepEqual(daemonsLeft(), []);
  assert.equal(existsSync(`/tmp/addrinuse-testbed/${PREFIX}`), false);
  const mounts = execFileSync("cat", ["/proc/self/mountinfo"], { encoding: "utf8" });
  assert.equal(mounts.includes(`addrinuse-testbed/${PREFIX}`), false);
});

test("what a crashed run left (a namespace, a veth, the bridge) is removed by the next up", { skip: needs ?? false, timeout: 60_000 }, async (t) => {
  t.after(() => down({ prefix: PREFIX }));
  await down({ prefix: PREFIX });
  execFileSync("ip", ["link", "add", `${PREFIX}0`, "type", "bridge"]);
  execFileSync("ip", ["netns", "add", `${PREFIX}-h9`]);
  execFileSync("ip", ["link", "add", `${PREFIX}v9`, "type", "veth", "peer", "name", "eth0", "netns", `${PREFIX}-h9`]);
  const tb = await up({ hosts: 2, prefix: PREFIX, net: NET });
  assert.deepEqual(ours().namespaces.sort(), tb.hosts.map((h) => h.name).sort());
  assert.deepEqual(ours().links.sort(), [`${PREFIX}0`, `${PREFIX}v1`, `${PREFIX}v2`]);
  await down({ prefix: PREFIX });
  assert.deepEqual(ours(), { namespaces: [], links: [] });
});
