/**
 * The testbed: real rsh and ssh hosts on this machine, one Linux network namespace per host.
 *
 * Layout. One bridge (`aitb0`) in the root namespace carries one private /16 (10.233.0.0/16 by
 * default) that exists nowhere else; the client is the bridge's own address (.0.1). Each host is a
 * namespace joined to the bridge by a veth pair, with its own address, hostname (a UTS namespace
 * made by `unshare --uts`) and mount namespace (see makeMountTemplate), in which a per-host `/run`,
 * a shared `/root` (`.rhosts`, `authorized_keys`) and an nsswitch with `hosts: files` are bind-mounted.
 * There run a real Debian `in.rshd` under `openbsd-inetd` (started with `-R 1000000`: its default
 * rate limit of 256 starts a minute would stop a fan-out run) and a real OpenSSH `sshd`.
 *
 * Speed. Everything in the root namespace (namespaces, veths, bridge ports, permanent neighbour
 * entries) goes through one `ip -batch` process; only the per-host part (addresses, mounts,
 * daemons) needs a process inside each namespace, and those run in parallel. Fixed MAC addresses and
 * permanent neighbour entries on both sides mean no ARP at all, and keep the root namespace's
 * neighbour table out of garbage collection (gc_thresh3 is 1024 by default; permanent entries do not
 * count against it since Linux 4.19).
 *
 * Faults are properties of a host, not of the command: `refused` runs no daemon; `blackhole` points
 * the client's neighbour entry for the host at a MAC nobody has, so SYNs leave and are never
 * answered (a link that is merely down makes ARP fail and connect() gets EHOSTUNREACH after ~3 s,
 * which is a different fault); `hang` has inetd accept on 514 and 22 and hand the socket to `sleep`;
 * `drip`, `flood` and `killed` give root a login shell (through a bind-mounted /etc/passwd) that
 * slows the command's output to one byte a second, prints 100 MB before it, or prints a line and
 * kills the daemon process serving it; `denied` mounts a /root with no `.rhosts` and no
 * `authorized_keys`; `badkey` runs sshd with a host key that known_hosts does not list.
 *
 * Safety: everything this module creates carries the prefix (`aitb`), and `assertRouteOverBridge`
 * lets callers refuse to send anything to an address whose route leaves through another device.
 */
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readTcpSockets } from "../src/kernel/read.js";

export const FAULTS = ["refused", "blackhole", "hang", "drip", "flood", "killed", "denied", "badkey"] as const;
export type Fault = (typeof FAULTS)[number];

export const MAX_HOSTS = 1000;
/** What a "flood" host prints before the command's own output. */
export const FLOOD_LINES = 1_048_576;
export const FLOOD_LINE = "flood ".repeat(16) + "flo";
const RSH_PORT = 514;
const SSH_PORT = 22;

export interface TestbedOptions {
  hosts: number;
  /** How many hosts get each fault; they are the last hosts, in the order of FAULTS. */
  faults?: Partial<Record<Fault, number>>;
  /** Prefix of every namespace, link and the state dir (default "aitb"; at most 6 characters). */
  prefix?: string;
  /** The /16 as its first two octets (default "10.233"). */
  net?: string;
  /** Host processes started at once while setting up (default 8: more only adds contention on 2 cores). */
  parallel?: number;
  /**
   * sshd's MaxStartups (default "200:30:400", so that a fan-out benchmark measures the client, not
   * sshd's drops); "default" leaves OpenSSH's own 10:30:100, as a host nobody tuned has.
   */
  maxStartups?: string;
}

export interface TestbedHost {
  index: number;
  /** The hostname the host's `hostname` prints, and its namespace's name. */
  name: string;
  address: string;
  fault: Fault | null;
}

export interface TestbedFiles {
  stateDir: string;
  /** Every host's address, one a line (a host file for multi-rsh -l, pdsh -w ^FILE, pssh -h). */
  hosts: string;
  /** The hosts without a fault. */
  hostsOk: string;
  sshConfig: string;
  knownHosts: string;
  clientKey: string;
}

export interface Testbed {
  prefix: string;
  bridge: string;
  net: string;
  clientAddress: string;
  hosts: TestbedHost[];
  files: TestbedFiles;
  /** How long `up` took, and how much memory the host processes use (sum of RSS). */
  setupMs: number;
  /** Where the setup time went: root-namespace batch, per-host processes, waiting for listeners. */
  phasesMs: { root: number; hosts: number; listen: number };
  /** Proportional set size of every host process, summed (shared pages counted once). */
  hostPssBytes: number;
  /** False when `up` found the same testbed already running and did nothing. */
  created: boolean;
}

export interface TestbedStatus {
  up: boolean;
  testbed: Testbed | null;
  namespaces: number;
  processes: number;
  /** Hosts that should have listening daemons and do not. */
  notListening: string[];
}

interface StateFile {
  options: Required<Omit<TestbedOptions, "parallel">>;
  testbed: Testbed;
}

function stateDirOf(prefix: string): string {
  return `/tmp/addrinuse-testbed/${prefix}`;
}

function names(prefix: string) {
  return {
    bridge: `${prefix}0`,
    ns: (i: number) => `${prefix}-h${i}`,
    veth: (i: number) => `${prefix}v${i}`,
  };
}

export function hostAddress(net: string, i: number): string {
  const k = i - 1;
  return `${net}.${Math.floor(k / 200)}.${(k % 200) + 10}`;
}

/** Locally administered, and unique per host: 02:a7:PP:PP:hi:lo. */
function hostMac(i: number): string {
  const h = (n: number) => n.toString(16).padStart(2, "0");
  return `02:a7:00:01:${h(i >> 8)}:${h(i & 0xff)}`;
}
const BRIDGE_MAC = "02:a7:00:00:00:01";
const NOBODY_MAC = "02:a7:00:00:ff:ff";

/**
 * The testbed's own failure (it cannot come up here, a route would leave its bridge): test and bench
 * machinery, so not one of the package's codes (src/errors.ts).
 */
export class TestbedError extends Error {
  readonly code = "TESTBED";
  constructor(message: string) {
    super(message);
    this.name = "TestbedError";
  }
}

function fail(message: string): never {
  throw new TestbedError(message);
}

const TOOLS: [string, string][] = [
  ["/usr/sbin/ip", "iproute2"],
  ["/usr/bin/unshare", "util-linux"],
  ["/usr/bin/nsenter", "util-linux"],
  ["/usr/sbin/in.rshd", "rsh-server"],
  ["/usr/sbin/inetd", "openbsd-inetd"],
  ["/usr/sbin/sshd", "openssh-server"],
  ["/usr/bin/ssh-keygen", "openssh-client"],
  ["/usr/bin/perl", "perl-base"],
];

/**
 * Why the testbed cannot run here, as one line saying what is missing and how to get it; null when
 * it can. Tests skip with this line.
 */
export function missingRequirement(): string | null {
  if (process.platform !== "linux") return `the testbed needs Linux network namespaces; this is ${process.platform}`;
  if (process.getuid?.() !== 0) return "the testbed needs root (network namespaces, a bridge, rshd on port 514): run as root, as CI does";
  const missing = TOOLS.filter(([path]) => !existsSync(path)).map(([, pkg]) => pkg);
  if (missing.length > 0) return `the testbed needs ${missing.join(", ")}: apt-get install ${missing.join(" ")}`;
  return null;
}

function requireRunnable(): void {
  const why = missingRequirement();
  if (why) fail(why);
}

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (bounded by timeoutMs, then SIGKILL), never through a shell of ours. */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], env: opts.env ? { ...process.env, ...opts.env } : process.env });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: stderr + e.message });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

function runSync(cmd: string, args: string[], input?: string): Ran {
  const r = spawnSync(cmd, args, { input, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? (r.error?.message ?? "") };
}

async function ipBatch(lines: string[], what: string, force = false): Promise<void> {
  if (lines.length === 0) return;
  const r = await run("ip", force ? ["-force", "-batch", "-"] : ["-batch", "-"], { input: lines.join("\n") + "\n", timeoutMs: 300_000 });
  if (r.code !== 0 && !force) fail(`${what} failed: ${r.stderr.trim().split("\n").slice(-2).join(" ")}`);
}

async function pool<T>(items: T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item);
    }
  });
  await Promise.all(lanes);
}

/** The dev each address routes over, from one `ip -batch` (one process for a thousand addresses). */
function routeDevices(addrs: string[]): Map<string, string | null> {
  const r = runSync("ip", ["-o", "-batch", "-"], addrs.map((a) => `route get ${a}`).join("\n") + "\n");
  const out = new Map<string, string | null>(addrs.map((a) => [a, null]));
  for (const line of r.stdout.split("\n")) {
    const m = /^(?:local |broadcast |unicast )?(\S+)(?: via \S+)? dev (\S+)/.exec(line.trim());
    if (m && out.has(m[1]!)) out.set(m[1]!, m[2]!);
  }
  return out;
}

/**
 * Refuses (throws TestbedError) unless every address routes over the testbed's bridge: the check run
 * before a test or benchmark sends anything to a testbed address.
 */
export function assertRouteOverBridge(addr: string | string[], bridge = "aitb0"): void {
  const addrs = Array.isArray(addr) ? addr : [addr];
  for (const a of addrs) {
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(a)) fail(`refusing to send to '${a}': the testbed uses IPv4 addresses only, never names`);
  }
  const devs = routeDevices(addrs);
  for (const a of addrs) {
    const dev = devs.get(a);
    if (dev !== bridge) fail(`refusing to send to ${a}: its route goes over ${dev ?? "nothing"}, not the testbed bridge ${bridge} (is the testbed up?)`);
  }
}

function readState(prefix: string): StateFile | null {
  try {
    return JSON.parse(readFileSync(join(stateDirOf(prefix), "state.json"), "utf8")) as StateFile;
  } catch {
    return null;
  }
}

function faultPlan(n: number, faults: Partial<Record<Fault, number>>): (Fault | null)[] {
  const plan: (Fault | null)[] = [];
  for (const f of FAULTS) for (let k = 0; k < (faults[f] ?? 0); k++) plan.push(f);
  if (plan.length > n) fail(`${plan.length} fault hosts asked for, but only ${n} hosts`);
  return [...Array<null>(n - plan.length).fill(null), ...plan];
}

function normalise(opts: TestbedOptions): Required<Omit<TestbedOptions, "parallel">> {
  const maxStartups = opts.maxStartups ?? "200:30:400";
  if (maxStartups !== "default" && !/^\d+(:\d+:\d+)?$/.test(maxStartups)) fail(`bad MaxStartups '${maxStartups}': expected N, START:RATE:FULL or default`);
  const prefix = opts.prefix ?? "aitb";
  const net = opts.net ?? "10.233";
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > MAX_HOSTS) fail(`--hosts must be 1-${MAX_HOSTS}, not ${opts.hosts}`);
  if (!/^[a-z][a-z0-9]{1,5}$/.test(prefix)) fail(`bad prefix '${prefix}': 2-6 lowercase letters or digits`);
  if (!/^10\.\d{1,3}$/.test(net) || Number(net.split(".")[1]) > 255) fail(`bad net '${net}': expected 10.N, a /16 of 10.0.0.0/8`);
  const faults: Partial<Record<Fault, number>> = {};
  for (const [k, v] of Object.entries(opts.faults ?? {})) {
    if (!(FAULTS as readonly string[]).includes(k)) fail(`unknown fault '${k}': expected one of ${FAULTS.join(", ")}`);
    if (!Number.isInteger(v) || v! < 0) fail(`bad count for fault ${k}: ${v}`);
    if (v) faults[k as Fault] = v;
  }
  return { hosts: opts.hosts, faults, prefix, net, maxStartups };
}

const SHELL_DRIP = `#!/bin/sh
# Login shell of a "drip" host: the command's output, one byte a second.
/bin/sh -c "$2" 2>&1 | exec /usr/bin/perl -e '$| = 1; while (read(STDIN, my $c, 1)) { print $c; sleep 1 }'
`;

const SHELL_FLOOD = `#!/bin/sh
# Login shell of a "flood" host: 100 MB in 1,048,576 lines of 100 bytes, then the command.
yes 'flood flood flood flood flood flood flood flood flood flood flood flood flood flood flood flood flo' | head -c 104857600
exec /bin/sh -c "$2"
`;

const SHELL_KILLED = `#!/bin/sh
# Login shell of a "killed" host: prints one line, then the daemon process serving the command is
# killed before the command runs, so no exit status ever comes back. Under in.rshd the shell *is*
# that process when stderr is merged (rshd execs it; inetd is the parent), or its child when rshd
# keeps a stderr channel; under sshd the per-connection sshd processes above it are, up to but not
# including the listener.
echo "killed: the daemon serving this command is killed now"
listener=$(cat /run/sshd.pid 2>/dev/null)
p=$PPID
for _ in 1 2 3 4; do
  case $(cat /proc/$p/comm 2>/dev/null) in sshd|in.rshd) ;; *) break ;; esac
  [ "$p" != "$listener" ] || break
  set -- $(cat /proc/$p/stat)
  kill -9 $p
  p=$4
done
kill -9 $$
`;

/** Runs inside the host's namespace (ip netns exec NS unshare --uts sh SCRIPT ...). */
const HOST_SCRIPT = `set -e
addr=$1 name=$2 hostdir=$3 fault=$4 st=$5 gw=$6 gwmac=$7
ip -batch - <<EOF
link set lo up
addr add $addr/16 dev eth0
link set eth0 up
neigh replace $gw lladdr $gwmac dev eth0 nud permanent
EOF
# A namespace with its own hash table caps TIME_WAIT at a sixteenth of it; a host should keep every
# one it makes, as a real server does.
echo 262144 > /proc/sys/net/ipv4/tcp_max_tw_buckets
echo "$name" > /proc/sys/kernel/hostname
mount --bind "$hostdir/run" /run
if [ "$fault" = denied ]; then mount --bind "$st/root-denied" /root; else mount --bind "$st/root" /root; fi
mount --bind "$st/etc/nsswitch.conf" /etc/nsswitch.conf
case $fault in drip|flood|killed) mount --bind "$st/etc/passwd.$fault" /etc/passwd ;; esac
case $fault in
  refused) exit 0 ;;
  hang) /usr/sbin/inetd -R 1000000 "$st/etc/inetd-hang.conf" ;;
  badkey)
    /usr/sbin/inetd -R 1000000 "$st/etc/inetd.conf"
    /usr/sbin/sshd -f "$st/etc/sshd_config.badkey" -o "ListenAddress=$addr" ;;
  *)
    /usr/sbin/inetd -R 1000000 "$st/etc/inetd.conf"
    /usr/sbin/sshd -f "$st/etc/sshd_config" -o "ListenAddress=$addr" ;;
esac
`;

function sshdConfig(hostKey: string, maxStartups: string): string {
  return [
    "Port 22",
    `HostKey ${hostKey}`,
    "PidFile /run/sshd.pid",
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "AuthorizedKeysFile .ssh/authorized_keys",
    "UsePAM no",
    "UseDNS no",
    ...(maxStartups === "default" ? [] : [`MaxStartups ${maxStartups}`]),
    "MaxSessions 64",
    "PrintMotd no",
    "PrintLastLog no",
    "X11Forwarding no",
    "AllowTcpForwarding no",
    "LogLevel QUIET",
    "",
  ].join("\n");
}

function writeFile(path: string, text: string, mode = 0o644): void {
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
}

function keygen(path: string, comment: string): string {
  if (!existsSync(path)) {
    const r = runSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path]);
    if (r.code !== 0) fail(`ssh-keygen failed: ${r.stderr.trim()}`);
  }
  return readFileSync(`${path}.pub`, "utf8").trim();
}

function writeStateFiles(o: Required<Omit<TestbedOptions, "parallel">>, hosts: TestbedHost[], dir: string): TestbedFiles {
  for (const d of ["", "etc", "bin", "keys", "root", "root/.ssh", "root-denied", "host"]) mkdirSync(join(dir, d), { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const clientKey = join(dir, "keys", "id_ed25519");
  const clientPub = keygen(clientKey, "addrinuse-testbed-client");
  const hostPub = keygen(join(dir, "keys", "ssh_host_ed25519_key"), "addrinuse-testbed-host");
  keygen(join(dir, "keys", "bad_host_key"), "addrinuse-testbed-badkey");
  const client = `${o.net}.0.1`;
  // in.rshd admits root only through ~/.rhosts, mode 600, naming the client's address and user.
  writeFile(join(dir, "root", ".rhosts"), `${client} root\n`, 0o600);
  writeFile(join(dir, "root", ".ssh", "authorized_keys"), `${clientPub}\n`, 0o600);
  chmodSync(join(dir, "root"), 0o700);
  chmodSync(join(dir, "root-denied"), 0o700);
  // Without a resolver in the namespace in.rshd's getnameinfo fails and it refuses every login;
  // with files only, nothing leaves a host for DNS either.
  writeFile(join(dir, "etc", "nsswitch.conf"), "passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\nprotocols: files\n");
  writeFile(join(dir, "etc", "inetd.conf"), "shell stream tcp nowait root /usr/sbin/in.rshd in.rshd\n");
  writeFile(join(dir, "etc", "inetd-hang.conf"), "shell stream tcp nowait root /bin/sleep sleep 3600\nssh stream tcp nowait root /bin/sleep sleep 3600\n");
  writeFile(join(dir, "etc", "sshd_config"), sshdConfig(join(dir, "keys", "ssh_host_ed25519_key"), o.maxStartups));
  writeFile(join(dir, "etc", "sshd_config.badkey"), sshdConfig(join(dir, "keys", "bad_host_key"), o.maxStartups));
  const passwd = readFileSync("/etc/passwd", "utf8");
  for (const [fault, body] of [["drip", SHELL_DRIP], ["flood", SHELL_FLOOD], ["killed", SHELL_KILLED]] as const) {
    const shell = join(dir, "bin", `${fault}-shell`);
    writeFile(shell, body, 0o755);
    writeFile(join(dir, "etc", `passwd.${fault}`), passwd.replace(/^(root:[^:\n]*:0:0:[^:\n]*:[^:\n]*:)[^\n]*$/m, `$1${shell}`));
  }
  writeFile(join(dir, "bin", "host-up.sh"), HOST_SCRIPT, 0o755);
  const knownHosts = join(dir, "known_hosts");
  writeFile(knownHosts, `${o.net}.* ${hostPub.split(" ").slice(0, 2).join(" ")}\n`);
  const sshConfig = join(dir, "ssh_config");
  // curve25519: OpenSSH 9.2's default sntrup761 dominates fan-out cost and the ssh2 library lacks
  // it; every ssh tool measured here uses the same key exchange.
  writeFile(
    sshConfig,
    [
      `Host ${o.net}.*`,
      "  User root",
      `  IdentityFile ${clientKey}`,
      "  IdentitiesOnly yes",
      `  UserKnownHostsFile ${knownHosts}`,
      "  GlobalKnownHostsFile /dev/null",
      "  StrictHostKeyChecking yes",
      "  UpdateHostKeys no",
      "  CheckHostIP no",
      "  BatchMode yes",
      "  KexAlgorithms curve25519-sha256",
      "  ControlMaster no",
      "  ControlPath none",
      "  AddressFamily inet",
      "  LogLevel ERROR",
      "",
    ].join("\n"),
  );
  const hostsFile = join(dir, "hosts");
  writeFile(hostsFile, hosts.map((h) => h.address).join("\n") + "\n");
  const hostsOk = join(dir, "hosts.ok");
  writeFile(hostsOk, hosts.filter((h) => !h.fault).map((h) => h.address).join("\n") + "\n");
  return { stateDir: dir, hosts: hostsFile, hostsOk, sshConfig, knownHosts, clientKey };
}

function nsInode(name: string): number | null {
  try {
    return statSync(`/run/netns/${name}`).ino;
  } catch {
    return null;
  }
}

function ourNamespaces(prefix: string): string[] {
  let all: string[] = [];
  try {
    all = readdirSync("/run/netns");
  } catch {
    return [];
  }
  const re = new RegExp(`^${prefix}-h\\d+$`);
  return all.filter((n) => re.test(n));
}

/** Pids of every process inside the given namespaces, from one walk of /proc. */
function processesIn(inodes: Set<number>): Map<number, number> {
  const out = new Map<number, number>();
  if (inodes.size === 0) return out;
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${d}/ns/net`));
      if (m && inodes.has(Number(m[1]))) out.set(Number(d), Number(m[1]));
    } catch {
      // Exited during the walk.
    }
  }
  return out;
}

function pssBytes(pids: Iterable<number>): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "latin1"));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // Exited.
    }
  }
  return total;
}

function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

/**
 * Removes every namespace, link, process and file of the testbed with this prefix, including what a
 * crashed run left. Safe to call when nothing is there.
 */
export async function down(opts: { prefix?: string; net?: string } = {}): Promise<{ namespaces: number; processes: number }> {
  requireRunnable();
  const prefix = opts.prefix ?? "aitb";
  // The same --net as `up` is accepted, so `up ARGS` and `down ARGS` pair; a different one is
  // a mistake about which testbed this is, and nothing is removed.
  const upNet = readState(prefix)?.options.net;
  if (opts.net !== undefined && upNet !== undefined && opts.net !== upNet) {
    fail(`${prefix} is up on ${upNet}.0.0/16, not ${opts.net}.0.0/16: give its --net (or none)`);
  }
  const n = names(prefix);
  const nss = ourNamespaces(prefix);
  const inodes = new Set(nss.map((s) => nsInode(s)).filter((x): x is number => x !== null));
  const procs = processesIn(inodes);
  for (const pid of procs.keys()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  // Deleting a namespace only drops its name; the kernel frees it (and its veth, whose peer on the
  // bridge goes too) when the last process in it is gone, which SIGKILL has just arranged.
  await ipBatch(nss.map((s) => `netns del ${s}`), "deleting namespaces", true);
  if (linkExists(n.bridge)) await ipBatch([`link del ${n.bridge}`], "deleting the bridge", true);
  // Leftover root-side veths (their namespace vanished without taking them) are ours by name.
  const vethRe = new RegExp(`^${prefix}v\\d+$`);
  const stray = readdirSync("/sys/class/net").filter((l) => vethRe.test(l));
  await ipBatch(stray.map((l) => `link del ${l}`), "deleting veths", true);
  unmountTemplate(stateDirOf(prefix));
  rmSync(stateDirOf(prefix), { recursive: true, force: true });
  return { namespaces: nss.length, processes: procs.size };
}

function listening(pid: number, ports: number[]): boolean {
  try {
    const rows = readTcpSockets({ procRoot: `/proc/${pid}` });
    return ports.every((p) => rows.some((r) => r.state === "LISTEN" && r.localPort === p));
  } catch {
    return false;
  }
}

function pidOf(file: string): number | null {
  try {
    const n = Number(readFileSync(file, "utf8").trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

function expectedPorts(fault: Fault | null): number[] {
  return fault === "refused" ? [] : [RSH_PORT, SSH_PORT];
}

/** A process inside the host's namespace (inetd), through which its /proc/PID/net/tcp is read. */
export function hostAnchorPid(tb: Testbed, host: TestbedHost): number | null {
  return pidOf(join(tb.files.stateDir, "host", String(host.index), "run", "inetd.pid"));
}

/** TCP sockets inside a host's namespace, read from the kernel without entering it. */
export function hostSockets(tb: Testbed, host: TestbedHost): ReturnType<typeof readTcpSockets> {
  const pid = hostAnchorPid(tb, host);
  if (pid === null) return [];
  try {
    return readTcpSockets({ procRoot: `/proc/${pid}` });
  } catch {
    return [];
  }
}

/**
 * Brings up `hosts` hosts (and the faults asked for). Idempotent: the same testbed already up is
 * left as it is; anything else with this prefix (another size, a crashed run) is removed first.
 */
export async function up(opts: TestbedOptions): Promise<Testbed> {
  requireRunnable();
  const o = normalise(opts);
  const t0 = performance.now();
  const existing = readState(o.prefix);
  if (existing && JSON.stringify(existing.options) === JSON.stringify(o)) {
    const st = status({ prefix: o.prefix });
    if (st.up && st.testbed) return { ...st.testbed, created: false };
  }
  await down({ prefix: o.prefix });
  const n = names(o.prefix);
  // The /16 must exist only on our bridge: a route or address of it anywhere else means another
  // network would receive what the tests send.
  const routes = runSync("ip", ["-o", "-4", "route", "show", "table", "all"]).stdout.split("\n");
  const conflict = routes.find((l) => l.startsWith(`${o.net}.`) || l.includes(` ${o.net}.`));
  if (conflict) fail(`${o.net}.0.0/16 is already routed on this machine (${conflict.trim()}); pick another --net`);

  const plan = faultPlan(o.hosts, o.faults);
  const hosts: TestbedHost[] = plan.map((fault, k) => ({ index: k + 1, name: n.ns(k + 1), address: hostAddress(o.net, k + 1), fault }));
  const dir = stateDirOf(o.prefix);
  const files = writeStateFiles(o, hosts, dir);
  const clientAddress = `${o.net}.0.1`;

  const root: string[] = [
    `link add ${n.bridge} address ${BRIDGE_MAC} type bridge forward_delay 0 stp_state 0 mcast_snooping 0`,
    `addr add ${clientAddress}/16 dev ${n.bridge}`,
    `link set ${n.bridge} up`,
  ];
  for (const h of hosts) {
    root.push(
      `netns add ${h.name}`,
      `link add ${n.veth(h.index)} type veth peer name eth0 address ${hostMac(h.index)} netns ${h.name}`,
      `link set ${n.veth(h.index)} master ${n.bridge} up`,
      `neigh replace ${h.address} lladdr ${h.fault === "blackhole" ? NOBODY_MAC : hostMac(h.index)} dev ${n.bridge} nud permanent`,
    );
  }
  const phasesMs = { root: 0, hosts: 0, listen: 0 };
  const mountTemplate = join(dir, "ns", "mnt");
  try {
    let t = performance.now();
    await makeMountTemplate(join(dir, "ns"));
    await withChildEhash(HOST_EHASH_ENTRIES, () => ipBatch(root, "creating the namespaces and the bridge"));
    phasesMs.root = Math.round(performance.now() - t);
    t = performance.now();
    for (const h of hosts) {
      const run = join(dir, "host", String(h.index), "run");
      mkdirSync(join(run, "sshd"), { recursive: true, mode: 0o755 });
    }
    const failures: string[] = [];
    await pool(hosts, opts.parallel ?? 8, async (h) => {
      const r = await run("nsenter", [
        `--mount=${mountTemplate}`, `--net=/run/netns/${h.name}`,
        "unshare", "--uts", "--mount", "--propagation", "private", "sh", join(dir, "bin", "host-up.sh"),
        h.address, h.name, join(dir, "host", String(h.index)), h.fault ?? "none", dir, clientAddress, BRIDGE_MAC,
      ], { timeoutMs: 60_000 });
      if (r.code !== 0) failures.push(`${h.name}: ${r.stderr.trim().split("\n").pop()}`);
    });
    if (failures.length > 0) fail(`${failures.length} hosts did not start; first: ${failures[0]}`);
    phasesMs.hosts = Math.round(performance.now() - t);
    t = performance.now();
    await waitListening({ hosts, files }, 30_000 + 30 * hosts.length);
    phasesMs.listen = Math.round(performance.now() - t);
  } catch (e) {
    await down({ prefix: o.prefix });
    throw e;
  }
  const inodes = new Set(hosts.map((h) => nsInode(h.name)).filter((x): x is number => x !== null));
  const tb: Testbed = {
    prefix: o.prefix,
    bridge: n.bridge,
    net: o.net,
    clientAddress,
    hosts,
    files,
    setupMs: Math.round(performance.now() - t0),
    phasesMs,
    hostPssBytes: pssBytes(processesIn(inodes).keys()),
    created: true,
  };
  writeFile(join(dir, "state.json"), JSON.stringify({ options: o, testbed: tb } satisfies StateFile, null, 2) + "\n");
  return tb;
}

/**
 * Namespaces normally share the root namespace's TCP hash table (262,144 buckets here), and reading
 * any namespace's /proc/net/tcp walks all of it: 13 ms a read, 13 s to check 1,000 hosts. A host
 * created while net.ipv4.tcp_child_ehash_entries is set gets a table of its own, as a real machine
 * has. The setting is read only when a namespace is created, so it is restored right after ours.
 */
const HOST_EHASH_ENTRIES = 4096;
const CHILD_EHASH = "/proc/sys/net/ipv4/tcp_child_ehash_entries";

async function withChildEhash<T>(entries: number, work: () => Promise<T>): Promise<T> {
  let before: string | null = null;
  try {
    before = readFileSync(CHILD_EHASH, "utf8").trim();
    writeFileSync(CHILD_EHASH, String(entries));
  } catch {
    // Kernels before 6.1 lack it: the hosts share the root table, which is slower, not wrong.
  }
  try {
    return await work();
  } finally {
    if (before !== null) writeFileSync(CHILD_EHASH, before);
  }
}

/**
 * Every new mount namespace copies its parent's mount table, and `ip netns add` puts one mount per
 * namespace in the root's: the thousandth host would copy a thousand mounts, and `up` grew as N²
 * (600 hosts 17 s, 1,000 hosts 31 s of it in mount copying). So the hosts' mount namespaces are
 * copies of a private template made before our namespaces exist, kept alive by a bind mount in the
 * state dir (which must itself be a private mount for that, as ip netns does with /run/netns).
 */
async function makeMountTemplate(nsDir: string): Promise<void> {
  mkdirSync(nsDir, { recursive: true, mode: 0o700 });
  writeFile(join(nsDir, "mnt"), "", 0o600);
  for (const [cmd, args] of [
    ["mount", ["--bind", nsDir, nsDir]],
    ["mount", ["--make-private", nsDir]],
    ["unshare", [`--mount=${join(nsDir, "mnt")}`, "--propagation", "private", "true"]],
  ] as const) {
    const r = await run(cmd, [...args]);
    if (r.code !== 0) fail(`${cmd} ${args.join(" ")} failed: ${r.stderr.trim()}`);
  }
}

function unmountTemplate(dir: string): void {
  for (const target of [join(dir, "ns", "mnt"), join(dir, "ns")]) {
    if (existsSync(target)) spawnSync("umount", ["-l", target], { stdio: "ignore" });
  }
}

/** Polls each host's kernel table (not a connection: no TIME_WAIT made) until its daemons listen. */
async function waitListening(tb: Pick<Testbed, "hosts" | "files">, budgetMs: number): Promise<void> {
  const deadline = Date.now() + budgetMs;
  let pending = tb.hosts.filter((h) => expectedPorts(h.fault).length > 0);
  for (let round = 0; pending.length > 0; round++) {
    pending = pending.filter((h) => {
      const pid = pidOf(join(tb.files.stateDir, "host", String(h.index), "run", "inetd.pid"));
      return pid === null || !listening(pid, expectedPorts(h.fault));
    });
    if (pending.length === 0) return;
    if (Date.now() > deadline || round > 10_000) fail(`${pending.length} hosts never listened on 514 and 22; first: ${pending[0]!.name}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What is up now, read from the state file and checked against the kernel. */
export function status(opts: { prefix?: string } = {}): TestbedStatus {
  const prefix = opts.prefix ?? "aitb";
  const nss = ourNamespaces(prefix);
  const inodes = new Set(nss.map((s) => nsInode(s)).filter((x): x is number => x !== null));
  const processes = processesIn(inodes).size;
  const state = readState(prefix);
  if (!state) return { up: false, testbed: null, namespaces: nss.length, processes, notListening: [] };
  const tb = state.testbed;
  const present = new Set(nss);
  const notListening = tb.hosts
    .filter((h) => {
      if (!present.has(h.name)) return true;
      const ports = expectedPorts(h.fault);
      if (ports.length === 0) return false;
      const pid = hostAnchorPid(tb, h);
      return pid === null || !listening(pid, ports);
    })
    .map((h) => h.name);
  const up = notListening.length === 0 && nss.length === tb.hosts.length && linkExists(tb.bridge);
  return { up, testbed: tb, namespaces: nss.length, processes, notListening };
}
