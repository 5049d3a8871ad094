import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

const bin = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));

/** Resolves once `pattern` has appeared in the child's stream (bounded: fails after 20 s). */
function waitFor(child: ChildProcess, stream: "stdout" | "stderr", pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`no ${pattern} on ${stream} in 20 s; got: ${text}`)), 20_000);
    child[stream]!.on("data", (b: Buffer) => {
      text += b.toString();
      if (pattern.test(text)) {
        clearTimeout(timer);
        resolve(text);
      }
    });
  });
}

function start(args: string[]) {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (b: Buffer) => (err += b.toString()));
  const exited = once(child, "exit") as Promise<[number | null, string | null]>;
  return { child, exited, err: () => err };
}

test("Ctrl-C once prints the status and the run goes on; twice within a second cancels everyone, summary and exit 130", async (t) => {
  const { child, exited, err } = start(["--demo", "-p", "4", "-t", "60", "echo started; sleep 30"]);
  t.after(() => child.kill("SIGKILL"));
  await waitFor(child, "stdout", /(started[\s\S]*){4}/);
  child.kill("SIGINT");
  await waitFor(child, "stderr", /4 running .*12 waiting/);
  assert.equal(child.exitCode, null, "still running after one Ctrl-C");
  // The second Ctrl-C goes as soon as the status is seen, well inside the second. Two signals sent
  // back to back may be merged into one by the kernel, so each further one waits for the previous
  // one's status line (bounded).
  let statuses = 1; // how many status lines the run printed; more than 1 means a merged or late signal
  let exitCode: number | null = null;
  void exited.then(([c]) => (exitCode = c));
  for (let i = 0; i < 5 && exitCode === null; i++) {
    child.kill("SIGINT");
    const seen = await Promise.race([
      exited.then(() => "exit"),
      waitFor(child, "stderr", /Ctrl-C again/).then(() => "status", () => "none"),
    ]);
    if (seen === "status") statuses++;
  }
  const [code] = await exited;
  assert.equal(code, 130);
  assert.match(err(), /16 hosts in [\d.]+ s: 16 cancelled/);
  assert.match(err(), /0 closed by the remote first, 0 by us first, 4 reset; local TIME_WAIT left by this run: 0/);
});

test("Ctrl-\\ (SIGQUIT) stops at once: running hosts reset, queued ones cancelled", async (t) => {
  const { child, exited, err } = start(["--demo", "-p", "2", "-t", "60", "echo started; sleep 30"]);
  t.after(() => child.kill("SIGKILL"));
  await waitFor(child, "stdout", /(started[\s\S]*){2}/);
  child.kill("SIGQUIT");
  const [code] = await exited;
  assert.equal(code, 130);
  assert.match(err(), /16 cancelled/);
});

/** Runs the built CLI as user `nobody`, when we are root and nobody may read the tree. */
function asNobody(args: string[]) {
  return spawn("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, bin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
}

async function nobodyCanRun(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  const c = spawn("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "test", "-r", bin], { stdio: "ignore" });
  c.on("error", () => {});
  const [code] = (await once(c, "exit")) as [number | null];
  return code === 0;
}

test("not root: rsh says it needs root in one line (exit 2); the demo still runs, on ordinary ports", async (t) => {
  if (!(await nobodyCanRun())) return t.skip("needs root and a tree that user nobody can read (setpriv)");
  const rsh = asNobody(["true", "127.0.0.1"]);
  let err = "";
  rsh.stderr.on("data", (b: Buffer) => (err += b.toString()));
  const [code] = (await once(rsh, "exit")) as [number];
  assert.equal(code, 2);
  assert.equal(err.trim().split("\n").length, 1);
  assert.match(err, /rsh needs root/);
  const demo = asNobody(["--demo", "-w", "127.0.0.2", "true"]);
  let derr = "";
  demo.stderr.on("data", (b: Buffer) => (derr += b.toString()));
  const [dcode] = (await once(demo, "exit")) as [number];
  assert.equal(dcode, 0, derr);
  assert.match(derr, /not root: ordinary ports/);
  assert.match(derr, /local TIME_WAIT left by this run: 0/);
});

test("a slow reader on a pipe still gets every line: the hosts wait for stdout to drain", async (t) => {
  const child = spawn(process.execPath, [bin, "--demo", "seq 1 20000"], { stdio: ["ignore", "pipe", "pipe"] });
  t.after(() => child.kill("SIGKILL"));
  child.stdout.pause();
  // Read nothing for a while, so the pipe fills up and the hosts are made to wait (backpressure:
  // the run does not end before its output is read, so waiting for the summary would wait for -t).
  await new Promise((r) => setTimeout(r, 1500));
  let lines = 0;
  child.stdout.on("data", (b: Buffer) => {
    for (const c of b) if (c === 10) lines++;
  });
  child.stdout.resume();
  const [code] = (await once(child, "exit")) as [number];
  if (!child.stdout.readableEnded) await once(child.stdout, "end");
  assert.equal(code, 0);
  assert.equal(lines, 16 * 20000);
});
