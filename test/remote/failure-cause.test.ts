import { test } from "node:test";
import assert from "node:assert/strict";
import { FAILURE_CAUSES, failureCause, type CauseInput } from "../../src/remote/failure-cause.js";

const base: CauseInput = { state: "failed", timer: null, connected: false, code: null, message: "" };

test("each error code and timer maps to one documented cause; done has none", () => {
  const cases: [Partial<CauseInput>, string | null][] = [
    [{ state: "done" }, null],
    [{ state: "cancelled", code: "ERR_CANCELLED" }, "cancelled"],
    [{ state: "timedout", timer: "idle", connected: true }, "timeout-idle"],
    [{ state: "timedout", timer: "connect" }, "timeout-connect"],
    [{ state: "timedout", timer: "total", connected: false }, "timeout-connect"],
    [{ state: "timedout", timer: "total", connected: true }, "timeout-total"],
    [{ state: "timedout", timer: "command", connected: true }, "timeout-total"],
    [{ code: "ERR_CONNECT_REFUSED" }, "refused"],
    [{ code: "ERR_CONNECT", message: "cannot connect: EHOSTUNREACH" }, "unreachable"],
    [{ code: "ERR_CONNECT", message: "cannot connect: EMFILE" }, "local"],
    [{ code: "ERR_CONNECT_TIMEOUT" }, "timeout-connect"],
    [{ code: "ERR_AUTH" }, "auth"],
    [{ code: "ERR_REMOTE_REFUSED" }, "auth"],
    [{ code: "ERR_HOST_KEY" }, "host-key"],
    [{ code: "ERR_PROTOCOL" }, "protocol"],
    [{ code: "ERR_CONNECTION_LOST" }, "dropped-by-server"],
    [{ code: "ERR_DROPPED_BY_SERVER" }, "dropped-by-server"],
    [{ code: "ERR_PORTS_EXHAUSTED" }, "local"],
    [{ code: "ERR_TRANSPORT" }, "local"],
  ];
  for (const [input, want] of cases) {
    const got = failureCause({ ...base, ...input });
    assert.equal(got, want, JSON.stringify(input));
    if (got !== null) assert.ok((FAILURE_CAUSES as readonly string[]).includes(got));
  }
});
