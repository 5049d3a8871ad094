/**
 * --copy, --rcopy, -I and groups on the testbed's real daemons (Debian in.rshd under openbsd-inetd
 * with netkit rcp, OpenSSH sshd with scp), through the installed CLI (`node bin/multi-rsh.js`, built
 * by `npm run build`) as a user runs it, over -R rsh, -R ssh and -R openssh (the system's ssh and scp -t). 50 good hosts, plus one refusing connections and one
 * refusing the login; among the good ones one host has no room for the file (its target is a link
 * to /dev/full, so the host's own rcp/scp meets ENOSPC). Each host has its own /run (a bind mount of
 * STATE/host/N/run), which is where files go, so what landed is checked here straight from the disk.
 *
 * The kernel is the judge: after every run this machine holds no TIME_WAIT towards the testbed, and
 * the ledger says the same.
 *
 * ADDRINUSE_TESTBED_PREFIX / ADDRINUSE_TESTBED_NET move the testbed (default aitbc, 10.246).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readTcpSockets } from "../../src/kernel/read.js";
import { findShuttle } from "../../src/remote/ssh/relay.js";
import { assertRouteOverBridge, down, missingRequirement, up, type Testbed, type TestbedHost } from "../../testbed/testbed.js";

const PREFIX = process.env.ADDRINUSE_TESTBED_PREFIX ?? "aitbc";
const NET = process.env.ADDRINUSE_TESTBED_NET ?? "10.246";
const GOOD = 50;
const BIN = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));
const BIG = 10 * 1000 * 1000;
const STDIN = 1024 * 1024;

const needs = missingRequirement();
let tb: Testbed | null = null;
let work = "";
let good: TestbedHost[] = [];
/** The good host whose copy target is /dev/full. */
let full: TestbedHost | null = null;

before(async () => {
  if (needs) return;
  tb = await up({ hosts: GOOD + 2, faults: { refused: 1, denied: 1 }, prefix: PREFIX, net: NET });
  assertRouteOverBridge(tb.hosts.map((h) => h.address), tb.bridge);
  good = tb.hosts.filter((h) => h.fault === null);
  full = good[6]!;
  work = mkdtempSync(join(tmpdir(), "aiu-copy-live-"));
  const src = join(work, "src");
  mkdirSync(join(src, "tree", "a", "b"), { recursive: true });
  // Not compressible, not repetitive: a byte out of place changes the checksum.
  const big = Buffer.alloc(BIG);
  for (let at = 0; at < BIG; at += 32) createHash("sha256").update(String(at)).digest().copy(big, at);
  writeFileSync(join(src, "big.bin"), big);
  for (let i = 0; i < 20; i++) writeFileSync(join(src, "tree", i % 2 ? "a" : join("a", "b"), `f${i}`), `file ${i}\n`.repeat(i * 100));
  writeFileSync(join(src, "tree", "top"), "");
});

after(async () => {
  if (needs) return;
  await down({ prefix: PREFIX });
  if (work) rmSync(work, { recursive: true, force: true });
});

function hostRun(h: TestbedHost): string {
  return join(tb!.files.stateDir, "host", String(h.index), "run");
}

function sha(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Every file under a directory, relative path -> sha256. */
function treeSums(dir: string, prefix = ""): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) for (const [k, v] of treeSums(join(dir, e.name), rel)) out.set(k, v);
    else out.set(rel, sha(join(dir, e.name)));
  }
  return out;
}

function cli(args: string[], opts: { input?: Buffer; env?: Record<string, string> } = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, NO_PROGRESS: "1", ...opts.env }, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, out, err }));
    child.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}

interface Result {
  host: string;
  state: string;
  error: { code: string; message: string } | null;
  closedBy: string | null;
  output: string[];
}
interface Doc {
  results: Result[];
  ledger: { connections: number; remoteClosed: number; localClosed: number; reset: number; localTimeWait: number };
}

function timeWaitTowardsTestbed(): string[] {
  const addrs = new Set(tb!.hosts.map((h) => h.address));
  return readTcpSockets()
    .filter((s) => s.state === "TIME_WAIT" && addrs.has(s.remoteAddress))
    .map((s) => `${s.localPort} ${s.remoteAddress}:${s.remotePort}`);
}

/** The ledger and the kernel agree: no TIME_WAIT on this side towards any host. */
function assertNoLocalTimeWait(doc: Doc): void {
  assert.equal(doc.ledger.localTimeWait, 0, JSON.stringify(doc.ledger));
  assert.equal(doc.ledger.localClosed, 0, JSON.stringify(doc.ledger));
  assert.deepEqual(timeWaitTowardsTestbed(), [], "the kernel's table: TIME_WAIT on this machine towards the testbed");
}

// openssh: the system's ssh runs scp -t on the host, through the relay (netcat-openbsd), which is
// what keeps its TCP connection ours; without the relay it closes first, so the case is skipped.
const RELAY = findShuttle() !== null;

for (const transport of ["rsh", "ssh", "openssh"] as const) {
  const skip = needs ?? (transport === "openssh" && !RELAY ? "no netcat-openbsd: -R openssh runs without the relay" : false);
  describe(`multi-rsh -R ${transport}: copies on ${GOOD} real hosts`, { skip }, () => {
    const base = () => ["-R", transport, ...(transport !== "rsh" ? ["-F", tb!.files.sshConfig] : []), "-p", "32", "--json"];
    const all = () => ["-w", tb!.hosts.map((h) => h.address).join(",")];

    test("--copy of a 10 MB file and a tree: the same bytes on every good host, the failing hosts each say why, no TIME_WAIT here", async () => {
      for (const h of good) {
        rmSync(join(hostRun(h), "dst"), { recursive: true, force: true });
        mkdirSync(join(hostRun(h), "dst"));
      }
      symlinkSync("/dev/full", join(hostRun(full!), "dst", "big.bin"));
      assert.deepEqual(timeWaitTowardsTestbed(), [], "no TIME_WAIT towards the testbed before the run");
      const r = await cli([...base(), ...all(), "--copy", join(work, "src", "big.bin"), join(work, "src", "tree"), "-r", "--dest", "/run/dst"]);
      assert.equal(r.code, 1, r.err);
      const doc = JSON.parse(r.out) as Doc;
      assert.equal(doc.results.length, tb!.hosts.length, "one result per host");
      const want = treeSums(join(work, "src", "tree"));
      const bigSum = sha(join(work, "src", "big.bin"));
      for (const res of doc.results) {
        const h = tb!.hosts.find((x) => x.address === res.host)!;
        if (h.fault === "refused") assert.equal(res.error?.code, "HOST_CONNECT_REFUSED");
        else if (h.fault === "denied") assert.equal(res.error?.code, transport === "rsh" ? "HOST_REFUSED" : "HOST_AUTH");
        else if (h === full) {
          assert.equal(res.state, "failed");
          assert.equal(res.error?.code, "HOST_COPY");
          assert.match(res.error!.message, /No space left on device|can't truncate/);
        } else {
          assert.equal(res.state, "done", `${h.name}: ${JSON.stringify(res.error)}`);
          assert.equal(sha(join(hostRun(h), "dst", "big.bin")), bigSum, h.name);
          assert.deepEqual(treeSums(join(hostRun(h), "dst", "tree")), want, h.name);
        }
      }
      // The host without room still got the tree: one failed file does not stop the others.
      assert.deepEqual(treeSums(join(hostRun(full!), "dst", "tree")), want);
      assertNoLocalTimeWait(doc);
    });

    test("--rcopy brings back one file per host as NAME.HOST: 50 distinct files, each with its host's content", async () => {
      for (const h of good) writeFileSync(join(hostRun(h), "id"), `${h.name}\n`);
      const back = mkdtempSync(join(work, `back-${transport}-`));
      const r = await cli([...base(), "-l", tb!.files.hostsOk, "--rcopy", "/run/id", "--dest", back]);
      assert.equal(r.code, 0, r.err);
      const doc = JSON.parse(r.out) as Doc;
      assert.equal(doc.results.filter((x) => x.state === "done").length, GOOD);
      assert.deepEqual(readdirSync(back).sort(), good.map((h) => `id.${h.address}`).sort());
      for (const h of good) assert.equal(readFileSync(join(back, `id.${h.address}`), "utf8"), `${h.name}\n`);
      assertNoLocalTimeWait(doc);
    });

    test("-I sends 1 MB of stdin to every host: identical checksums", async () => {
      const input = Buffer.alloc(STDIN);
      for (let at = 0; at < STDIN; at += 32) createHash("sha256").update(`in${at}`).digest().copy(input, at);
      const want = createHash("md5").update(input).digest("hex");
      const r = await cli([...base(), "-l", tb!.files.hostsOk, "-I", "md5sum; hostname"], { input });
      assert.equal(r.code, 0, r.err);
      const doc = JSON.parse(r.out) as Doc;
      assert.equal(doc.results.length, GOOD);
      for (const res of doc.results) {
        const h = good.find((x) => x.address === res.host)!;
        assert.deepEqual(res.output, [`${want}  -`, h.name], res.host);
      }
      assertNoLocalTimeWait(doc);
    });
  });
}

describe("groups from every file format, live", { skip: needs ?? false }, () => {
  test("-g from ClusterShell YAML, the local source, dshgroup files and --groups FILE reach exactly their hosts", async () => {
    const d = mkdtempSync(join(work, "groups-"));
    const a = (i: number) => good[i]!.address;
    mkdirSync(join(d, "cs", "groups.d"), { recursive: true });
    writeFileSync(join(d, "cs", "groups.d", "tb.yaml"), `tb:\n  yamlgrp: '${a(0)},${a(1)}'\n`);
    writeFileSync(join(d, "cs", "groups"), `localgrp: ${a(2)} ${a(3)}\n`);
    mkdirSync(join(d, "home", ".dsh", "group"), { recursive: true });
    writeFileSync(join(d, "home", ".dsh", "group", "dshgrp"), `${a(4)}\n# comment\n${a(5)}\n`);
    writeFileSync(join(d, "mine.conf"), `filegrp: ${a(6)},@dshgrp\n`);
    const env = { CLUSTERSHELL_CFGDIR: join(d, "cs"), HOME: join(d, "home"), MULTI_RSH_DSH_DIR: join(d, "none") };
    const cases: [string[], number[]][] = [
      [["-g", "yamlgrp"], [0, 1]],
      [["-g", "localgrp"], [2, 3]],
      [["-g", "dshgrp"], [4, 5]],
      [["--groups", join(d, "mine.conf"), "-g", "filegrp"], [6, 4, 5]],
      [["-w", "@yamlgrp,@localgrp", "-x", `${a(1)}`], [0, 2, 3]],
    ];
    for (const [args, idx] of cases) {
      const r = await cli(["--json", ...args, "hostname"], { env });
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.err}`);
      const doc = JSON.parse(r.out) as Doc;
      assert.deepEqual(
        doc.results.map((x) => [x.host, x.output]),
        idx.map((i) => [good[i]!.address, [good[i]!.name]]),
        args.join(" "),
      );
      assertNoLocalTimeWait(doc);
    }
    const bad = await cli(["-g", "nosuch", "hostname"], { env });
    assert.equal(bad.code, 2);
    assert.equal(bad.err, "multi-rsh: unknown group 'nosuch'\n");
  });
});
