/**
 * Flat fan-out limits: --idle-timeout, --rate, the soft fd limit, and one documented cause for
 * every failed host, against real rsh servers on loopback (hostile and faulty ones).
 */
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { FAILURE_CAUSES } from "../../src/remote/failure-cause.js";
import { captureIO } from "../helpers/io.js";
import { startFaultServer, type RshFault } from "../helpers/rsh-fault.js";
import { startHostileRsh, type HostileRsh } from "../helpers/hostile-rsh.js";

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : "rsh connects from reserved ports: needs root";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Rec {
  host: string;
  state: string;
  cause: string | null;
  output: string[];
  error: { code: string } | null;
}

async function runJson(args: string[]): Promise<{ code: number; doc: { results: Rec[]; causes: Record<string, number>; failures: { cause: string }[] }; err: string }> {
  const io = captureIO();
  const code = await main(["--json", ...args], io);
  return { code, doc: JSON.parse(io.out()), err: io.err() };
}

const N_RATE = 8;
const rateHosts = Array.from({ length: N_RATE }, (_, i) => `127.13.6.${10 + i}`);
const N_FD = 150;
const fdHosts = Array.from({ length: N_FD }, (_, i) => `127.13.7.${10 + i}`);
const accepts: number[] = [];
let idle: HostileRsh;
let rate: HostileRsh;
let hold: HostileRsh;
before(async () => {
  if (!isRoot) return;
  idle = await startHostileRsh(["127.13.5.10", "127.13.5.11"], async (s) => {
    if (s.host === "127.13.5.10") {
      s.socket.write("before the stall\n"); // then nothing, ever
      return;
    }
    // Output every 100 ms for a second: never idle for 400 ms.
    for (let i = 0; i < 10; i++) {
      s.socket.write(`tick ${i}\n`);
      await sleep(100);
    }
    s.exit(0);
  });
  rate = await startHostileRsh(rateHosts, (s) => {
    accepts.push(performance.now());
    s.exit(0);
  });
  // Hosts that hold their connection a while, so that the whole fan-out is open at once.
  hold = await startHostileRsh(fdHosts, async (s) => {
    await sleep(1500);
    s.exit(0);
  });
});
after(async () => {
  await idle?.close();
  await rate?.close();
  await hold?.close();
});

test("--idle-timeout ends a host that prints nothing for that long (cause timeout-idle), not one that keeps printing", { skip }, async () => {
  const { doc } = await runJson(["--port", String(idle.port), "--idle-timeout", "0.4", "-t", "30", "-w", "127.13.5.10,127.13.5.11", "x"]);
  const [stalled, ticking] = doc.results;
  assert.equal(stalled!.state, "timedout");
  assert.equal(stalled!.cause, "timeout-idle");
  assert.equal(stalled!.error!.code, "HOST_IDLE_TIMEOUT");
  assert.deepEqual(stalled!.output, ["before the stall"]);
  assert.equal(ticking!.state, "done");
  assert.equal(ticking!.cause, null);
  assert.equal(ticking!.output.length, 10);
  assert.deepEqual(doc.causes, { "timeout-idle": 1 });
});

test("--rate spaces the new connections: 8 hosts at 20/s span at least 7/20 s", { skip }, async () => {
  accepts.length = 0;
  const { doc } = await runJson(["--port", String(rate.port), "--rate", "20", "-p", "100", "-w", rateHosts.join(","), "x"]);
  assert.equal(doc.results.filter((r) => r.state === "done").length, N_RATE);
  assert.equal(accepts.length, N_RATE);
  // A lower bound only (a loaded machine spreads them further): the limiter never starts early.
  const span = Math.max(...accepts) - Math.min(...accepts);
  assert.ok(span >= (7 / 20) * 1000 * 0.9, `span ${span} ms`);
});

test("every failed host carries one cause from the documented list", { skip }, async () => {
  const faults: [RshFault | "none", string][] = [
    ["none", "refused"],
    ["refuse-message", "auth"],
    ["drop-before-reply", "protocol"],
    ["partial-then-reset", "dropped-by-server"],
    ["hang", "timeout-connect"],
  ];
  for (const [fault, cause] of faults) {
    let port: number;
    let close = async () => {};
    if (fault === "none") {
      const tmp = await startFaultServer("hang");
      port = tmp.port;
      await tmp.close(); // nothing listens there now
    } else {
      const srv = await startFaultServer(fault);
      port = srv.port;
      close = srv.close;
    }
    try {
      const { doc, code } = await runJson(["--port", String(port), "-t", "1", "-w", "127.0.0.1", "x"]);
      assert.equal(code, 1);
      assert.equal(doc.results[0]!.cause, cause, `${fault}: ${JSON.stringify(doc.results[0])}`);
      assert.ok((FAILURE_CAUSES as readonly string[]).includes(cause));
      assert.equal(doc.failures[0]!.cause, cause);
    } finally {
      await close();
    }
  }
  // And in the text summary.
  const srv = await startFaultServer("refuse-message");
  try {
    const io = captureIO();
    await main(["--port", String(srv.port), "-w", "127.0.0.1", "x"], io);
    assert.match(io.err(), /causes: 1 auth\n\s+127\.0\.0\.1: failed \(auth\) HOST_REFUSED/);
  } finally {
    await srv.close();
  }
});

function runCliUnder(limit: string, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn("prlimit", [`--nofile=${limit}`, process.execPath, "bin/multi-rsh.js", ...args], { env: { ...process.env, NO_PROGRESS: "1" } });
    let out = "";
    let err = "";
    c.stdout.on("data", (b: Buffer) => (out += b));
    c.stderr.on("data", (b: Buffer) => (err += b));
    c.on("error", reject);
    c.on("close", (code) => resolve({ code, out, err }));
  });
}

test("150 connections at once from a soft fd limit of 64: the limit is raised (hard 4096) and every host is done", { skip }, async () => {
  const r = await runCliUnder("64:4096", ["--json", "--port", String(hold.port), "-p", "200", "-t", "60", "-w", fdHosts.join(","), "x"]);
  const doc = JSON.parse(r.out);
  assert.equal(doc.results.length, N_FD);
  assert.equal(doc.results.filter((x: Rec) => x.state === "done").length, N_FD, JSON.stringify(doc.causes));
  assert.ok(doc.fdLimit.after.soft >= doc.fdLimit.needed, JSON.stringify(doc.fdLimit));
});

test("a hard fd limit below the need: said once, fewer at a time, and every host still done", { skip, timeout: 120_000 }, async () => {
  const r = await runCliUnder("128:128", ["--json", "--port", String(hold.port), "-p", "200", "-t", "60", "-w", fdHosts.join(","), "x"]);
  const doc = JSON.parse(r.out);
  assert.equal(r.code, 0, JSON.stringify(doc.causes));
  assert.equal(doc.results.length, N_FD);
  assert.equal(doc.results.filter((x: Rec) => x.state === "done").length, N_FD);
  assert.equal(doc.fdLimit.outcome, "capped");
  assert.equal(doc.fdLimit.parallel, 64);
  assert.match(doc.notices.join("\n"), /the run may need 214 open files; the soft limit went from 128 to the hard limit 128: .*running 64 at a time instead of -p 200/);
});
