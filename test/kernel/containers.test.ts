/**
 * The runtimes' and tools' text, parsed from fixtures in their formats (test/kernel/fixtures: a
 * Docker config.v2.json, /proc/PID/cgroup of Docker and rootless Podman containers, iptables-save and
 * nft rulesets as Docker leaves them, systemctl list-sockets). The live paths are in
 * test/cli/why-elsewhere.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { containerFromCgroup, parseDockerConfig, parseDockerProxy } from "../../src/kernel/containers.js";
import { parseIptablesSave, parseNftRules } from "../../src/kernel/nat.js";
import { parseListSockets, parseSocketUnit } from "../../src/kernel/systemd.js";

const fixture = (name: string) => readFileSync(join(import.meta.dirname, "fixtures", name), "utf8");
const ID = "3f9b2c1d7e8a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c";

test("a Docker config.v2.json gives the container's name, image, addresses, published ports and netns file", () => {
  const c = parseDockerConfig(fixture("docker-config.v2.json"))!;
  assert.equal(c.id, ID);
  assert.equal(c.name, "web-nginx");
  assert.equal(c.image, "nginx:1.27");
  assert.deepEqual(c.addresses, ["172.17.0.2"]);
  assert.deepEqual(c.published, [
    { hostIp: "0.0.0.0", hostPort: 8080, containerPort: 80, proto: "tcp" },
    { hostIp: "::", hostPort: 8080, containerPort: 80, proto: "tcp" },
  ]);
  assert.equal(c.sandboxKey, "/var/run/docker/netns/9c1e0a7b3d2f");
  assert.equal(c.pid, 48213);
  assert.equal(parseDockerConfig("not json"), null);
  assert.equal(parseDockerConfig("{}"), null);
});

test("/proc/PID/cgroup names the container: Docker (cgroup v2 and v1) and rootless Podman", () => {
  assert.deepEqual(containerFromCgroup(fixture("cgroup-docker.txt")), { runtime: "docker", id: ID });
  assert.deepEqual(containerFromCgroup(fixture("cgroup-docker-v1.txt")), { runtime: "docker", id: ID });
  assert.deepEqual(containerFromCgroup(fixture("cgroup-podman-rootless.txt")), { runtime: "podman", id: "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592" });
  assert.equal(containerFromCgroup("0::/user.slice/user-0.slice/session-1.scope\n"), null);
});

test("docker-proxy's command line says which host port goes where", () => {
  assert.deepEqual(
    parseDockerProxy(["/usr/bin/docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8080", "-container-ip", "172.17.0.2", "-container-port", "80", "-use-listen-fd"]),
    { proto: "tcp", hostIp: "0.0.0.0", hostPort: 8080, containerIp: "172.17.0.2", containerPort: 80 },
  );
  assert.equal(parseDockerProxy(["/usr/bin/node", "-host-port", "8080"]), null);
});

test("DNAT rules for a port: iptables-save and nft rulesets as Docker leaves them; other ports and filter rules are not taken", () => {
  const ipt = parseIptablesSave(fixture("iptables-save-nat.txt"), 8080);
  assert.equal(ipt.length, 1);
  assert.equal(ipt[0]!.to, "172.17.0.2:80");
  assert.equal(ipt[0]!.chain, "DOCKER");
  assert.equal(parseIptablesSave(fixture("iptables-save-nat.txt"), 80).length, 0, "--dport 80 of MASQUERADE is no DNAT");
  const nft = parseNftRules(fixture("nft-ruleset.txt"), 8080);
  // The DNAT and the redirect of 8000-8099; the filter table's 'tcp dport 8080 accept' is no NAT rule.
  assert.deepEqual(nft.map((r) => r.to), ["172.17.0.2:80", ":3000"]);
  assert.equal(nft[0]!.chain, "ip nat DOCKER");
  const redirect = parseNftRules(fixture("nft-ruleset.txt"), 8042);
  assert.equal(redirect.length, 1, "a port inside a set's range");
  assert.equal(redirect[0]!.to, ":3000");
  assert.equal(parseNftRules(fixture("nft-ruleset.txt"), 8100).length, 0);
});

test("socket units: systemctl list-sockets and ListenStream= lines", () => {
  assert.deepEqual(parseListSockets(fixture("systemctl-list-sockets.txt"), 22), [{ unit: "ssh.socket", listen: "[::]:22", activates: "ssh.service", from: "systemctl" }]);
  assert.deepEqual(parseListSockets(fixture("systemctl-list-sockets.txt"), 631).map((u) => u.unit), ["cups.socket"]);
  assert.deepEqual(parseSocketUnit("[Unit]\nDescription=x\n[Socket]\nListenStream=0.0.0.0:9000\nListenStream=/run/x.sock\nListenStream=9001\n", 9001), ["9001"]);
  assert.deepEqual(parseSocketUnit("[Service]\nListenStream=9001\n", 9001), [], "only in [Socket]");
});
