/**
 * --copy, --rcopy, -I, -o/-e and groups through multi-rsh's main(), with no testbed: the "hosts" are
 * local directories and `-R exec` runs the real `scp -t`/`scp -f` (OpenSSH's) in each, so the rcp
 * protocol is spoken to the real program. test/remote/copy-live.test.ts does the same over real
 * in.rshd and sshd.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { captureIO } from "../helpers/io.js";

const HOSTS = ["h1", "h2", "h3"];

function scratch(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), "aiu-copy-"));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** -R exec: each "host" is BASE/HOST; the transfer's command runs there through sh. */
function execHosts(base: string): string[] {
  return ["--", "sh", "-c", 'mkdir -p "$1" && cd "$1" && eval "$2"', "sh", `${base}/%h`];
}

async function run(args: string[], opts: { stdin?: string; env?: Record<string, string> } = {}) {
  const io = captureIO(opts);
  const code = await main(args, io);
  return { code, out: io.out(), err: io.err() };
}

interface Doc {
  hosts: string[];
  results: { host: string; state: string; error: { code: string; message: string } | null; output: string[] }[];
}

test("--copy -r --preserve sends a file and a tree to every host, byte for byte, with modes and times", async (t) => {
  const d = scratch(t);
  const src = join(d, "src");
  mkdirSync(join(src, "tree", "sub"), { recursive: true });
  writeFileSync(join(src, "big.bin"), Buffer.alloc(3 * 1024 * 1024 + 7, 0xab));
  writeFileSync(join(src, "tree", "a.txt"), "a\n");
  writeFileSync(join(src, "tree", "sub", "empty"), "");
  chmodSync(join(src, "tree", "a.txt"), 0o640);
  utimesSync(join(src, "tree", "a.txt"), 1_600_000_000, 1_600_000_000);
  const base = join(d, "hosts");
  const r = await run(["-R", "exec", "-w", HOSTS.join(","), "--json", "--copy", join(src, "big.bin"), join(src, "tree"), "-r", "--preserve", "--dest", ".", ...execHosts(base)]);
  assert.equal(r.code, 0, r.err + r.out);
  const doc = JSON.parse(r.out) as Doc & { copy: { files: number; bytes: number } };
  assert.deepEqual(doc.results.map((x) => x.state), ["done", "done", "done"]);
  assert.equal(doc.copy.files, 3);
  for (const h of HOSTS) {
    assert.ok(readFileSync(join(base, h, "big.bin")).equals(readFileSync(join(src, "big.bin"))), h);
    assert.equal(readFileSync(join(base, h, "tree", "a.txt"), "utf8"), "a\n");
    assert.equal(statSync(join(base, h, "tree", "a.txt")).mode & 0o777, 0o640);
    assert.equal(Math.floor(statSync(join(base, h, "tree", "a.txt")).mtimeMs / 1000), 1_600_000_000);
    assert.equal(statSync(join(base, h, "tree", "sub", "empty")).size, 0);
  }
});

test("a host that cannot take the file gets its own failed result with the host's reason; the others are done", async (t) => {
  const d = scratch(t);
  writeFileSync(join(d, "f"), "payload\n");
  const base = join(d, "hosts");
  mkdirSync(join(base, "h2"), { recursive: true });
  symlinkSync("/dev/full", join(base, "h2", "f"));
  const r = await run(["-R", "exec", "-w", HOSTS.join(","), "--json", "--copy", join(d, "f"), "--dest", ".", ...execHosts(base)]);
  assert.equal(r.code, 1);
  const doc = JSON.parse(r.out) as Doc;
  const byHost = new Map(doc.results.map((x) => [x.host, x]));
  assert.equal(byHost.get("h1")!.state, "done");
  assert.equal(byHost.get("h3")!.state, "done");
  assert.equal(byHost.get("h2")!.state, "failed");
  assert.equal(byHost.get("h2")!.error!.code, "HOST_COPY");
  assert.match(byHost.get("h2")!.error!.message, /No space left on device/);
  assert.equal(readFileSync(join(base, "h3", "f"), "utf8"), "payload\n");
});

test("no rcp program on the host is that host's failure, said as such", async (t) => {
  const d = scratch(t);
  writeFileSync(join(d, "f"), "x");
  const r = await run(["-R", "exec", "-w", "h1", "--copy", join(d, "f"), "--dest", ".", "--rcp-path", "/nonexistent/scp", ...execHosts(join(d, "hosts"))]);
  assert.equal(r.code, 1);
  assert.match(r.err, /h1: failed HOST_COPY: no \/nonexistent\/scp on the host/);
});

test("--rcopy brings every host's file back as DIR/NAME.HOST, never one over another", async (t) => {
  const d = scratch(t);
  const base = join(d, "hosts");
  for (const h of HOSTS) {
    mkdirSync(join(base, h, "logs"), { recursive: true });
    writeFileSync(join(base, h, "app.log"), `log of ${h}\n`);
    writeFileSync(join(base, h, "logs", "x"), h);
  }
  const back = join(d, "back");
  mkdirSync(back);
  const r = await run(["-R", "exec", "-w", HOSTS.join(","), "--rcopy", "app.log", "logs", "-r", "--dest", back, ...execHosts(base)]);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(readdirSync(back).sort(), [...HOSTS.map((h) => `app.log.${h}`), ...HOSTS.map((h) => `logs.${h}`)].sort());
  for (const h of HOSTS) {
    assert.equal(readFileSync(join(back, `app.log.${h}`), "utf8"), `log of ${h}\n`);
    assert.equal(readFileSync(join(back, `logs.${h}`, "x"), "utf8"), h);
  }
  assert.match(r.err, /--rcopy: 6 files/);
});

test("--rcopy: a file missing on one host fails that host only", async (t) => {
  const d = scratch(t);
  const base = join(d, "hosts");
  for (const h of ["h1", "h2"]) mkdirSync(join(base, h), { recursive: true });
  writeFileSync(join(base, "h1", "only-here"), "1");
  const back = join(d, "back");
  mkdirSync(back);
  const r = await run(["-R", "exec", "-w", "h1,h2", "--json", "--rcopy", "only-here", "--dest", back, ...execHosts(base)]);
  const doc = JSON.parse(r.out) as Doc;
  assert.equal(doc.results[0]!.state, "done");
  assert.equal(doc.results[1]!.state, "failed");
  assert.match(doc.results[1]!.error!.message, /No such file/);
  assert.deepEqual(readdirSync(back), ["only-here.h1"]);
});

test("-I sends the same stdin to the command on every host", async () => {
  const input = "line one\n".repeat(20_000);
  const r = await run(["-R", "exec", "-w", HOSTS.join(","), "-I", "-N", "--", "sh", "-c", "wc -c"], { stdin: input });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.out.trim().split("\n"), HOSTS.map(() => String(input.length)));
  assert.match(r.err, /-I: .* of stdin sent to 3 of 3 hosts/);
});

test("-o and -e write each host's output to DIR/HOST as it arrives", async (t) => {
  const d = scratch(t);
  const out = join(d, "out");
  const err = join(d, "err");
  // The template's last word is the command, run with $0 = the host.
  const r2 = await run(["-R", "exec", "-w", HOSTS.join(","), "-o", out, "-e", err, "--", "sh", "-c", 'h=$1; sh -c "$2" "$h"', "sh", "%h", 'echo "out $0"; echo "err $0" >&2; [ "$0" != h2 ]']);
  assert.equal(r2.code, 1, r2.err);
  assert.equal(r2.out, "", "nothing on the terminal: it went to the files");
  for (const h of HOSTS) {
    assert.equal(readFileSync(join(out, h), "utf8"), `out ${h}\n`);
    assert.equal(readFileSync(join(err, h), "utf8"), `err ${h}\n`);
  }
});

test("groups: -g, @NAME in -w and -x, -a, from --groups, ClusterShell's groups.d and dshgroup files", async (t) => {
  const d = scratch(t);
  const cs = join(d, "clustershell");
  mkdirSync(join(cs, "groups.d"), { recursive: true });
  writeFileSync(join(cs, "groups.d", "site.yaml"), "site:\n  web: 'web[1-3]'\n  db: [db1, db2]\n");
  writeFileSync(join(cs, "groups"), "login: login[1-2]\n");
  writeFileSync(join(cs, "groups.conf"), "[Main]\ndefault: site\n");
  const home = join(d, "home");
  mkdirSync(join(home, ".dsh", "group"), { recursive: true });
  writeFileSync(join(home, ".dsh", "group", "rack1"), "# rack 1\nr1n[1-2]\n");
  const etcDsh = join(d, "etc-dsh");
  mkdirSync(join(etcDsh, "group"), { recursive: true });
  writeFileSync(join(etcDsh, "group", "spares"), "spare1\n");
  const mine = join(d, "mine.conf");
  writeFileSync(join(d, "mine.conf"), "web: override1\nall: @site:web,@login\n");
  const env = { CLUSTERSHELL_CFGDIR: cs, HOME: home, MULTI_RSH_DSH_DIR: etcDsh };
  const hosts = async (...a: string[]) => {
    const r = await run(["-R", "exec", "--json", ...a, "--", "true", "x"], { env });
    assert.equal(r.code, 0, r.err);
    return (JSON.parse(r.out) as Doc).hosts;
  };
  assert.deepEqual(await hosts("-g", "web"), ["web1", "web2", "web3"]);
  assert.deepEqual(await hosts("-g", "db,login"), ["db1", "db2", "login1", "login2"]);
  assert.deepEqual(await hosts("-w", "@rack1,x9", "-g", "spares"), ["r1n1", "r1n2", "x9", "spare1"]);
  assert.deepEqual(await hosts("-g", "web", "-x", "@site:web!web2"), ["web2"]);
  assert.deepEqual(await hosts("--groups", mine, "-g", "web"), ["override1"]);
  assert.deepEqual(await hosts("--groups", mine, "-a"), ["web1", "web2", "web3", "login1", "login2"]);
  const yaml = join(d, "g.yaml");
  writeFileSync(yaml, "mine:\n  pair: 'p[1-2]'\n");
  assert.deepEqual(await hosts("--groups", yaml, "-g", "pair"), ["p1", "p2"]);
});

test("bad input: one line naming the problem, exit 2, and no host contacted", async (t) => {
  const d = scratch(t);
  const base = join(d, "hosts");
  writeFileSync(join(d, "f"), "x");
  mkdirSync(join(d, "dir"));
  execFileSync("mkfifo", [join(d, "fifo")]);
  const w = ["-R", "exec", "-w", HOSTS.join(",")];
  const cases: [string[], RegExp, { stdin?: string; tty?: boolean }?][] = [
    [[...w, "--copy", join(d, "missing"), "--dest", ".", ...execHosts(base)], /cannot copy '.*missing': no such file or directory/],
    [[...w, "--copy", join(d, "f"), join(d, "fifo"), "--dest", ".", ...execHosts(base)], /cannot copy '.*fifo': not a regular file/],
    [[...w, "--copy", join(d, "dir"), "--dest", ".", ...execHosts(base)], /a directory \(add -r\)/],
    // Unreadable even for root: reading /proc/self/mem at address 0 fails (EIO).
    [[...w, "--copy", "/proc/self/mem", "--dest", ".", ...execHosts(base)], /cannot copy '\/proc\/self\/mem': EIO/],
    [[...w, "--copy", join(d, "f"), ...execHosts(base)], /--copy needs --dest DIR/],
    [[...w, "--rcopy", "f", "--dest", join(d, "nowhere"), ...execHosts(base)], /--rcopy --dest '.*nowhere': not a directory here/],
    [["-R", "exec", "-g", "nosuchgroup", "--copy", join(d, "f"), "--dest", ".", ...execHosts(base)], /unknown group 'nosuchgroup'/],
    [["-R", "exec", "-w", "h1,@nosuchgroup", "--", "true", "x"], /unknown group 'nosuchgroup'/],
    [[...w, "-I", "--", "sh", "-c", "cat"], /stdin is a terminal/, { tty: true }],
    [[...w, "--copy", join(d, "f"), "--rcopy", "x", "--dest", ".", ...execHosts(base)], /choose one/],
    [[...w, "-r", "--", "true", "x"], /-r goes with --copy or --rcopy/],
  ];
  if (process.getuid?.() !== 0) {
    writeFileSync(join(d, "secret"), "s");
    chmodSync(join(d, "secret"), 0);
    cases.push([[...w, "--copy", join(d, "secret"), "--dest", ".", ...execHosts(base)], /permission denied/]);
  }
  for (const [args, msg, o] of cases) {
    const io = captureIO({ env: { CLUSTERSHELL_CFGDIR: join(d, "none"), HOME: d, MULTI_RSH_DSH_DIR: join(d, "none") } });
    if (o?.tty) Object.assign(io, { stdin: Object.assign(Readable.from([]), { isTTY: true }) });
    const code = await main(args, io);
    assert.equal(code, 2, `${args.join(" ")}: ${io.err()}`);
    assert.match(io.err(), msg);
    assert.equal(io.err().trim().split("\n").length, 1, io.err());
    assert.doesNotMatch(io.err(), /at .*\.ts:\d+/);
  }
  assert.equal(existsSync(base), false, "no host was contacted");
});

test("-o files are complete up to a Ctrl-C twice: what arrived is on disk, every host has its file", async (t) => {
  const d = scratch(t);
  const out = join(d, "out");
  const io = captureIO();
  const running = main(["-R", "exec", "-w", HOSTS.join(","), "-o", out, "--", "sh", "-c", 'echo "first $1"; exec sleep 30', "sh", "%h", "x"], io);
  // Wait (bounded) until every host's first line is on disk, then Ctrl-C twice.
  for (let i = 0; i < 200 && !HOSTS.every((h) => existsSync(join(out, h)) && readFileSync(join(out, h), "utf8").includes("first")); i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
  io.signals.emit("SIGINT");
  io.signals.emit("SIGINT");
  assert.equal(await running, 130, io.err());
  for (const h of HOSTS) assert.equal(readFileSync(join(out, h), "utf8"), `first ${h}\n`);
});

test("-I refuses stdin beyond its memory limit with a one-line reason (64 MiB by default)", async () => {
  const { MAX_STDIN_BYTES, readStdinForAll } = await import("../../src/cli/multi-rsh/transfer.js");
  assert.equal(MAX_STDIN_BYTES, 64 * 1024 * 1024);
  await assert.rejects(readStdinForAll(Readable.from([Buffer.alloc(600), Buffer.alloc(600)]), 1000), /-I: stdin is larger than 1000 B/);
  assert.equal((await readStdinForAll(Readable.from([Buffer.alloc(600)]), 1000)).length, 600);
});

test("rsh's -I wrapper: the command sees EOF after N bytes while our side stays open, keeps its exit code, and every byte is read", async () => {
  const { newMarker, wrapCommand } = await import("../../src/remote/rcmd/exit-marker.js");
  const { spawn } = await import("node:child_process");
  const m = newMarker("t0");
  const runWrapped = (command: string, input: Buffer) =>
    new Promise<string>((resolve) => {
      // stdin is never ended: as over rsh, where a half-close would be our FIN first.
      const child = spawn("sh", ["-c", wrapCommand(command, m, { length: input.length })], { stdio: ["pipe", "pipe", "inherit"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stdin.write(input);
      child.on("close", () => {
        child.stdin.destroy();
        resolve(out);
      });
    });
  // The wrapper's pid line first (the remote kill on timeout needs it), then the command's output.
  const pidLine = new RegExp(`^${m.marker}pid\\d+\\n`);
  const wc = await runWrapped("wc -c", Buffer.alloc(70_000, 1));
  assert.match(wc, pidLine);
  assert.equal(wc.replace(pidLine, ""), `70000\n${m.marker}0\n`);
  // A command that reads nothing still lets the shell read (and drop) every byte, and keeps its status.
  assert.equal((await runWrapped("exit 3", Buffer.alloc(200_000, 2))).replace(pidLine, ""), `${m.marker}3\n`);
});
