import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startFaultServer } from "../helpers/rsh-fault.js";

// The installed CLI, as a user runs it (npm run build first; npm test does).
const bin = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));

function cli(args: string[], stdin = ""): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
    child.stdin.end(stdin);
  });
}

/** `-R exec` runs `echo` locally per host: the host list, as the CLI ends up with it. */
const echo = (w: string[], ...more: string[]) => cli(["-R", "exec", ...more, ...w.flatMap((x) => ["-w", x]), "--", "echo", "%h", "%u", "end"]);

test("numbers above 2^53 run on exactly the host written, and -b folds them exactly", async () => {
  const a = await echo(["n[20240101123456789012]"]);
  assert.equal(a.code, 0, a.err);
  assert.match(a.out, /^n20240101123456789012: n20240101123456789012 \S+ end\n$/);
  const b = await cli(["-b", "-R", "exec", "-w", "n[99999999999999999998-99999999999999999999],x12345678901234567891", "--", "echo", "same"]);
  assert.equal(b.code, 0, b.err);
  assert.match(b.out, /^n\[99999999999999999998-99999999999999999999\],x12345678901234567891 \(3\)$/m);
});

test("-b folds whatever order the hosts end in", async () => {
  const r = await cli(["-b", "-R", "exec", "-w", "foo10,foo[03-09],foo01,foo02", "--", "echo", "same"]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^foo\[01-10\] \(10\)$/m);
});

test("-w '[::1]' and '[::1],127.0.0.1' reach both addresses over rsh; user@[::1] too", async (t) => {
  // One dual-stack listener on [::]: both hosts reach it, on one port.
  const srv = await startFaultServer("refuse-message", "::");
  t.after(() => srv.close());
  const rsh = ["--json", "--port", String(srv.port), "--local-ports", "30000-39999", "-t", "10"];
  for (const w of ["[::1]", "[::1],127.0.0.1", "alice@[::1]"]) {
    const r = await cli([...rsh, "-w", w, "true"]);
    assert.equal(r.code, 1, r.err);
    const doc = JSON.parse(r.out) as { results: { host: string; error: { code: string; message: string } }[] };
    const want = w.includes("127.0.0.1") ? ["127.0.0.1", "::1"] : ["::1"];
    assert.deepEqual(doc.results.map((x) => x.host).sort(), want, w);
    // The fault server answered each: the connection was made, to that address.
    for (const x of doc.results) assert.equal(x.error.code, "HOST_REFUSED", `${w}: ${x.error.message}`);
  }
});

test("pdsh's forms in -w and -x: -host, /re/, -/re/, user@ over -u", async () => {
  const r = await echo(["bob@n[1-2],n[3-12],-n5,-/^n11$/", "/n1/"], "-u", "carol", "-x", "n12");
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.out.split("\n").filter(Boolean).sort(), ["n10: n10 carol end", "n1: n1 bob end"]);
});

test("host files: 'a,b' and 'a b' lines and #include beside the file", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "aih-cli-hosts-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "hosts"), "a1,a2\nb1 b2  # two\n#include more\n");
  writeFileSync(join(dir, "more"), "c[1-2]\n");
  const r = await cli(["--json", "-R", "exec", "-l", join(dir, "hosts"), "-x", "c1", "--", "echo", "%h"]);
  assert.equal(r.code, 0, r.err);
  const doc = JSON.parse(r.out) as { results: { host: string }[] };
  assert.deepEqual(doc.results.map((x) => x.host).sort(), ["a1", "a2", "b1", "b2", "c2"]);
  const loop = join(dir, "loop");
  writeFileSync(loop, "#include loop\n");
  const bad = await cli(["-R", "exec", "-l", loop, "--", "echo", "%h"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /^multi-rsh: .*loop:1: .*includes itself.*\n$/);
});

test("forms we do not take: exit 2, one line naming the problem, nothing run", async () => {
  for (const [args, why] of [
    [["-w", "ssh:n1"], /-R chooses the transport/],
    [["-w", "-"], /'-l -'/],
    [["-w", "n1", "-x", "-n1"], /already excludes/],
    [["-w", "n[1-3],/a(/"], /bad regular expression/],
    [["-w", "@rack1", "--groups", "/dev/null"], /unknown group 'rack1'/],
    [["-w", "n[1-99999999999999999999]"], /more than 100000 hosts/],
  ] as [string[], RegExp][]) {
    const r = await cli(["-R", "exec", ...args, "--", "echo", "%h"]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
    assert.equal(r.out, "");
    assert.equal(r.err.split("\n").filter(Boolean).length, 1, r.err);
    assert.match(r.err, why);
  }
});
