/**
 * A real OpenSSH sshd at a tiny MaxStartups, behind many host names (a bastion, one machine under
 * many names): past its limit sshd writes "Exceeded MaxStartups" and closes before its banner;
 * multi-rsh -R ssh retries those handshakes with backoff, and counts them. Root (sshd).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { main } from "../../src/cli/multi-rsh/multi-rsh.js";
import { captureIO } from "../helpers/io.js";
import { sshdSkipReason, startSshd } from "../helpers/sshd.js";

test("sshd at MaxStartups 2 behind 30 names: dropped handshakes are retried, every host is done, retries counted", { skip: sshdSkipReason() ?? false, timeout: 120_000 }, async () => {
  const sshd = await startSshd({ sshdConfig: ["MaxStartups 2"] });
  try {
    const names = Array.from({ length: 30 }, (_, i) => `behind${i}`);
    const cfg = join(sshd.dir, "ssh_config-behind");
    writeFileSync(cfg, [`Host behind*`, `  HostName ${sshd.address}`, readFileSync(sshd.clientConfigPath, "utf8")].join("\n"));
    const io = captureIO({ env: { SSH_AUTH_SOCK: "" } });
    const code = await main(["-R", "ssh", "-F", cfg, "--rate", "0", "-p", "30", "-t", "60", "--json", "-w", names.join(","), "true"], io);
    const doc = JSON.parse(io.out());
    const drops = (sshd.log().match(/past MaxStartups/g) ?? []).length;
    assert.ok(drops > 0, "sshd dropped nothing: the test shows nothing");
    assert.equal(code, 0, JSON.stringify(doc.failures.slice(0, 3)));
    assert.equal(doc.results.length, 30);
    assert.equal(doc.results.filter((r: { state: string }) => r.state === "done").length, 30);
    // Each drop sshd logged is one retry of ours.
    assert.equal(doc.retries.attempts, drops);
  } finally {
    await sshd.stop();
  }
});

test("sshd at OpenSSH's default MaxStartups 10:30:100 behind 60 names: at the default --rate every host is done", { skip: sshdSkipReason() ?? false, timeout: 180_000 }, async () => {
  const sshd = await startSshd({ sshdConfig: ["MaxStartups 10:30:100"] });
  try {
    const names = Array.from({ length: 60 }, (_, i) => `behind${i}`);
    const cfg = join(sshd.dir, "ssh_config-behind");
    writeFileSync(cfg, [`Host behind*`, `  HostName ${sshd.address}`, readFileSync(sshd.clientConfigPath, "utf8")].join("\n"));
    const io = captureIO({ env: { SSH_AUTH_SOCK: "" } });
    const code = await main(["-R", "ssh", "-F", cfg, "-p", "60", "-t", "90", "--json", "-w", names.join(","), "true"], io);
    const doc = JSON.parse(io.out());
    assert.equal(code, 0, JSON.stringify(doc.failures.slice(0, 3)));
    assert.equal(doc.rate, 100);
    assert.equal(doc.results.filter((r: { state: string }) => r.state === "done").length, 60);
    // How many sshd still dropped depends on how fast its handshakes ran on this machine; retried, not lost.
    const drops = (sshd.log().match(/past MaxStartups/g) ?? []).length;
    assert.equal(doc.retries.attempts, drops);
    console.log(`# default rate, 60 names behind one sshd at 10:30:100: ${drops} handshakes dropped and retried`);
  } finally {
    await sshd.stop();
  }
});
