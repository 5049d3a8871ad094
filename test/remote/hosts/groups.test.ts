import { test } from "node:test";
import assert from "node:assert/strict";
import { GroupError, GroupResolver, parseClusterShellYaml, parseDshGroup, parseGroupLines } from "../../../src/remote/hosts/groups.js";

const YAML = `
roles:
  compute: 'node[01-04]'
  gpu: [node03, node04]
  cpu: '@compute!@gpu'
racks:
  r1: node[01-02]
  all: '@roles:compute,login1'
`;

test("ClusterShell YAML: sources of groups, lists and @refs inside the same source, ! for 'but not'", () => {
  const sources = parseClusterShellYaml(YAML, "roles.yaml");
  assert.deepEqual(
    sources.map((s) => s.name),
    ["roles", "racks"],
  );
  const g = new GroupResolver(sources);
  assert.deepEqual(g.resolve("compute"), ["node01", "node02", "node03", "node04"]);
  assert.deepEqual(g.resolve("gpu"), ["node03", "node04"]);
  assert.deepEqual(g.resolve("cpu"), ["node01", "node02"]);
  assert.deepEqual(g.resolve("racks:r1"), ["node01", "node02"]);
  assert.deepEqual(g.all(), ["node01", "node02", "node03", "node04", "login1"]);
});

test("name: nodeset lines (ClusterShell's local source), with comments and spaces between hosts", () => {
  const s = parseGroupLines("# cluster\nweb: web[1-3]\ndb: db1 db2  # two\n\nboth: @web,@db\n", "groups");
  const g = new GroupResolver([s]);
  assert.deepEqual(g.resolve("db"), ["db1", "db2"]);
  assert.deepEqual(g.resolve("both"), ["web1", "web2", "web3", "db1", "db2"]);
  assert.throws(() => parseGroupLines("web web1\n", "groups"), /groups:1: expected 'name: nodeset'/);
});

test("dshgroup files: one host or range a line", () => {
  assert.equal(parseDshGroup("# rack 1\nn[1-2]\n\nn5 # spare\n"), "n[1-2],n5");
  const g = new GroupResolver([{ name: "dsh", where: "x", groups: new Map([["rack1", parseDshGroup("n[1-2]\nn5\n")]]) }]);
  assert.deepEqual(g.expand("@rack1,m1"), ["n1", "n2", "n5", "m1"]);
});

test("the first source with a name wins; a group may be named with its source", () => {
  const a = parseGroupLines("x: a1\n", "file", "local");
  const b = parseGroupLines("x: b1\n", "other", "other");
  const g = new GroupResolver([a, b]);
  assert.deepEqual(g.resolve("x"), ["a1"]);
  assert.deepEqual(g.resolve("other:x"), ["b1"]);
});

test("an unknown group and a cycle are errors that name the group (exit 2)", () => {
  const g = new GroupResolver(parseClusterShellYaml("s:\n  a: '@b'\n  b: '@a'\n", "f.yaml"));
  assert.throws(() => g.resolve("nope"), (e: unknown) => e instanceof GroupError && /unknown group 'nope'/.test(e.message));
  assert.throws(() => g.resolve("a"), /group 's:a' includes itself \(s:a -> s:b -> s:a\)/);
  assert.throws(() => new GroupResolver([]).all(), /no group 'all'/);
});

test("YAML that is not groups is refused with the file's name", () => {
  assert.throws(() => parseClusterShellYaml("- a\n- b\n", "bad.yaml"), /bad\.yaml: expected/);
  assert.throws(() => parseClusterShellYaml("s: [\n", "broken.yaml"), /broken\.yaml: not YAML/);
  assert.throws(() => parseClusterShellYaml("s:\n  g: {x: 1}\n", "nested.yaml"), /nested\.yaml: group 'g'/);
});
