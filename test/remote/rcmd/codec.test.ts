import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeReply, decodeRequest, encodeRefusal, encodeRequest } from "../../../src/remote/rcmd/codec.js";

test("a request survives encode and decode, with the bytes after it kept", () => {
  const req = { stderrPort: 1022, localUser: "root", remoteUser: "op", command: "echo 'a b'; exit 3" };
  const wire = Buffer.concat([encodeRequest(req), Buffer.from("stdin")]);
  const got = decodeRequest(wire);
  assert.deepEqual(got?.request, req);
  assert.equal(got?.rest.toString(), "stdin");
});

test("an incomplete request is null until its fourth NUL arrives", () => {
  const wire = encodeRequest({ stderrPort: 0, localUser: "a", remoteUser: "b", command: "true" });
  for (let n = 0; n < wire.length; n++) assert.equal(decodeRequest(wire.subarray(0, n)), null, `at ${n} bytes`);
  assert.notEqual(decodeRequest(wire), null);
});

test("a stderr port that is not a number decodes as NaN, for the server to refuse", () => {
  assert.ok(Number.isNaN(decodeRequest(Buffer.from("12x\0a\0b\0c\0"))!.request.stderrPort));
  assert.ok(Number.isNaN(decodeRequest(Buffer.from("\0a\0b\0c\0"))!.request.stderrPort));
});

test("the reply byte: \\0 runs the command, anything else is a refusal", () => {
  assert.deepEqual(decodeReply(Buffer.from([0, 65])), { reply: "ok", rest: Buffer.from("A") });
  const refused = decodeReply(encodeRefusal("permission denied"));
  assert.equal(refused.reply, "refused");
  assert.equal(refused.rest.toString(), "permission denied\n");
  assert.equal(decodeReply(Buffer.from([2])).reply, "refused");
});
