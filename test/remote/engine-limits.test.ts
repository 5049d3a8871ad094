/**
 * The engine's idle timer against a transport held back by backpressure: an in-memory transport
 * that starts, prints once, then waits for its abort (what a host looks like whose output nobody is
 * reading). The live --idle-timeout tests are in limits.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { runHosts } from "../../src/remote/engine.js";
import type { RunRequest, Transport, TransportResult } from "../../src/remote/transport.js";

const quiet: Transport = {
  name: "exec",
  run: (req: RunRequest) =>
    new Promise<TransportResult>((resolve) => {
      req.onConnected({ localPort: null });
      req.onStdout(Buffer.from("one line\n"));
      req.signal.addEventListener("abort", () =>
        resolve({ exitCode: null, signal: null, closedBy: null, localPort: null, connected: true, error: { code: "HOST_COMMAND_TIMEOUT", message: "timed out" } }),
      );
    }),
};

const base = { command: "x", transport: quiet, parallel: 2, connectTimeoutMs: 0, commandTimeoutMs: 0, user: "", localUser: "u", separateStderr: false };

test("a quiet host is idle: cause timeout-idle", async () => {
  const [r] = await runHosts({ ...base, hosts: ["h1"], timeoutMs: 5000, idleTimeoutMs: 50 }).done;
  assert.equal(r!.state, "timedout");
  assert.equal(r!.cause, "timeout-idle");
  assert.equal(r!.error!.code, "HOST_IDLE_TIMEOUT");
});

test("a host held back by the output's consumer is not idle: only the total timeout ends it", async () => {
  const [r] = await runHosts({ ...base, hosts: ["h1"], timeoutMs: 300, idleTimeoutMs: 50, outputPaused: () => true }).done;
  assert.equal(r!.state, "timedout");
  assert.equal(r!.cause, "timeout-total");
});
