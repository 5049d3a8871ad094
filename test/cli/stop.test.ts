import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { startDemoHosts, type DemoHosts } from "../../src/remote/demo/rshd.js";
import { MULTI_RSH, processesWith, startCli, until } from "../helpers/cli-child.js";
import { sshdSkipReason, startSshd, type Sshd } from "../helpers/sshd.js";

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "latin1").trim();
  } catch {
    return "";
  }
}

/** A word no other process on the machine has in its command line. */
const tag = () => `aistop${randomBytes(4).toString("hex")}`;

interface Doc {
  results: { host: string; state: string; output: string[] }[];
  exitCode: number;
}

describe("SIGTERM and SIGHUP are a cancel: one result per host, no child left, no temp file", () => {
  for (const [signal, code] of [["SIGTERM", 143], ["SIGHUP", 129]] as const) {
    test(`-R exec, ${signal}: --json has every host cancelled, and no local command survives`, async () => {
      const mark = tag();
      const c = startCli(MULTI_RSH, ["--json", "-p", "2", "-R", "exec", "-w", "h[1-3]", "--", "sh", "-c", `echo started; sleep 60; echo ${mark}`]);
      await until("two commands running", () => processesWith(mark).length >= 2);
      c.child.kill(signal);
      const [exit] = await c.exited;
      assert.equal(exit, code, c.err());
      const doc = JSON.parse(c.out()) as Doc;
      assert.deepEqual(doc.results.map((r) => [r.host, r.state]), [["h1", "cancelled"], ["h2", "cancelled"], ["h3", "cancelled"]]);
      assert.deepEqual(doc.results.map((r) => r.output), [["started"], ["started"], []]);
      assert.equal(doc.exitCode, code);
      assert.match(c.err(), new RegExp(`multi-rsh: ${signal}: resetting running connections, cancelling the rest`));
      await until("no command left", () => processesWith(mark).length === 0, 3000);
    });
  }

  describe("rsh", () => {
    let demo: DemoHosts;
    before(async () => {
      demo = await startDemoHosts({ count: 2, first: 122 });
    });
    after(async () => {
      await demo?.close();
    });

    test("SIGTERM: the text summary lists every host, connections reset, exit 143", async () => {
      const args = ["--port", String(demo.port), ...(demo.reservedOnly ? [] : ["--local-ports", "20000-29999"])];
      const c = startCli(MULTI_RSH, [...args, "-w", demo.addresses.join(","), "echo started; sleep 60"]);
      await until("both started", () => (c.out().match(/started/g) ?? []).length === 2);
      c.child.kill("SIGTERM");
      const [exit] = await c.exited;
      assert.equal(exit, 143);
      assert.match(c.err(), /2 hosts in [\d.]+ s: 2 cancelled/);
      for (const h of demo.addresses) assert.match(c.err(), new RegExp(`${h.replace(/\./g, "\\.")}: cancelled \\(cancelled\\) HOST_CANCELLED`));
      assert.match(c.err(), /0 by us first, 2 reset; local TIME_WAIT left by this run: 0/);
    });
  });

  const skip = sshdSkipReason() ?? (existsSync("/usr/bin/ssh") ? null : "no /usr/bin/ssh");
  describe("-R openssh", { skip: skip ?? false }, () => {
    let sshd: Sshd;
    before(async () => {
      sshd = await startSshd();
    });
    after(async () => {
      await sshd?.stop();
    });

    for (const [signal, code] of [["SIGTERM", 143], ["SIGHUP", 129]] as const) {
      test(`${signal}: the host is cancelled, its ssh ended, its log and relay files removed`, async () => {
        const tmp = mkdtempSync(join(tmpdir(), "aistop-tmp-"));
        try {
          const mark = tag();
          const c = startCli(MULTI_RSH, ["--ndjson", "-R", "openssh", "-F", sshd.clientConfigPath, "-w", sshd.address, `echo started; sleep 60; echo ${mark}`], {
            env: { TMPDIR: tmp },
          });
          // Our ssh, and the command it started on the host's side (the same machine here).
          await until("the command started", () => {
            const names = processesWith(mark).map(comm);
            return names.includes("ssh") && names.some((n) => n !== "ssh" && n !== "node");
          });
          c.child.kill(signal);
          const [exit] = await c.exited;
          assert.equal(exit, code, c.err());
          // The host records, then the run's summary record (which has no host).
          const records = c.out().trim().split("\n").map((l) => JSON.parse(l) as { host: string; state: string }).filter((r) => r.host !== undefined);
          assert.deepEqual(records.map((r) => [r.host, r.state]), [[sshd.address, "cancelled"]]);
          await until("ssh gone", () => !processesWith(mark).some((pid) => comm(pid) === "ssh"), 3000);
          assert.deepEqual(readdirSync(tmp), [], "no temp file left");
        } finally {
          rmSync(tmp, { recursive: true, force: true });
        }
      });
    }
  });
});

describe("stdout closed by its reader (| head -1): no stack trace, children ended", () => {
  test("-R exec: exit 141 (as SIGPIPE), nothing on stderr but the summary, no command left", async () => {
    const mark = tag();
    const c = startCli(MULTI_RSH, ["-R", "exec", "-w", "h[1-4]", "--", "sh", "-c", `yes | head -c 50000000; sleep 60; echo ${mark}`], { readStdout: false });
    // head -1: take one chunk, then close the pipe.
    await new Promise<void>((resolve) => c.child.stdout!.once("data", () => resolve()));
    c.child.stdout!.destroy();
    const [exit] = await c.exited;
    assert.equal(exit, 141, c.err());
    assert.doesNotMatch(c.err(), /Error|at .*\(|node:/);
    assert.match(c.err(), /4 hosts in [\d.]+ s: 4 cancelled/);
    await until("no command left", () => processesWith(mark).length === 0, 3000);
  });
});

test("SIGTERM behind a reader that never reads again: the run is cancelled and the process still exits", async () => {
  const mark = tag();
  const c = startCli(MULTI_RSH, ["-R", "exec", "-w", "h[1-2]", "--", "sh", "-c", `yes | head -c 100000000; sleep 60; echo ${mark}`], { readStdout: false });
  // Never read: the pipe fills and the hosts are paused behind it.
  c.child.stdout!.pause();
  await until("the commands running", () => processesWith(mark).length >= 2);
  await new Promise((r) => setTimeout(r, 500));
  c.child.kill("SIGTERM");
  let exited = false;
  void c.exited.then(() => (exited = true));
  await until("the process exits", () => exited, 15_000);
  const [code] = await c.exited;
  assert.equal(code, 143);
  assert.match(c.err(), /2 hosts in [\d.]+ s: 2 cancelled/);
  await until("no command left", () => processesWith(mark).length === 0, 3000);
  c.child.stdout!.destroy();
});
