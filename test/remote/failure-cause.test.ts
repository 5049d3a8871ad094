import { test } from "node:test";
import assert from "node:assert/strict";
import { FAILURE_CAUSES, failureCause, type CauseInput } from "../../src/remote/failure-cause.js";

const base: CauseInput = { state: "failed", timer: null, connected: false, code: null, message: "" };

test("each error code and timer maps to one documented cause; done has none", () => {
  const cases: [Partial<CauseInput>, string | null][] = [
    [{ state: "done" }, null],
    [{ state: "cancelled", code: "HOST_CANCELLED" }, "cancelled"],
    [{ state: "timedout", timer: "idle", connected: true }, "timeout-idle"],
    [{ state: "timedout", timer: "connect" }, "timeout-connect"],
    [{ state: "timedout", timer: "total", connected: false }, "timeout-connect"],
    [{ state: "timedout", timer: "total", connected: true }, "timeout-total"],
    [{ state: "timedout", timer: "command", connected: true }, "timeout-total"],
    [{ code: "HOST_CONNECT_REFUSED" }, "refused"],
    [{ code: "HOST_CONNECT_FAILED", message: "cannot connect: EHOSTUNREACH" }, "unreachable"],
    [{ code: "HOST_CONNECT_FAILED", message: "cannot connect: EMFILE" }, "local"],
    [{ code: "HOST_CONNECT_TIMEOUT" }, "timeout-connect"],
    [{ code: "HOST_AUTH" }, "auth"],
    [{ code: "HOST_REFUSED" }, "auth"],
    [{ code: "HOST_KEY_UNTRUSTED" }, "host-key"],
    [{ code: "HOST_PROTOCOL" }, "protocol"],
    [{ code: "HOST_CONNECTION_LOST" }, "dropped-by-server"],
    [{ code: "HOST_DROPPED_BY_SERVER" }, "dropped-by-server"],
    [{ code: "HOST_LOCAL" }, "local"],
    [{ code: "HOST_TRANSPORT" }, "local"],
  ];
  for (const [input, want] of cases) {
    const got = failureCause({ ...base, ...input });
    assert.equal(got, want, JSON.stringify(input));
    if (got !== null) assert.ok((FAILURE_CAUSES as readonly string[]).includes(got));
  }
});
