/**
 * `testbed down` takes the same --net as `up`, so the two pair; a --net that is not the testbed's
 * removes nothing and says which it is. ADDRINUSE_TESTBED_PREFIX / ADDRINUSE_TESTBED_NET move it
 * (default aitbd, 10.244).
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { captureIO } from "../helpers/io.js";
import { main } from "../../testbed/cli.js";
import { down, missingRequirement } from "../../testbed/testbed.js";

const PREFIX = process.env.ADDRINUSE_TESTBED_PREFIX ?? "aitbd";
const NET = process.env.ADDRINUSE_TESTBED_NET ?? "10.244";
const needs = missingRequirement();

after(async () => {
  if (!needs) await down({ prefix: PREFIX });
});

test("down --net: the up's --net removes it; another is refused in one line and removes nothing", { skip: needs ?? false }, async () => {
  const cli = async (args: string[]) => {
    const io = captureIO();
    const code = await main(args, io);
    return { code, out: io.out(), err: io.err() };
  };
  const upped = await cli(["up", "--hosts", "1", "--prefix", PREFIX, "--net", NET]);
  assert.equal(upped.code, 0, upped.err);
  const other = NET === "10.243" ? "10.242" : "10.243";
  const wrong = await cli(["down", "--prefix", PREFIX, "--net", other]);
  assert.equal(wrong.code, 1);
  assert.equal(wrong.err.trim().split("\n").length, 1);
  assert.match(wrong.err, new RegExp(`${PREFIX} is up on ${NET.replace(".", "\\.")}\\.0\\.0/16, not ${other.replace(".", "\\.")}\\.0\\.0/16`));
  assert.ok(existsSync(`/run/netns/${PREFIX}-h1`), "still up");
  const right = await cli(["down", "--prefix", PREFIX, "--net", NET]);
  assert.equal(right.code, 0, right.err);
  assert.match(right.out, /removed 1 namespaces/);
  assert.ok(!existsSync(`/run/netns/${PREFIX}-h1`), "gone");
});
