/**
 * A host that times out or is cancelled does not leave its command running on the host: checked on
 * the host itself (its network namespace's processes), over the testbed's real in.rshd and sshd.
 * rsh: a second connection kills the process group the wrapper's shell leads; ssh: a "signal"
 * request and, since OpenSSH refuses it for root logins, a second channel that kills this
 * connection's session (src/remote/ssh/remote-kill.ts).
 *
 * ADDRINUSE_TESTBED_PREFIX / ADDRINUSE_TESTBED_NET move the testbed (default aitbr, 10.245).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { captureIO } from "../helpers/io.js";
import { assertRouteOverBridge, down, missingRequirement, run, up, type Testbed } from "../../testbed/testbed.js";

const PREFIX = process.env.ADDRINUSE_TESTBED_PREFIX ?? "aitbr";
const NET = process.env.ADDRINUSE_TESTBED_NET ?? "10.245";
const needs = missingRequirement();
let tb: Testbed | null = null;

before(async () => {
  if (needs) return;
  tb = await up({ hosts: 2, prefix: PREFIX, net: NET });
  assertRouteOverBridge(tb.hosts.map((h) => h.address), tb.bridge);
});

after(async () => {
  if (!needs) await down({ prefix: PREFIX });
});

/** Command lines of the processes in a host's network namespace that contain `needle`. */
async function hostProcesses(ns: string, needle: string): Promise<string[]> {
  const r = await run("ip", ["netns", "pids", ns]);
  const out: string[] = [];
  for (const pid of r.stdout.split("\n").filter(Boolean)) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "latin1").replace(/\0/g, " ").trim();
      if (cmd.includes(needle)) out.push(`${pid} ${cmd}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Waits (bounded, 5 s) until no process on any host matches; returns what is left. */
async function leftOnHosts(needle: string): Promise<string[]> {
  let left: string[] = [];
  for (let i = 0; i < 50; i++) {
    left = (await Promise.all(tb!.hosts.map((h) => hostProcesses(h.name, needle)))).flat();
    if (left.length === 0) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
  return left;
}

interface Result {
  state: string;
  remoteCommand?: string;
  error: { code: string; message: string } | null;
}

function transportArgs(transport: "rsh" | "ssh"): string[] {
  return transport === "rsh" ? ["-R", "rsh"] : ["-R", "ssh", "-F", tb!.files.sshConfig];
}

for (const transport of ["rsh", "ssh"] as const) {
  test(`-R ${transport}: a timed-out command is ended on the host, and the result says so`, { skip: needs ?? false }, async () => {
    // A duration no other run uses, so the host's process list tells this run's sleep apart.
    const secs = `41.${process.pid % 1000}${transport === "rsh" ? 1 : 2}`;
    const io = captureIO();
    const code = await main([...transportArgs(transport), "--json", "-t", "2", "-w", tb!.hosts.map((h) => h.address).join(","), `sleep ${secs}; echo not-killed`], io);
    assert.equal(code, 1, io.err());
    const doc = JSON.parse(io.out()) as { results: Result[] };
    for (const r of doc.results) {
      assert.equal(r.state, "timedout");
      assert.equal(r.remoteCommand, "ended", JSON.stringify(r));
    }
    assert.deepEqual(await leftOnHosts(`sleep ${secs}`), [], "the command still runs on the host");
  });

  test(`-R ${transport}: a command cancelled by Ctrl-C twice is ended on the host`, { skip: needs ?? false }, async () => {
    const secs = `42.${process.pid % 1000}${transport === "rsh" ? 1 : 2}`;
    const io = captureIO();
    const write = io.stdout.write.bind(io.stdout);
    let started!: () => void;
    const allStarted = new Promise<void>((r) => (started = r));
    io.stdout.write = (chunk: string) => {
      const w = write(chunk);
      if ((io.out().match(/: started/g) ?? []).length === tb!.hosts.length) started();
      return w;
    };
    const running = main([...transportArgs(transport), "-t", "60", "-w", tb!.hosts.map((h) => h.address).join(","), `echo started; sleep ${secs}`], io);
    await allStarted;
    const before = (await Promise.all(tb!.hosts.map((h) => hostProcesses(h.name, `sleep ${secs}`)))).flat();
    assert.ok(before.length >= tb!.hosts.length, `the command runs on every host before Ctrl-C: ${before.join("; ")}`);
    io.signals.emit("SIGINT");
    io.signals.emit("SIGINT");
    assert.equal(await running, 130);
    assert.match(io.err(), /2 cancelled/);
    assert.deepEqual(await leftOnHosts(`sleep ${secs}`), [], "the command still runs on the host");
  });
}
