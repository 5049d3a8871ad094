import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { startDemoHosts, type DemoHosts } from "../../src/remote/demo/rshd.js";
import { readTcpSockets } from "../../src/kernel/read.js";
import { captureIO } from "../helpers/io.js";
import { startFaultServer } from "../helpers/rsh-fault.js";

const isRoot = process.getuid?.() === 0;
let demo: DemoHosts;
// Addresses of their own, so a demo run elsewhere on the machine cannot collide with these.
before(async () => {
  demo = await startDemoHosts({ count: 4, first: 100 });
});
after(async () => {
  await demo?.close();
});

function base(): string[] {
  const args = ["--port", String(demo.port)];
  if (!demo.reservedOnly) args.push("--local-ports", "20000-29999");
  return args;
}

async function run(args: string[], stdin?: string) {
  const io = captureIO(stdin === undefined ? {} : { stdin });
  const code = await main([...base(), ...args], io);
  return { code, out: io.out(), err: io.err() };
}

async function runJson(args: string[]) {
  const r = await run(["--json", ...args]);
  return { ...r, doc: JSON.parse(r.out) };
}

const hosts = () => demo.addresses.join(",");

test("every output line carries its host; long lines whole; a last line without newline is printed", async () => {
  const long = 100_000;
  const r = await run(["-w", hosts(), `echo one; head -c ${long} /dev/zero | tr '\\0' x; echo; printf 'no newline'`]);
  assert.equal(r.code, 0, r.err);
  const lines = r.out.split("\n").filter(Boolean);
  assert.equal(lines.length, demo.addresses.length * 3);
  for (const h of demo.addresses) {
    const mine = lines.filter((l) => l.startsWith(`${h}: `));
    assert.deepEqual(mine.map((l) => l.slice(h.length + 2).slice(0, 10)), ["one", "x".repeat(10), "no newline"]);
    assert.equal(mine[1]!.length, h.length + 2 + long);
  }
  assert.match(r.err, /TIME_WAIT ledger: 4 connections: 4 closed by the remote first, 0 by us first, 0 reset; local TIME_WAIT left by this run: 0/);
});

test("the remote closes first, so the kernel shows no local TIME_WAIT for this run's ports", async () => {
  const { doc, code } = await runJson(["-w", hosts(), "echo hi"]);
  assert.equal(code, 0);
  assert.equal(doc.results.length, 4);
  // Distinct 4-tuples; the allocator may well use one local port towards several hosts.
  const clientTuples = new Set<string>(doc.results.map((r: { host: string; localPort: number }) => `${r.localPort} ${r.host}`));
  assert.equal(clientTuples.size, 4);
  for (const r of doc.results) assert.equal(r.closedBy, "remote");
  const tw = readTcpSockets().filter((s) => s.state === "TIME_WAIT" && s.remotePort === demo.port && clientTuples.has(`${s.localPort} ${s.remoteAddress}`));
  assert.equal(tw.length, 0);
  assert.equal(doc.ledger.localTimeWait, 0);
  // ...and the TIME_WAIT is on the hosts' side instead.
  const tuples = new Set<string>(doc.results.map((r: { host: string; localPort: number }) => `${r.host} ${r.localPort}`));
  const hostSide = readTcpSockets().filter((s) => s.state === "TIME_WAIT" && s.localPort === demo.port && tuples.has(`${s.localAddress} ${s.remotePort}`));
  assert.equal(hostSide.length, 4);
});

test("--reset-after-eof leaves TIME_WAIT on neither side", async () => {
  const { doc } = await runJson(["--reset-after-eof", "-w", hosts(), "echo hi"]);
  for (const r of doc.results) assert.equal(r.state, "done");
  const tuples = new Set<string>(doc.results.map((r: { host: string; localPort: number }) => `${r.host} ${r.localPort}`));
  const rows = readTcpSockets().filter((s) => s.state === "TIME_WAIT");
  assert.equal(rows.filter((s) => tuples.has(`${s.remoteAddress} ${s.localPort}`) && s.remotePort === demo.port).length, 0, "client side");
  assert.equal(rows.filter((s) => s.localPort === demo.port && tuples.has(`${s.localAddress} ${s.remotePort}`)).length, 0, "host side");
});

test("exit codes per host; 1 on any non-zero; -S gives the largest", async () => {
  const cmd = `case $MULTI_RSH_HOST in ${demo.addresses[1]}) exit 3;; ${demo.addresses[2]}) exit 7;; esac; true`;
  const r = await runJson(["-w", hosts(), cmd]);
  assert.equal(r.code, 1);
  assert.deepEqual(r.doc.results.map((x: { exitCode: number }) => x.exitCode), [0, 3, 7, 0]);
  assert.equal((await run(["-S", "-w", hosts(), cmd])).code, 7);
});

test("-b gathers identical outputs under a folded host list", async () => {
  const r = await run(["-b", "-w", hosts(), `[ $MULTI_RSH_HOST = ${demo.addresses[3]} ] && echo odd || echo same`]);
  assert.equal(r.code, 0);
  assert.match(r.out, /127\.0\.0\.\[100-102\] \(3\)\n-+\nsame\n/);
  assert.match(r.out, /127\.0\.0\.103 \(1\)\n-+\nodd\n/);
});

test("-N drops the prefix; --stderr keeps the remote stderr apart", async () => {
  const n = await run(["-N", "-w", demo.addresses[0]!, "echo plain"]);
  assert.equal(n.out, "plain\n");
  const { doc } = await runJson(["--stderr", "-w", demo.addresses[0]!, "echo out; echo err >&2"]);
  assert.deepEqual(doc.results[0].output, ["out"]);
  assert.deepEqual(doc.results[0].stderr, ["err"]);
});

test("a command that reads stdin gets EOF at once instead of hanging", async () => {
  const { doc, code } = await runJson(["-t", "10", "-w", demo.addresses[0]!, "cat; echo after-cat"]);
  assert.equal(code, 0);
  assert.deepEqual(doc.results[0].output, ["after-cat"]);
  assert.equal(doc.results[0].closedBy, "remote");
});

test("a host that accepts and never answers times out and is reset; the others are intact", async (t) => {
  const hang = await startFaultServer("hang", "127.0.0.1");
  t.after(() => hang.close());
  // The hanging host lives on another port: run it alone and check its result.
  const io = captureIO();
  const code = await main(["--json", "-t", "1", "--port", String(hang.port), "--local-ports", "30000-39999", "-w", "127.0.0.1", "echo x"], io);
  const doc = JSON.parse(io.out());
  assert.equal(code, 1);
  assert.equal(doc.results[0].state, "timedout");
  assert.equal(doc.results[0].closedBy, "reset");
  const tw = readTcpSockets().filter((s) => s.state === "TIME_WAIT" && s.localPort === doc.results[0].localPort);
  assert.equal(tw.length, 0, "a reset leaves no TIME_WAIT");
});

test("refused host, rshd refusal message, and a server that drops the request: one failed result each", async (t) => {
  const refuse = await startFaultServer("refuse-message");
  const drop = await startFaultServer("drop-before-reply");
  const closed = await startFaultServer("hang");
  const closedPort = closed.port;
  await closed.close();
  t.after(async () => {
    await refuse.close();
    await drop.close();
  });
  const one = async (port: number) => {
    const io = captureIO();
    const code = await main(["--json", "--port", String(port), "--local-ports", "30000-39999", "-w", "127.0.0.1", "true"], io);
    return { code, r: JSON.parse(io.out()).results[0] };
  };
  const a = await one(refuse.port);
  assert.equal(a.code, 1);
  assert.equal(a.r.state, "failed");
  assert.equal(a.r.error.code, "HOST_REFUSED");
  assert.match(a.r.error.message, /permission denied/);
  const b = await one(drop.port);
  assert.equal(b.r.error.code, "HOST_PROTOCOL");
  const c = await one(closedPort);
  assert.equal(c.r.error.code, "HOST_CONNECT_REFUSED");
});

test("host files: comments and blanks allowed, duplicates run once, a bad line is exit 2 naming file:line", async () => {
  const r = await run(["--json", "-l", "-", "echo", "hi"], `# demo hosts\n${demo.addresses[0]}\n\n${demo.addresses[0]}\n${demo.addresses[1]}\n`);
  const doc = JSON.parse(r.out);
  assert.equal(doc.results.length, 2);
  assert.deepEqual(doc.duplicates, [demo.addresses[0]]);
  const bad = await run(["-l", "-", "true"], `${demo.addresses[0]}\nnot;a;host\n`);
  assert.equal(bad.code, 2);
  assert.equal(bad.err.trim().split("\n").length, 1);
  assert.match(bad.err, /^multi-rsh: stdin:2: bad host/);
});

test("bad usage: one line, exit 2, nothing run", async () => {
  for (const args of [[], ["-p", "0", "true", "h"], ["--json", "--ndjson", "true", "h"], ["-w", "n[1-", "true"], ["-t", "abc", "true", "h"], ["-R", "carrier-pigeon", "true", "h"], ["--bogus"]]) {
    const io = captureIO();
    const code = await main(args, io);
    assert.equal(code, 2, args.join(" "));
    assert.equal(io.err().trim().split("\n").length, 1, `${args.join(" ")}: ${io.err()}`);
    assert.match(io.err(), /^multi-rsh: /);
  }
});

test("--ndjson writes one record per host as each finishes", async () => {
  const r = await run(["--ndjson", "-w", hosts(), "echo $MULTI_RSH_HOST"]);
  // The hosts' records, then the run's summary record.
  const recs = r.out.trim().split("\n").map((l) => JSON.parse(l)).filter((x) => !x.summary);
  assert.equal(recs.length, 4);
  for (const rec of recs) assert.deepEqual(rec.output, [rec.host]);
});

test("1,000 runs in a row to one host: no port exhausted, no failure, no local TIME_WAIT", { skip: !isRoot && "needs root for reserved ports (512-1023)" }, async () => {
  const { createRshTransport } = await import("../../src/remote/transports/rsh.js");
  const { runHosts } = await import("../../src/remote/engine.js");
  const transport = createRshTransport({ port: demo.port });
  let failed = 0;
  const used = new Set<number>();
  for (let i = 0; i < 1000; i++) {
    const [r] = await runHosts({
      hosts: [demo.addresses[0]!], command: "true", transport, parallel: 1, timeoutMs: 10_000,
      connectTimeoutMs: 0, commandTimeoutMs: 0, user: "root", localUser: "root", separateStderr: false,
    }).done;
    if (r!.state !== "done" || r!.exitCode !== 0) failed++;
    used.add(r!.localPort!);
  }
  assert.equal(failed, 0);
  const tw = readTcpSockets().filter((s) => s.state === "TIME_WAIT" && used.has(s.localPort) && s.remotePort === demo.port && s.remoteAddress === demo.addresses[0]);
  assert.equal(tw.length, 0);
});

test("on a terminal, progress is drawn on stderr only and cleared; stdout holds only output lines", async () => {
  const io = captureIO({ tty: true });
  const code = await main([...base(), "-w", hosts(), "sleep 0.3; echo done-here"], io);
  assert.equal(code, 0);
  assert.match(io.err(), /\r\x1b\[K\[\d+\/4\] \d+ running/);
  assert.deepEqual(io.out().trim().split("\n").sort(), demo.addresses.map((h) => `${h}: done-here`).sort());
});

test("piped (no terminal), stderr carries no progress, only the summary", async () => {
  const r = await run(["-w", hosts(), "true"]);
  assert.doesNotMatch(r.err, /\x1b/);
  assert.match(r.err, /^multi-rsh: 4 hosts in/m);
});

test("-R exec: the template is split into arguments, %h and %u filled in, the command last", async () => {
  const io = captureIO();
  const code = await main(["--json", "-R", "exec", "-u", "alice", "-w", "n1,n2", "--", "echo", "host=%h", "user=%u", "cmd"], io);
  assert.equal(code, 0, io.err());
  const doc = JSON.parse(io.out());
  assert.deepEqual(doc.results.map((r: { output: string[] }) => r.output[0]), ["host=n1 user=alice cmd", "host=n2 user=alice cmd"]);
  for (const r of doc.results) assert.equal(r.closedBy, null);
});

test("a host cut by -t has its command ended on the host (kill of its process group), and says so", async () => {
  const { readdirSync, readFileSync } = await import("node:fs");
  const secs = `35.${process.pid % 1000}`;
  const running = () =>
    readdirSync("/proc").filter((d) => {
      try {
        return /^\d+$/.test(d) && readFileSync(`/proc/${d}/cmdline`, "latin1").replace(/\0/g, " ").includes(`sleep ${secs}`);
      } catch {
        return false;
      }
    });
  const { doc, code } = await runJson(["-t", "1", "-w", hosts(), `sleep ${secs}`]);
  assert.equal(code, 1);
  for (const r of doc.results) assert.deepEqual([r.state, r.remoteCommand], ["timedout", "ended"]);
  // The demo hosts run the command on this machine: its process list is the host's.
  assert.deepEqual(running(), []);
});
