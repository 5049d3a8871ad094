/**
 * The TIME_WAIT ledger against the kernel, for every transport, with and without the relay: the
 * TIME_WAIT rows towards the host that a run adds (read before and after it, as `ss` would show
 * them) are what the ledger reports as "local TIME_WAIT left by this run". Through the installed
 * CLI; "without the relay" is a PATH that has ssh and nohup but no netcat-openbsd.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readTcpSockets } from "../../src/kernel/read.js";
import { findShuttle } from "../../src/remote/ssh/relay.js";
import { sshdSkipReason, startSshd, type Sshd } from "../helpers/sshd.js";

const cli = fileURLToPath(new URL("../../bin/multi-rsh.js", import.meta.url));
const skip = sshdSkipReason() ?? (existsSync("/usr/bin/ssh") ? null : "no /usr/bin/ssh (apt-get install openssh-client)");

interface Doc {
  results: { state: string; closedBy: string | null }[];
  ledger: { connections: number; localClosed: number; localTimeWait: number; notSeen: number };
}

describe("the ledger equals what the kernel shows", { skip: skip ?? false }, () => {
  let sshd: Sshd;
  let dir: string;
  let noNc: string;
  before(async () => {
    sshd = await startSshd();
    dir = mkdtempSync(join(tmpdir(), "aiu-ledger-"));
    noNc = join(dir, "path-without-nc");
    mkdirSync(noNc);
    for (const p of ["ssh", "nohup"]) symlinkSync(`/usr/bin/${p}`, join(noNc, p));
  });
  after(async () => {
    await sshd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const timeWaitTowardsSshd = () =>
    new Set(readTcpSockets().filter((s) => s.state === "TIME_WAIT" && s.remotePort === sshd.port && s.remoteAddress === sshd.address).map((s) => `${s.localAddress} ${s.localPort}`));

  const cases: { name: string; args: () => string[]; relay: boolean }[] = [
    { name: "-R ssh", args: () => ["-R", "ssh", "-F", sshd.clientConfigPath, "-w", sshd.address, "echo x"], relay: true },
    { name: "-R openssh", args: () => ["-R", "openssh", "-F", sshd.clientConfigPath, "-w", sshd.address, "echo x"], relay: true },
    { name: "-R openssh without the relay", args: () => ["-R", "openssh", "-F", sshd.clientConfigPath, "-w", sshd.address, "echo x"], relay: false },
    { name: "-R exec -- ssh", args: () => ["-R", "exec", "-w", sshd.address, "--", "ssh", "-F", sshd.clientConfigPath, "%h", "echo x"], relay: true },
    { name: "-R exec -- ssh without the relay", args: () => ["-R", "exec", "-w", sshd.address, "--", "ssh", "-F", sshd.clientConfigPath, "%h", "echo x"], relay: false },
  ];
  for (const c of cases) {
    test(`${c.name}: local TIME_WAIT in the ledger = the rows the run added to the kernel's table`, { skip: c.relay && c.name !== "-R ssh" && !findShuttle() ? "no netcat-openbsd: no relay" : false }, () => {
      const beforeRun = timeWaitTowardsSshd();
      const r = spawnSync(process.execPath, [cli, "--json", ...c.args()], {
        env: c.relay ? process.env : { ...process.env, PATH: noNc },
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout) as Doc;
      assert.equal(doc.results[0]!.state, "done");
      const added = [...timeWaitTowardsSshd()].filter((k) => !beforeRun.has(k)).length;
      assert.equal(doc.ledger.localTimeWait, added, `ledger ${JSON.stringify(doc.ledger)}, kernel added ${added}`);
      // Without the relay the system ssh closes first (one TIME_WAIT, named), unless sshd's close wins the race.
      if (!c.relay) assert.deepEqual([doc.ledger.localClosed, doc.results[0]!.closedBy], added === 1 ? [1, "local"] : [0, "remote"]);
      else assert.equal(added, 0);
      assert.equal(doc.ledger.notSeen, 0);
    });
  }

  test("a program with no connection we can see: the ledger says it does not count it, rather than 0", () => {
    const r = spawnSync(process.execPath, [cli, "-R", "exec", "-w", "a,b", "--", "sh", "-c"].concat(["true"]), { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /local TIME_WAIT left by this run: 0 \(not counted: 2 hosts whose program's connection, if any, this run could not see\)/);
  });
});
