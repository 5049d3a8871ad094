import { test } from "node:test";
import assert from "node:assert/strict";
import { applyAlgorithmSpec } from "../../src/remote/ssh/algorithms.js";
import { expandTokens, parseSshConfigs, resolveSshConfig } from "../../src/remote/ssh/config.js";
import { inlineIncludes } from "../../src/remote/ssh/config-files.js";

const ctx = { home: "/home/op", localUser: "op" };

const USER = `
Host web*
  HostName 10.0.0.%h
  Port 2222
  IdentityFile ~/.ssh/web_%r
Host web1 !web2
  User deploy
  ConnectTimeout 3
  StrictHostKeyChecking accept-new
  UserKnownHostsFile ~/kh1 %d/kh2
Host jump-*
  ProxyJump bastion
Host *
  User fallback
  IdentitiesOnly yes
`;
const SYSTEM = `
Host *
  Port 22
  HashKnownHosts yes
  IdentityFile ~/.ssh/from_system
`;

test("first value wins across Host blocks and files; IdentityFile accumulates", () => {
  const c = resolveSshConfig(parseSshConfigs([USER, SYSTEM]), "web1", ctx);
  assert.equal(c.hostName, "10.0.0.web1");
  assert.equal(c.port, 2222);
  assert.equal(c.user, "deploy");
  assert.deepEqual(c.identityFiles, ["/home/op/.ssh/web_deploy", "/home/op/.ssh/from_system"]);
  assert.equal(c.identitiesOnly, true);
  assert.equal(c.connectTimeoutMs, 3000);
  assert.equal(c.hostKeyChecking, "accept-new");
  assert.deepEqual(c.userKnownHostsFiles, ["/home/op/kh1", "/home/op/kh2"]);
  assert.equal(c.hashKnownHosts, true);
  assert.deepEqual(c.unsupported, []);
});

test("a negated pattern keeps a host out of a block", () => {
  const c = resolveSshConfig(parseSshConfigs([USER]), "web2", ctx);
  assert.equal(c.user, "fallback");
  assert.equal(c.hostKeyChecking, null);
});

test("a user given on the command line beats the config's User", () => {
  const c = resolveSshConfig(parseSshConfigs([USER]), "web1", { ...ctx, user: "alice" });
  assert.equal(c.user, "alice");
  assert.deepEqual(c.identityFiles, ["/home/op/.ssh/web_alice"]);
});

test("no config: defaults (port 22, local user, default identities and known_hosts)", () => {
  const c = resolveSshConfig(parseSshConfigs([]), "10.1.2.3", ctx);
  assert.equal(c.hostName, "10.1.2.3");
  assert.equal(c.port, 22);
  assert.equal(c.user, "op");
  assert.ok(c.identityFiles.includes("/home/op/.ssh/id_ed25519"));
  assert.deepEqual(c.userKnownHostsFiles, ["/home/op/.ssh/known_hosts", "/home/op/.ssh/known_hosts2"]);
  assert.equal(c.connectTimeoutMs, 0);
  assert.equal(c.identitiesOnly, false);
});

test("ProxyJump is reported as unsupported by the built-in client", () => {
  assert.deepEqual(resolveSshConfig(parseSshConfigs([USER]), "jump-1", ctx).unsupported, ["proxyjump"]);
});

test("StrictHostKeyChecking ask counts as strict (we never prompt); no as off", () => {
  const ask = resolveSshConfig(parseSshConfigs(["Host *\n StrictHostKeyChecking ask\n"]), "h", ctx);
  assert.equal(ask.hostKeyChecking, "strict");
  const no = resolveSshConfig(parseSshConfigs(["Host *\n StrictHostKeyChecking no\n"]), "h", ctx);
  assert.equal(no.hostKeyChecking, "off");
});

test("bad values are usage errors naming the keyword", () => {
  assert.throws(() => resolveSshConfig(parseSshConfigs(["Host *\n Port banana\n"]), "h", ctx), { code: "AIU_USAGE", message: /Port/ });
  assert.throws(() => resolveSshConfig(parseSshConfigs(["Host *\n IdentitiesOnly maybe\n"]), "h", ctx), { code: "AIU_USAGE" });
});

test("tokens: %d %u %r %h %n %p %% and ~", () => {
  const t = { home: "/h", localUser: "lu", user: "ru", hostName: "10.0.0.1", alias: "web", port: 22 };
  assert.equal(expandTokens("~/%u-%r-%h-%n-%p-%%-%d", t), "/h/lu-ru-10.0.0.1-web-22-%-/h");
});

test("Include inlines the files it names: globs sorted, ~ and relative paths, missing ones skipped", () => {
  const files: Record<string, string> = {
    "/home/op/.ssh/config.d/20-web": "Host web*\n  Port 2200\n",
    "/home/op/.ssh/config.d/10-db": "Host db*\n  User dba\n",
    "/home/op/.ssh/extra": "Host x\n  Include nested\n",
    "/home/op/.ssh/nested": "  Port 9\n",
  };
  const reader = {
    read: (p: string) => files[p] ?? null,
    list: (d: string) => (d === "/home/op/.ssh/config.d" ? ["20-web", "10-db", "README"] : []),
  };
  const text = inlineIncludes("Include config.d/*-*\nInclude ~/.ssh/extra /nonexistent\nHost *\n  User op\n", "/home/op/.ssh", "/home/op", reader);
  assert.equal(text.indexOf("Host db*") < text.indexOf("Host web*"), true, "glob results sorted");
  const c = parseSshConfigs([text]);
  assert.equal(resolveSshConfig(c, "web1", ctx).port, 2200);
  assert.equal(resolveSshConfig(c, "db1", ctx).user, "dba");
  assert.equal(resolveSshConfig(c, "x", ctx).port, 9);
});

test("Include loops are bounded: a usage error, not a hang", () => {
  const reader = { read: () => "Include self\n", list: () => [] };
  assert.throws(() => inlineIncludes("Include self\n", "/d", "/h", reader), { code: "AIU_USAGE", message: /Include/ });
});

test("Ciphers, KexAlgorithms and MACs are kept as written, first value winning; null when unset", () => {
  const [c] = [resolveSshConfig(parseSshConfigs(["Host a\n  Ciphers ^aes256-ctr\n  KexAlgorithms curve25519-sha256\nHost *\n  Ciphers aes128-ctr\n  MACs -hmac-sha1*\n"]), "a", ctx)];
  assert.deepEqual(c!.algorithms, { ciphers: "^aes256-ctr", kex: "curve25519-sha256", macs: "-hmac-sha1*" });
  assert.deepEqual(resolveSshConfig(parseSshConfigs([""]), "a", ctx).algorithms, { ciphers: null, kex: null, macs: null });
});

test("applyAlgorithmSpec follows OpenSSH's list syntax: replace, +append, -remove (wildcards), ^first", () => {
  const defaults = ["gcm", "ctr", "chacha"];
  const supported = [...defaults, "cbc"];
  assert.deepEqual(applyAlgorithmSpec(defaults, supported, null), defaults);
  assert.deepEqual(applyAlgorithmSpec(defaults, supported, "ctr,cbc,openssh-only"), ["ctr", "cbc"], "names we cannot speak are dropped");
  assert.deepEqual(applyAlgorithmSpec(defaults, supported, "+cbc,gcm"), ["gcm", "ctr", "chacha", "cbc"]);
  assert.deepEqual(applyAlgorithmSpec(defaults, supported, "^chacha"), ["chacha", "gcm", "ctr"]);
  assert.deepEqual(applyAlgorithmSpec(defaults, supported, "-c*"), ["gcm"]);
  assert.deepEqual(applyAlgorithmSpec(defaults, supported, "openssh-only"), [], "nothing left: the transport fails the host");
});
