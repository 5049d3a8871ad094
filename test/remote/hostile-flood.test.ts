/**
 * Hostile rsh hosts that flood, forge and stall, against the installed CLI (node bin/multi-rsh.js, as
 * a user runs it): 50 MB without a newline, 1 GB of output with bounded memory (peak RSS from
 * /usr/bin/time), forged exit markers, a stalled stderr back-channel; every host exactly one result.
 */
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, createReadStream, existsSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startHostileRsh, writeAll, type HostileRsh, type HostileSession } from "../helpers/hostile-rsh.js";

const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? "rsh connects from reserved ports: needs root" : !existsSync("/usr/bin/time") ? "no /usr/bin/time (apt-get install time)" : false;

const MB = 1 << 20;
const scripts: Record<string, (s: HostileSession) => void | Promise<void>> = {
  // 50 MB of "x" and no newline, then the true status.
  async nonl(s) {
    await writeAll(s.socket, 50 * MB, Buffer.alloc(256 * 1024, 0x78));
    s.exit(0);
  },
  // 1 GiB in lines of 1 KiB.
  async gig(s) {
    const line = Buffer.alloc(1024, 0x79);
    line[1023] = 0x0a;
    const chunk = Buffer.concat(Array.from({ length: 256 }, () => line));
    await writeAll(s.socket, 1024 * MB, chunk);
    s.exit(0);
  },
  // Forged markers before the true one: another run's, a guess, the real one without a status,
  // with too many digits, then 10 MB of digits after the real marker head.
  async forge(s) {
    const head = s.marker.slice(0, "__AIU_EXIT_".length);
    s.socket.write(`${head}00112233445566778899__0\n`);
    s.socket.write(`${head}deadbeefdeadbeef__0\n`);
    s.socket.write(`${s.marker}\n${s.marker}99999\n${s.marker}`);
    await writeAll(s.socket, 10 * MB, Buffer.alloc(MB, 0x37));
    s.socket.write("\n");
    s.exit(7);
  },
  // The stderr channel is connected back and then never closed nor written; stdout ends normally.
  stall(s) {
    s.socket.write("out\n");
    s.socket.end(`${s.marker}0\n`);
  },
};
const names = Object.keys(scripts);
const addr = (i: number) => `127.13.1.${10 + i}`;
const kindOf = new Map(names.map((n, i) => [addr(i), n]));

let hostile: HostileRsh;
before(async () => {
  if (skip) return;
  hostile = await startHostileRsh(names.map((_, i) => addr(i)), (s) => scripts[kindOf.get(s.host)!]!(s));
});
after(async () => {
  await hostile?.close();
});

interface Ran {
  code: number | null;
  outBytes: number;
  lines: Map<string, number>;
  longest: number;
  stdoutJson: string;
  err: string;
  maxRssKiB: number;
}

/**
 * Runs the CLI under /usr/bin/time with stdout to a file (a file takes writes at once, so the peak
 * RSS is the CLI's own buffering, not a pipe's backlog), then counts the file's lines per host
 * prefix without keeping them.
 */
async function runCli(args: string[], keep = false): Promise<Ran> {
  const dir = mkdtempSync(join(tmpdir(), "aiu-flood-"));
  const file = join(dir, "stdout");
  const fd = openSync(file, "w");
  try {
    const r: Ran = { code: null, outBytes: 0, lines: new Map(), longest: 0, stdoutJson: "", err: "", maxRssKiB: 0 };
    await new Promise<void>((resolve, reject) => {
      const child = spawn("/usr/bin/time", ["-f", "MAXRSS_KIB %M", process.execPath, "bin/multi-rsh.js", ...args], {
        env: { ...process.env, NO_PROGRESS: "1" },
        stdio: ["ignore", fd, "pipe"],
      });
      child.stderr!.on("data", (b: Buffer) => (r.err += b.toString()));
      child.on("error", reject);
      child.on("close", (code) => {
        r.code = code;
        const m = /MAXRSS_KIB (\d+)/.exec(r.err);
        r.maxRssKiB = m ? Number(m[1]) : 0;
        resolve();
      });
    });
    let partial = 0;
    let prefix = "";
    let atStart = true;
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
      const b = chunk as Buffer;
      r.outBytes += b.length;
      if (keep) r.stdoutJson += b.toString();
      let i = 0;
      while (i < b.length) {
        if (atStart) {
          const colon = b.indexOf(0x3a, i);
          if (colon >= 0 && colon - i < 40) prefix = b.toString("latin1", i, colon);
          atStart = false;
        }
        const nl = b.indexOf(0x0a, i);
        if (nl < 0) {
          partial += b.length - i;
          break;
        }
        partial += nl - i;
        if (partial > r.longest) r.longest = partial;
        r.lines.set(prefix, (r.lines.get(prefix) ?? 0) + 1);
        partial = 0;
        atStart = true;
        i = nl + 1;
      }
    }
    return r;
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
}

const base = () => ["--port", String(hostile.port), "-t", "300"];

test("1 GiB of output and 50 MB without a newline: every byte through, memory bounded, one result per host", { skip, timeout: 600_000 }, async () => {
  const r = await runCli([...base(), "-w", `${addr(names.indexOf("gig"))},${addr(names.indexOf("nonl"))}`, "true"]);
  assert.equal(r.code, 0, r.err);
  const gig = addr(names.indexOf("gig"));
  const nonl = addr(names.indexOf("nonl"));
  assert.equal(r.lines.get(gig), 1024 * 1024);
  // 50 MB without newline arrives in pieces of at most 1 MiB, each with its host prefix.
  assert.equal(r.lines.get(nonl), 50);
  assert.ok(r.longest <= MB + gig.length + 2, `longest line ${r.longest}`);
  assert.match(r.err, /2 hosts in [\d.]+ s: 2 done/);
  // Bounded: nowhere near the 1 GiB that went through (what it was is printed for the report).
  console.log(`# peak RSS of multi-rsh over 1 GiB + 50 MB: ${(r.maxRssKiB / 1024).toFixed(0)} MiB`);
  assert.ok(r.maxRssKiB > 0 && r.maxRssKiB < 300 * 1024, `peak RSS ${r.maxRssKiB} KiB`);
});

test("forged and look-alike exit markers change neither the exit code nor the output", { skip, timeout: 120_000 }, async () => {
  const host = addr(names.indexOf("forge"));
  const r = await runCli([...base(), "--json", "-w", host, "true"], true);
  const doc = JSON.parse(r.stdoutJson);
  const res = doc.results[0];
  assert.equal(res.state, "done");
  assert.equal(res.exitCode, 7);
  const out: string[] = res.output;
  assert.equal(out.length, 5);
  assert.match(out[0]!, /^__AIU_EXIT_00112233445566778899__0$/);
  assert.match(out[1]!, /^__AIU_EXIT_deadbeefdeadbeef__0$/);
  assert.match(out[2]!, /^__AIU_EXIT_[0-9a-f]+__$/);
  assert.match(out[3]!, /^__AIU_EXIT_[0-9a-f]+__99999$/);
  assert.equal(out[4]!.length, out[2]!.length + 10 * MB);
});

test("a stalled stderr back-channel does not hold the host: one result, done, its output whole", { skip, timeout: 120_000 }, async () => {
  const host = addr(names.indexOf("stall"));
  const r = await runCli([...base(), "--stderr", "--json", "-w", host, "true"], true);
  const doc = JSON.parse(r.stdoutJson);
  assert.equal(doc.results.length, 1);
  assert.equal(doc.results[0].state, "done");
  assert.deepEqual(doc.results[0].output, ["out"]);
  assert.ok(doc.results[0].durationMs < 60_000);
});
