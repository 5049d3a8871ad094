import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { main, STDIN_NOTICE } from "../../src/cli/multi-rsh/multi-rsh.js";
import { StatusLine } from "../../src/cli/display.js";
import { startDemoHosts, type DemoHosts } from "../../src/remote/demo/rshd.js";
import { captureIO } from "../helpers/io.js";

const bin = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));
let demo: DemoHosts;
// Addresses of their own (127.0.0.110-113), apart from the other suites' demo hosts.
before(async () => {
  demo = await startDemoHosts({ count: 4, first: 110 });
});
after(async () => {
  await demo?.close();
});

function base(): string[] {
  const args = ["--port", String(demo.port)];
  if (!demo.reservedOnly) args.push("--local-ports", "20000-29999");
  return args;
}

async function run(args: string[], opts: { base?: boolean } = {}) {
  const io = captureIO();
  const code = await main([...(opts.base === false ? [] : base()), ...args], io);
  return { code, out: io.out(), err: io.err() };
}

/** A usage error: exit 2, exactly one line on stderr, nothing on stdout (nothing was run). */
function assertRefused(r: { code: number; out: string; err: string }, hint: RegExp): void {
  assert.equal(r.code, 2, r.err);
  assert.equal(r.err.trim().split("\n").length, 1, r.err);
  assert.match(r.err, /^multi-rsh: /);
  assert.match(r.err, hint);
  assert.equal(r.out, "");
}

test("pssh's -h HOSTFILE is refused naming -l; -h alone is help", async () => {
  assertRefused(await run(["-h", "hosts.txt", "uptime"], { base: false }), /-h is help here.*-l HOSTFILE/);
  const alone = await run(["-h"], { base: false });
  assert.equal(alone.code, 0);
  assert.match(alone.out, /^Usage: multi-rsh/);
  assert.match(alone.out, /-R exec -w HOSTS -- docker exec %h sh -c 'CMD'/);
});

test("pdsh/clush's -l USER (no such host file) is refused naming -u", async () => {
  assertRefused(await run(["-l", "root", "true"]), /cannot read host file 'root': ENOENT \(-l is the host file here.*-u USER/);
});

test("pdsh/clush's -u SECONDS is refused naming --command-timeout; -u NAME is the user", async () => {
  assertRefused(await run(["-u", "30", "-w", demo.addresses[0]!, "true"]), /-u 30: -u is the remote user here.*--command-timeout 30/);
  const io = captureIO();
  const code = await main(["--json", "-R", "exec", "-u", "alice", "-w", "n1", "--", "echo", "%u", "cmd"], io);
  assert.equal(code, 0, io.err());
  assert.deepEqual(JSON.parse(io.out()).results[0].output, ["alice cmd"]);
});

test("pdsh/clush's -f N is the fan-out: -f 1 runs one host at a time", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "aiu-fanout-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const log = join(dir, "log");
  // The demo hosts run on this machine, so they can share a file: each writes start, waits, end.
  const r = await run(["-f", "1", "-w", demo.addresses.join(","), `echo start >> ${log}; sleep 0.1; echo end >> ${log}`]);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(readFileSync(log, "utf8").trim().split("\n"), Array.from({ length: 4 }, () => ["start", "end"]).flat());
  assertRefused(await run(["-f", "2", "-p", "3", "-w", demo.addresses[0]!, "true"]), /-f 2 and -p 3: both set the fan-out/);
});

test("pssh's -x ARGS (extra ssh arguments) is refused: -x excludes hosts here", async () => {
  assertRefused(await run(["-x", "-oStrictHostKeyChecking=no", "-w", demo.addresses[0]!, "true"]), /-x excludes hosts here/);
  const r = await run(["--json", "-x", demo.addresses[1]!, "-w", demo.addresses.slice(0, 2).join(","), "true"]);
  assert.deepEqual(JSON.parse(r.out).hosts, [demo.addresses[0]]);
});

test("other tools' flags we do not take: one line naming ours", async () => {
  const cases: [string[], RegExp][] = [
    [["-O", "StrictHostKeyChecking=no", "-w", "h", "true"], /unknown option '-O': .*-F FILE/],
    [["--par=5", "-w", "h", "true"], /unknown option '--par=5': the fan-out is -p N/],
    [["-v", "-w", "h", "true"], /unknown option '-v': no verbose mode/],
    [["-A", "-w", "h", "true"], /ssh-agent/],
    [["--connect_timeout", "3", "-w", "h", "true"], /spelt --connect-timeout here/],
    [["-F", "/dev/null", "-w", "h", "true"], /-F is the ssh config file of -R ssh and -R openssh; -R rsh has none/],
    [["--host-key-checking", "off", "-w", "h", "true"], /--host-key-checking is for -R ssh/],
    [["-R", "ssh", "--local-ports", "2000-3000", "-w", "h", "true"], /--local-ports is for -R rsh/],
  ];
  for (const [args, hint] of cases) assertRefused(await run(args, { base: false }), hint);
});

test("pssh's -H HOST and -P, clush's -n and pdsh's -V work with their meaning", async () => {
  const r = await run(["--json", "-P", "-n", "-H", `${demo.addresses[0]} ${demo.addresses[1]}`, "-H", demo.addresses[2]!, "echo hi"]);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out).hosts, demo.addresses.slice(0, 3));
  const v = await run(["-V"], { base: false });
  assert.equal(v.code, 0);
  assert.match(v.out, /^\d+\.\d+\.\d+/);
});

test("no total timeout by default (pdsh/clush have none): a 16 s command is not cut", async () => {
  const r = await run(["--json", "-w", demo.addresses[0]!, "sleep 16; echo finished"]);
  assert.equal(r.code, 0, r.err);
  const doc = JSON.parse(r.out);
  assert.equal(doc.results[0].state, "done");
  assert.deepEqual(doc.results[0].output, ["finished"]);
});

test("a host cut by -t gets a hint that pdsh/clush's -t is our --connect-timeout", async () => {
  const r = await run(["-t", "1", "-w", demo.addresses[0]!, "sleep 5"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /1 timedout/);
  assert.match(r.err, /-t 1 is the total time per host, connect included \(pssh's -t\); pdsh\/clush's -t is --connect-timeout here/);
});

test("--json and --ndjson keep stderr quiet; --ndjson ends with the run's summary record", async () => {
  const j = await run(["--json", "-w", demo.addresses.join(","), "true"]);
  assert.equal(j.code, 0);
  assert.equal(j.err, "");
  const n = await run(["--ndjson", "-w", demo.addresses.join(","), "true"]);
  assert.equal(n.code, 0);
  assert.equal(n.err, "");
  const recs = n.out.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(recs.length, 5);
  assert.equal(recs.filter((x) => x.host).length, 4);
  const last = recs[4].summary;
  assert.equal(last.hosts, 4);
  assert.equal(last.counts.done, 4);
  assert.equal(last.ledger.connections, 4);
  assert.equal(last.ledger.localTimeWait, 0);
  assert.equal(last.exitCode, 0);
});

test("the status line keeps its last character when the terminal reports 0 columns", () => {
  let text = "";
  const line = new StatusLine({ write: (s: string) => (text += s), isTTY: true, columns: 0 }, true);
  line.set("[3/4] 1 running, 0 failed, 12 hosts/s");
  assert.equal(text, "\r\x1b[K[3/4] 1 running, 0 failed, 12 hosts/s");
  text = "";
  const narrow = new StatusLine({ write: (s: string) => (text += s), isTTY: true, columns: 6 }, true);
  narrow.set("abcdefgh");
  assert.equal(text, "\r\x1b[Kabcde");
});

/** The installed CLI with stdin a pipe (data written to it), /dev/null, or a pipe with -n. */
async function installed(args: string[], stdin: "pipe" | "ignore", data?: string) {
  const child = spawn(process.execPath, [bin, ...base(), ...args], { stdio: [stdin, "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  if (child.stdin) child.stdin.end(data);
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const [code] = (await once(child, "exit")) as [number | null];
  clearTimeout(timer);
  return { code, out, err };
}

test("installed CLI: piped stdin gets a notice that it is not sent; /dev/null, an empty pipe and -n get none", async () => {
  const piped = await installed(["-w", demo.addresses[0]!, "cat; echo after"], "pipe", "data for the hosts\n");
  assert.equal(piped.code, 0, piped.err);
  assert.equal(piped.out, `${demo.addresses[0]}: after\n`);
  assert.match(piped.err, new RegExp(`^multi-rsh: ${STDIN_NOTICE.replace(/[()]/g, "\\$&")}$`, "m"));
  const none = await installed(["-w", demo.addresses[0]!, "true"], "ignore");
  assert.equal(none.code, 0, none.err);
  assert.doesNotMatch(none.err, /stdin is not sent/);
  const empty = await installed(["-w", demo.addresses[0]!, "true"], "pipe");
  assert.equal(empty.code, 0, empty.err);
  assert.doesNotMatch(empty.err, /stdin is not sent/);
  const quiet = await installed(["-n", "-w", demo.addresses[0]!, "true"], "pipe", "x\n");
  assert.equal(quiet.code, 0, quiet.err);
  assert.doesNotMatch(quiet.err, /stdin is not sent/);
  const json = await installed(["--json", "-w", demo.addresses[0]!, "true"], "pipe", "x\n");
  assert.equal(json.err, "");
  assert.deepEqual(JSON.parse(json.out).notices, [STDIN_NOTICE]);
});
