import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { ensureFdLimit, readFdLimit } from "../../src/kernel/fd-limit.js";

const skip = process.platform !== "linux" ? "reads /proc/self/limits (Linux)" : !existsSync("/usr/bin/prlimit") ? "no prlimit (util-linux)" : false;

test("a soft fd limit below the need is raised with prlimit on our own pid, up to the hard limit", { skip }, async () => {
  const start = readFdLimit()!;
  const low = 256;
  const need = 512;
  if (start.hard < need) return; // nothing to raise into here
  // Lower our own soft limit (always allowed), as a process that Node did not raise would have it.
  execFileSync("prlimit", [`--pid=${process.pid}`, `--nofile=${low}:${start.hard === Number.MAX_SAFE_INTEGER ? "unlimited" : start.hard}`]);
  try {
    assert.equal(readFdLimit()!.soft, low);
    const r = await ensureFdLimit(need);
    assert.equal(r.outcome, "raised");
    assert.equal(r.before!.soft, low);
    assert.equal(readFdLimit()!.soft, need);
    assert.equal(r.notice, null);
    const again = await ensureFdLimit(need);
    assert.equal(again.outcome, "enough");
  } finally {
    execFileSync("prlimit", [`--pid=${process.pid}`, `--nofile=${start.soft === Number.MAX_SAFE_INTEGER ? "unlimited" : start.soft}:${start.hard === Number.MAX_SAFE_INTEGER ? "unlimited" : start.hard}`]);
  }
});
