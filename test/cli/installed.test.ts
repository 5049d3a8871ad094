/**
 * The installed CLIs, run as a user runs them: `node bin/multi-rsh.js` and `node bin/addrinuse.js`,
 * from the bundle that `npm run build` writes (dist/bundle/*.cjs, compiled from V8's code cache once
 * one exists). The rest of the suite runs the sources under tsx, which never sees what only the
 * bundle does: a script compiled from the code cache lost its dynamic-import callback, so every host
 * given by name failed with "A dynamic import callback was not specified" from the second run on.
 *
 * Host names come from a hosts file this test writes: as root, each CLI runs in a mount namespace of
 * its own with that file bound over /etc/hosts (unshare(1)), so no name goes to DNS and the
 * machine's own /etc/hosts is never touched. `localhost` is tested with the machine's own file too.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, appendFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDemoHosts, type DemoHosts } from "../../src/remote/demo/rshd.js";
import { findShuttle } from "../../src/remote/ssh/relay.js";
import { sshdSkipReason, startSshd, type Sshd } from "../helpers/sshd.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bundleDir = join(root, "dist", "bundle");
const isRoot = process.getuid?.() === 0;
const hasUnshare = spawnSync("unshare", ["--version"]).status === 0;
const namesSkip = !isRoot ? "host names from a test hosts file need root (a mount namespace over /etc/hosts)" : !hasUnshare ? "no unshare(1) (util-linux)" : null;

interface Ran {
  code: number | null;
  out: string;
  err: string;
}

/** Run bin/NAME.js; with `hostsFile`, inside a mount namespace where that file is /etc/hosts. Bounded. */
function runBin(name: "multi-rsh" | "addrinuse", args: string[], opts: { hostsFile?: string; timeoutMs?: number } = {}): Promise<Ran> {
  const bin = join(root, "bin", `${name}.js`);
  const [cmd, argv] = opts.hostsFile
    ? ["unshare", ["--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', opts.hostsFile, process.execPath, bin, ...args]]
    : [process.execPath, [bin, ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, argv as string[], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NODE_OPTIONS: "" } });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

interface JsonResult {
  host: string;
  state: string;
  exitCode: number | null;
  closedBy: string | null;
  remoteAddress?: string;
  error: { code: string; message: string } | null;
  output: { stream: string; text: string }[] | string[];
}

function resultsOf(r: Ran): JsonResult[] {
  try {
    return (JSON.parse(r.out) as { results: JsonResult[] }).results;
  } catch {
    assert.fail(`no JSON document (exit ${r.code}): ${r.err.slice(0, 500)}`);
  }
}

function outputText(res: JsonResult): string {
  return JSON.stringify(res.output);
}

test("the bundle is built and has no import() left (bin/load.js compiles it from V8's code cache)", () => {
  for (const cli of ["multi-rsh", "addrinuse"]) {
    const file = join(bundleDir, `${cli}.cjs`);
    assert.ok(existsSync(file), `${file} missing: npm test builds it (npm run build)`);
  }
  const r = spawnSync(process.execPath, ["-e", `const s=require("fs").readFileSync(${JSON.stringify(join(bundleDir, "multi-rsh.cjs"))},"utf8");process.exit(/\\bimport\\(/.test(s)?1:0)`]);
  assert.equal(r.status, 0, "multi-rsh.cjs has an import()");
});

test("--version and --help of both CLIs; a bad flag is one line and exit 2", async () => {
  const { version } = JSON.parse(spawnSync(process.execPath, ["-p", `JSON.stringify(require(${JSON.stringify(join(root, "package.json"))}))`], { encoding: "utf8" }).stdout) as { version: string };
  for (const cli of ["multi-rsh", "addrinuse"] as const) {
    const v = await runBin(cli, ["--version"]);
    assert.equal(v.code, 0, v.err);
    assert.equal(v.out.trim().endsWith(version), true, v.out);
    const h = await runBin(cli, ["--help"]);
    assert.equal(h.code, 0, h.err);
    assert.match(h.out, /^Usage: /);
    const bad = await runBin(cli, ["--no-such-flag"]);
    assert.equal(bad.code, 2, `${cli}: ${bad.out}${bad.err}`);
    assert.equal(bad.err.trim().split("\n").length, 1, bad.err);
    assert.match(bad.err, /no-such-flag/);
    assert.doesNotMatch(bad.err, /\n\s+at /, "no stack trace");
  }
});

test("every addrinuse subcommand runs from the bundle with --json", async () => {
  const cases: [string, string[]][] = [
    ["why", ["why", "1", "--host", "127.0.0.1", "--json"]],
    ["wait", ["wait", "1", "--host", "127.0.0.1", "--timeout", "1", "--json"]],
    ["ls", ["ls", "--top", "3", "--json"]],
    ["watch", ["watch", "--count", "1", "--interval", "0.1", "--json"]],
    ["tune", ["tune", "--json"]],
    ["demo", ["demo", "--json"]],
    ["lab --list", ["lab", "--list", "--json"]],
    ["lab 1", ["lab", "1", "--json"]],
  ];
  for (const [what, args] of cases) {
    const r = await runBin("addrinuse", args, { timeoutMs: 60_000 });
    assert.ok(r.code === 0 || r.code === 1, `${what}: exit ${r.code}: ${r.err.slice(0, 300)}`);
    assert.doesNotMatch(r.err, /\n\s+at |Error:|Warning/, `${what}: ${r.err.slice(0, 300)}`);
    for (const doc of r.out.trim().split("\n").filter(Boolean).length > 1 && what === "watch" ? r.out.trim().split("\n") : [r.out]) {
      assert.doesNotThrow(() => JSON.parse(doc), `${what}: not JSON: ${r.out.slice(0, 200)}`);
    }
  }
});

test("a reader that goes away (| true): addrinuse exits 141 quietly, not an abort from inside the netlink addon", async () => {
  // It was "terminate called after throwing an instance of 'Napi::Error' what(): write EPIPE", exit 134.
  for (const args of [["ls", "--json"], ["why", "1", "--host", "127.0.0.1", "--json"]]) {
    const bash = spawnSync("bash", ["-c", 'node "$0" "$@" | true; echo "${PIPESTATUS[0]}"', join(root, "bin", "addrinuse.js"), ...args], { encoding: "utf8", timeout: 30_000 });
    assert.doesNotMatch(bash.stderr, /terminate called|Napi::Error|\n\s+at /, `${args.join(" ")}: ${bash.stderr}`);
    assert.ok(["0", "141"].includes(bash.stdout.trim()), `${args.join(" ")}: exit ${bash.stdout.trim()}: ${bash.stderr}`);
    assert.equal(bash.stderr, "", args.join(" "));
  }
});

describe("multi-rsh from the bundle reaches hosts given by name, on every transport", () => {
  let demo: DemoHosts;
  let sshd: Sshd | undefined;
  let dir: string;
  let hostsFile: string;
  const sshSkip = sshdSkipReason() ?? (existsSync("/usr/bin/ssh") ? null : "no /usr/bin/ssh (apt-get install openssh-client)");

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "aiinst-"));
    // One rsh host on each loopback family, so `localhost` works whichever address it resolves to.
    demo = await startDemoHosts({ addresses: ["127.0.0.1", "::1"] });
    hostsFile = join(dir, "hosts");
    writeFileSync(
      hostsFile,
      ["127.0.0.1 localhost", "::1 localhost ip6-localhost", "127.0.0.1 aiv4.addrinuse.test aiv4", "::1 aiv6.addrinuse.test aiv6", ""].join("\n"),
    );
    if (!sshSkip) {
      sshd = await startSshd({ sshdConfig: ["ListenAddress ::1"] });
      // The test's own names for the sshd, in its known_hosts beside the address.
      const key = sshd.hostKey.publicLine.split(" ").slice(0, 2).join(" ");
      for (const n of ["localhost", "aiv4", "aiv4.addrinuse.test", "aiv6", "::1"]) appendFileSync(sshd.knownHostsPath, `[${n}]:${sshd.port} ${key}\n`);
    }
  });
  after(async () => {
    await demo?.close();
    await sshd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function rshArgs(): string[] {
    const a = ["--port", String(demo.port)];
    if (!demo.reservedOnly) a.push("--local-ports", "20000-29999");
    return a;
  }

  test("-R rsh -w localhost: the name resolves, from the code cache too (run twice)", async () => {
    for (let i = 0; i < 2; i++) {
      const r = await runBin("multi-rsh", ["--json", "-R", "rsh", ...rshArgs(), "-w", "localhost", "echo via-$MULTI_RSH_HOST"]);
      const [res] = resultsOf(r);
      assert.equal(res!.state, "done", JSON.stringify(res));
      assert.equal(res!.closedBy, "remote");
      assert.match(outputText(res!), /via-(127\.0\.0\.1|::1)/);
      assert.doesNotMatch(r.err, /dynamic import|Warning/, r.err);
    }
    assert.ok(readdirSync(bundleDir).some((f) => f.startsWith("multi-rsh.") && f.endsWith(".v8cache")), "the second run had a code cache to load");
  });

  test("-R rsh -w '[::1]': the bracketed IPv6 literal as users type it, and user@[::1]", async () => {
    const r = await runBin("multi-rsh", ["--json", "-R", "rsh", ...rshArgs(), "-w", "[::1]", "echo via-$MULTI_RSH_HOST"]);
    const [res] = resultsOf(r);
    assert.equal(res!.host, "::1", JSON.stringify(res));
    assert.equal(res!.state, "done", JSON.stringify(res));
    assert.equal(res!.closedBy, "remote");
    assert.match(outputText(res!), /via-::1/);
    const me = userInfo().username;
    const u = await runBin("multi-rsh", ["--json", "-R", "rsh", ...rshArgs(), "-w", `${me}@[::1]`, "id -un"]);
    const [ures] = resultsOf(u);
    assert.equal(ures!.host, "::1", JSON.stringify(ures));
    assert.equal(ures!.state, "done", JSON.stringify(ures));
    assert.match(outputText(ures!), new RegExp(`"${me}"`));
  });

  test("-R rsh: names from a hosts file, IPv4 and IPv6", { skip: namesSkip ?? false }, async () => {
    const r = await runBin("multi-rsh", ["--json", "-R", "rsh", ...rshArgs(), "-w", "aiv4,aiv6.addrinuse.test", "echo via-$MULTI_RSH_HOST"], { hostsFile });
    const byHost = new Map(resultsOf(r).map((x) => [x.host, x]));
    assert.equal(byHost.get("aiv4")?.state, "done", JSON.stringify(byHost.get("aiv4")));
    assert.match(outputText(byHost.get("aiv4")!), /via-127\.0\.0\.1/);
    assert.equal(byHost.get("aiv6.addrinuse.test")?.state, "done", JSON.stringify(byHost.get("aiv6.addrinuse.test")));
    assert.match(outputText(byHost.get("aiv6.addrinuse.test")!), /via-::1/);
    for (const x of byHost.values()) assert.equal(x.closedBy, "remote");
  });

  test("-R ssh, -R openssh and -R exec (ssh template): names from a hosts file, IPv4 and IPv6", { skip: namesSkip ?? sshSkip ?? false }, async () => {
    const cfg = sshd!.clientConfigPath;
    const forms: [string, string[]][] = [
      ["ssh", ["-R", "ssh", "-F", cfg]],
      ["openssh", ["-R", "openssh", "-F", cfg]],
    ];
    for (const [name, args] of forms) {
      const r = await runBin("multi-rsh", ["--json", ...args, "-w", "localhost,aiv4,aiv6", "echo ok-$((6*7))"], { hostsFile, timeoutMs: 60_000 });
      const results = resultsOf(r);
      assert.equal(results.length, 3);
      for (const x of results) {
        assert.equal(x.state, "done", `${name} ${x.host}: ${JSON.stringify(x.error)} ${r.err.slice(0, 300)}`);
        assert.match(outputText(x), /ok-42/);
      }
    }
    const ex = await runBin("multi-rsh", ["--json", "-R", "exec", "-w", "aiv4,aiv6", "--", "ssh", "-F", cfg, "%h", "echo ok-$((6*7))"], { hostsFile, timeoutMs: 60_000 });
    const results = resultsOf(ex);
    assert.equal(results.length, 2);
    for (const x of results) {
      assert.equal(x.state, "done", `exec ${x.host}: ${JSON.stringify(x.error)} ${ex.err.slice(0, 300)}`);
      assert.match(outputText(x), /ok-42/);
      // Through the relay the name was resolved here, and the host closed first.
      if (findShuttle()) assert.equal(x.closedBy, "remote", `exec ${x.host}`);
    }
  });
});

test("npm run demo's command: multi-rsh --demo from the bundle, 16 hosts done, the remote closed every connection", async () => {
  const r = await runBin("multi-rsh", ["--demo"], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.err);
  const hosts = new Set(r.out.split("\n").filter(Boolean).map((l) => l.slice(0, l.indexOf(": "))));
  assert.equal(hosts.size, 16, r.out.slice(0, 300));
  assert.match(r.err, /16 hosts in [\d.]+ s: 16 done/);
  assert.match(r.err, /TIME_WAIT ledger: 16 connections: 16 closed by the remote first, 0 by us first, 0 reset; local TIME_WAIT left by this run: 0/);
});
