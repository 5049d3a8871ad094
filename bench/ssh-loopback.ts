/**
 * bench/ssh-loopback: one command (`hostname`) on N ssh hosts, P at once, by multi-rsh's built-in
 * ssh (`-R ssh`), multi-rsh over the system ssh (`-R openssh`), and the peers `pdsh -R ssh`, pssh
 * (parallel-ssh), `clush -R ssh` and `xargs -P ssh` (each of which forks one OpenSSH client a host),
 * in the same run, against the same real OpenSSH sshd's. A peer that is not installed is left out.
 *
 * Hosts: 127.0.0.2, 127.0.0.3, ... (then 127.0.1.2, ...), each its own address (every connection its
 * own 4-tuple, as in a real fan-out), served by ceil(N/16) sshd processes (sshd listens on at most 16 addresses)
 * on one port, with one host key; known_hosts and an ssh_config (-F) in a temp dir, so ~/.ssh is
 * neither read nor written. The sshd's run with an empty /root (a mount namespace of their own), as
 * a fresh host would: this machine's root ~/.bashrc starts pyenv, ~100 ms per session. Loopback
 * only: nothing leaves the machine.
 *
 * Per tool: wall time; client CPU (user+sys of the tool and all its children, from bash's `times`);
 * the sshd side's CPU for the same phase (a cpuacct cgroup of the bench's own holding the sshd's and
 * all they start; it is where most of the time goes on one machine); hosts that answered; and the
 * TIME_WAIT sockets the phase left on the client side (kernel table rows towards the sshd port that
 * were not there before the phase). Tools run one after the other, --rounds times (default 3), ours
 * first; the table gives medians, and each tool's ratio to the best peer and to pdsh, for wall time
 * and for client CPU, and a floor under the wall time from the CPU the phase used.
 *
 * Run (root; needs openssh-server, openssh-client, pdsh, pssh, clustershell; ours from dist/):
 *   npm run build && npm run bench:ssh [-- --hosts 100 --rounds 3 --parallel 20 --kex curve25519|default --keep-env]
 * Key exchange: curve25519-sha256 for every tool unless --kex default (see the testbed notes: OpenSSH
 * 9.2's default sntrup761 dominates the cost otherwise).
 * Writes bench/results/ssh-loopback-HOSTS-pPARALLEL-KEX.json.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus, hostname, loadavg, release, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readTcpSockets } from "../src/kernel/read.js";
import { makeKey, sshdSkipReason, startSshd, type Sshd } from "../test/helpers/sshd.js";
import { countArg } from "./lib/options.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const COMMAND = "hostname";
const HOSTNAME = hostname();
const PHASE_TIMEOUT_MS = 180_000;

interface Phase {
  tool: string;
  round: number;
  hosts: number;
  ok: number;
  wallS: number;
  clientCpuS: number;
  sshdCpuS: number;
  clientTimeWait: number;
  exitCode: number | null;
  /** Output lines that are not a host's answer (first five), to see what went wrong. */
  unexpected: string[];
}

const CPUACCT = "/sys/fs/cgroup/cpuacct";

/**
 * The sshd's and every process they start (sessions, shells) in a cpuacct cgroup of this bench's own,
 * so that their CPU is counted whole, when they end and when they are reaped alike. Null when the
 * cgroup cannot be made (no cgroup v1 cpuacct, not root): then the listeners' cutime+cstime is used.
 */
function makeCgroup(pids: readonly number[]): string | null {
  const path = join(CPUACCT, `aissh-bench-${process.pid}`);
  try {
    mkdirSync(path);
    for (const pid of pids) writeFileSync(join(path, "cgroup.procs"), `${pid}\n`);
    return path;
  } catch {
    try {
      rmdirSync(path);
    } catch {
      // never made
    }
    return null;
  }
}

function sshdCpu(cgroup: string | null, pids: readonly number[]): number {
  if (cgroup) return Number(readFileSync(join(cgroup, "cpuacct.usage"), "utf8")) / 1e9;
  return sshdChildrenCpu(pids);
}

/** CPU seconds of finished children of the sshd listeners (utime+stime of reaped sessions). */
function sshdChildrenCpu(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the ")" of comm: state is field 3; cutime and cstime are fields 16 and 17.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(f[13]) + Number(f[14]);
  }
  return ticks / 100;
}

function clientTimeWaitKeys(port: number): Set<string> {
  const keys = new Set<string>();
  for (const s of readTcpSockets()) {
    if (s.state === "TIME_WAIT" && s.remotePort === port && s.localPort !== port) keys.add(`${s.localAddress}:${s.localPort}>${s.remoteAddress}`);
  }
  return keys;
}

/** Run argv under bash, stdout to a file; CPU of everything it started from bash's `times`. */
async function timed(argv: string[], env: NodeJS.ProcessEnv, outFile: string): Promise<{ wallS: number; cpuS: number; code: number | null }> {
  const script = '"$@" >"$OUT" 2>"$OUT.err"; rc=$?; times >&3; exit $rc';
  const start = process.hrtime.bigint();
  const child = spawn("bash", ["-c", script, "bash", ...argv], { env: { ...env, OUT: outFile }, stdio: ["ignore", "ignore", "inherit", "pipe"] });
  let times = "";
  (child.stdio[3] as NodeJS.ReadableStream).on("data", (d: Buffer) => (times += d.toString()));
  const killer = setTimeout(() => child.kill("SIGKILL"), PHASE_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  clearTimeout(killer);
  const wallS = Number(process.hrtime.bigint() - start) / 1e9;
  // Second line: children's user and system time, "0m1.234s 0m0.567s".
  const secs = (t: string) => {
    const m = /(\d+)m([\d.]+)s/.exec(t);
    return m ? Number(m[1]) * 60 + Number(m[2]) : 0;
  };
  const childLine = times.trim().split("\n")[1] ?? "";
  const [u = "", s = ""] = childLine.split(/\s+/);
  return { wallS, cpuS: secs(u) + secs(s), code };
}

async function main(): Promise<void> {
  const skip = sshdSkipReason();
  if (skip) {
    process.stderr.write(`ssh-loopback: ${skip}\n`);
    process.exit(2);
  }
  const n = countArg("--hosts", 100);
  const rounds = countArg("--rounds", 3);
  // Connections at once, the same for every tool (-p, -f, -P). Default: all hosts at once. With the
  // sshd's on the client's own CPUs, fewer at once contend less (see the results).
  const parallel = countArg("--parallel", n);
  // The same key exchange for everyone by default: OpenSSH 9.2 picks sntrup761x25519 (costly on both
  // ends), ssh2 picks curve25519-sha256. `--kex default` leaves OpenSSH's own choice.
  const kex = process.argv.includes("--kex") && process.argv[process.argv.indexOf("--kex") + 1] === "default" ? "default" : "curve25519";
  if (n > 1000) {
    process.stderr.write("--hosts: at most 1000\n");
    process.exit(2);
  }
  if (!existsSync(join(ROOT, "dist", "remote", "transports", "ssh.js"))) {
    process.stderr.write("ssh-loopback: dist/ has no ssh transport: run `npm run build` first\n");
    process.exit(2);
  }
  const hasPdsh = existsSync("/usr/bin/pdsh");
  // Debian installs pssh as parallel-ssh (the pssh name belongs to another package there).
  const psshBin = ["/usr/bin/parallel-ssh", "/usr/bin/pssh"].find((p) => existsSync(p));
  const hasClush = existsSync("/usr/bin/clush");

  const dir = mkdtempSync(join(tmpdir(), "aissh-bench-"));
  const hostKey = makeKey(dir, "host_ed25519");
  const clientKey = makeKey(dir, "client_ed25519");
  // 127.0.0.2-251, then 127.0.1.2-251, ...: all on lo, none of them 127.0.0.1.
  const hosts = Array.from({ length: n }, (_, i) => `127.0.${Math.floor(i / 250)}.${(i % 250) + 2}`);
  const servers: Sshd[] = [];
  let cgroup: string | null = null;
  try {
    // First sshd picks the port; the others listen on the same port on their own 16 addresses.
    for (let i = 0; i < hosts.length; i += 16) {
      const group = hosts.slice(i, i + 16);
      const extra = group.slice(1).map((a) => `ListenAddress ${a}${servers[0] ? `:${servers[0].port}` : ""}`);
      const s = await startSshd({ address: group[0]!, dir, hostKey, clientKey, sshdConfig: extra, ...(servers[0] ? { port: servers[0].port } : {}) });
      servers.push(s);
    }
    const port = servers[0]!.port;
    const [ktype, kblob] = hostKey.publicLine.split(" ");
    const knownHosts = join(dir, "bench_known_hosts");
    writeFileSync(knownHosts, hosts.map((h) => `[${h}]:${port} ${ktype} ${kblob}\n`).join(""));
    const config = join(dir, "bench_ssh_config");
    writeFileSync(
      config,
      ["Host *", `  Port ${port}`, ...(kex === "curve25519" ? ["  KexAlgorithms curve25519-sha256"] : []), `  IdentityFile ${clientKey.privatePath}`, "  IdentitiesOnly yes", `  UserKnownHostsFile ${knownHosts}`, "  GlobalKnownHostsFile /dev/null", "  BatchMode yes", ""].join("\n"),
    );
    const hostFile = join(dir, "hosts");
    writeFileSync(hostFile, `${hosts.join("\n")}\n`);
    const sshdPids = servers.map((s) => s.pid);
    cgroup = makeCgroup(sshdPids);
    process.stderr.write(`sshd CPU from ${cgroup ? `cgroup ${cgroup}` : "the listeners' cutime (no cpuacct cgroup)"}\n`);

    // NODE_EXTRA_CA_CERTS (set by some shells and containers, this machine's among them) makes Node
    // parse a CA bundle at start-up, ~35 ms of CPU that only the Node tool pays and that has nothing
    // to do with ssh: removed from every tool's environment, as bench/fanout does; --keep-env keeps it.
    const keepEnv = process.argv.includes("--keep-env");
    const env: NodeJS.ProcessEnv = { ...process.env, SSH_AUTH_SOCK: "" };
    if (!keepEnv) delete env["NODE_EXTRA_CA_CERTS"];
    const oursArgv = (transport: string) => ["node", join(ROOT, "bin", "multi-rsh.js"), "-R", transport, "-F", config, "-p", String(parallel), "-t", "300", "-l", hostFile, COMMAND];
    const tools: { name: string; argv: string[]; env?: NodeJS.ProcessEnv }[] = [
      { name: "multi-rsh -R ssh", argv: oursArgv("ssh") },
      { name: "multi-rsh -R openssh", argv: oursArgv("openssh") },
      ...(hasPdsh
        ? [{ name: "pdsh -R ssh", argv: ["pdsh", "-R", "ssh", "-f", String(parallel), "-w", `^${hostFile}`, COMMAND], env: { ...env, PDSH_SSH_ARGS: `-F ${config} -oBatchMode=yes -l%u %h` } }]
        : []),
      // -i: a host's output under its own header line; -t 0: no per-host timeout (as the others).
      ...(psshBin ? [{ name: "pssh", argv: [psshBin, "-i", "-t", "0", "-p", String(parallel), "-h", hostFile, "-x", `-F ${config} -oBatchMode=yes`, COMMAND] }] : []),
      // clush's own config caps the fan-out at 64 (clush.conf): -f sets it like the others' -f/-p/-P.
      ...(hasClush
        ? [{ name: "clush -R ssh", argv: ["clush", "-R", "ssh", "-f", String(parallel), "-t", "60", "-o", `-F ${config} -oBatchMode=yes`, `--hostfile=${hostFile}`, COMMAND] }]
        : []),
      { name: "xargs -P ssh", argv: ["bash", "-c", `xargs -P ${parallel} -I{} ssh -F ${config} -n {} ${COMMAND} < ${hostFile}`] },
    ];

    const loadBefore = loadavg().map((l) => l.toFixed(1)).join(" ");
    const phases: Phase[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const tool of tools) {
        const before = clientTimeWaitKeys(port);
        const cpuBefore = sshdCpu(cgroup, sshdPids);
        const out = join(dir, `out-${phases.length}`);
        const r = await timed(tool.argv, tool.env ?? env, out);
        const after = clientTimeWaitKeys(port);
        let fresh = 0;
        for (const k of after) if (!before.has(k)) fresh++;
        // A host answered when a line says this machine's hostname (pdsh and multi-rsh prefix "host: ").
        const lines = existsSync(out) ? readFileSync(out, "utf8").split("\n").filter((l) => l.trim() !== "") : [];
        const answered = lines.filter((l) => l === HOSTNAME || l.endsWith(`: ${HOSTNAME}`));
        // pssh -i heads each host's output with "[n] hh:mm:ss [SUCCESS] host": a header, not a stray line.
        const unexpected = lines.filter((l) => l !== HOSTNAME && !l.endsWith(`: ${HOSTNAME}`) && !/^\[\d+\] [\d:]+ \[SUCCESS\] /.test(l)).slice(0, 5);
        const p: Phase = {
          tool: tool.name,
          round,
          hosts: n,
          ok: answered.length,
          unexpected,
          wallS: r.wallS,
          clientCpuS: r.cpuS,
          sshdCpuS: sshdCpu(cgroup, sshdPids) - cpuBefore,
          clientTimeWait: fresh,
          exitCode: r.code,
        };
        phases.push(p);
        process.stderr.write(`${p.tool.padEnd(22)} round ${round}: ${p.ok}/${n} ok, wall ${p.wallS.toFixed(2)} s, client CPU ${p.clientCpuS.toFixed(2)} s, sshd CPU ${p.sshdCpuS.toFixed(2)} s, client TIME_WAIT ${p.clientTimeWait}${p.unexpected.length ? `; unexpected: ${JSON.stringify(p.unexpected)}` : ""}\n`);
      }
    }

    // Medians over the rounds (the machine is shared: a best-of would flatter whoever was lucky).
    const median = (xs: number[]) => {
      const v = [...xs].sort((a, b) => a - b);
      const m = Math.floor(v.length / 2);
      return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
    };
    const of = (tool: string) => phases.filter((p) => p.tool === tool);
    const rows = tools.map((t) => ({
      tool: t.name,
      wallS: median(of(t.name).map((p) => p.wallS)),
      clientCpuS: median(of(t.name).map((p) => p.clientCpuS)),
      sshdCpuS: median(of(t.name).map((p) => p.sshdCpuS)),
      bestWallS: Math.min(...of(t.name).map((p) => p.wallS)),
      bestClientCpuS: Math.min(...of(t.name).map((p) => p.clientCpuS)),
      clientTimeWait: Math.max(...of(t.name).map((p) => p.clientTimeWait)),
      okMin: Math.min(...of(t.name).map((p) => p.ok)),
    }));
    const ours = rows[0]!;
    // Peers: the other tools, all of which fork one OpenSSH client per host.
    const peers = rows.filter((r) => !r.tool.startsWith("multi-rsh"));
    const bestWallPeer = peers.reduce((a, b) => (b.wallS < a.wallS ? b : a));
    const bestCpuPeer = peers.reduce((a, b) => (b.clientCpuS < a.clientCpuS ? b : a));
    const pdsh = rows.find((r) => r.tool === "pdsh -R ssh");
    const ncpu = cpus().length;
    const ratios = {
      bestWallPeer: bestWallPeer.tool,
      wallVsBestPeer: ours.wallS / bestWallPeer.wallS,
      wallVsPdsh: pdsh ? ours.wallS / pdsh.wallS : null,
      bestCpuPeer: bestCpuPeer.tool,
      cpuVsBestPeer: ours.clientCpuS / bestCpuPeer.clientCpuS,
      cpuVsPdsh: pdsh ? ours.clientCpuS / pdsh.clientCpuS : null,
      cpuVsXargs: ours.clientCpuS / rows.find((r) => r.tool === "xargs -P ssh")!.clientCpuS,
      // Where the wall time can go on this machine: our client and the sshd's share its CPUs, so
      // (client CPU + sshd CPU) / CPUs is a floor under our wall time, sshd CPU / CPUs a floor that
      // no client can get under.
      oursCpuFloorS: (ours.clientCpuS + ours.sshdCpuS) / ncpu,
      sshdFloorS: ours.sshdCpuS / ncpu,
      sshdFloorVsBestPeerWall: ours.sshdCpuS / ncpu / bestWallPeer.wallS,
    };
    const x = (v: number | null) => (v === null ? "n/a" : `${v.toFixed(2)}x`);

    console.log(`\nssh-loopback: ${n} hosts, \`${COMMAND}\`, ${parallel} at once, median of ${rounds} round(s), kex ${kex}; ${ncpu} CPUs, Linux ${release()}; load average ${loadBefore} before, ${loadavg().map((l) => l.toFixed(1)).join(" ")} after`);
    console.log(
      `${"tool".padEnd(22)} ${"ok".padStart(7)} ${"wall s".padStart(7)} ${"/best".padStart(6)} ${"/pdsh".padStart(6)} ${"client CPU s".padStart(12)} ${"/best".padStart(6)} ${"/pdsh".padStart(6)} ${"sshd CPU s".padStart(10)} ${"client TIME_WAIT".padStart(16)}`,
    );
    for (const r of rows) {
      console.log(
        `${r.tool.padEnd(22)} ${`${r.okMin}/${n}`.padStart(7)} ${r.wallS.toFixed(2).padStart(7)} ${(r.wallS / bestWallPeer.wallS).toFixed(2).padStart(6)} ${(pdsh ? (r.wallS / pdsh.wallS).toFixed(2) : "n/a").padStart(6)} ${r.clientCpuS.toFixed(2).padStart(12)} ${(r.clientCpuS / bestCpuPeer.clientCpuS).toFixed(2).padStart(6)} ${(pdsh ? (r.clientCpuS / pdsh.clientCpuS).toFixed(2) : "n/a").padStart(6)} ${r.sshdCpuS.toFixed(2).padStart(10)} ${String(r.clientTimeWait).padStart(16)}`,
      );
    }
    console.log(
      `\nours (-R ssh): wall ${x(ratios.wallVsBestPeer)} the best peer (${bestWallPeer.tool}; target <= 0.5), ${x(ratios.wallVsPdsh)} pdsh; client CPU ${x(ratios.cpuVsPdsh)} pdsh (target <= 0.2), ${x(ratios.cpuVsBestPeer)} the leanest peer (${bestCpuPeer.tool}); client TIME_WAIT ${ours.clientTimeWait} (target 0)`,
    );
    console.log(
      `where the time goes: ours ${ours.clientCpuS.toFixed(2)} s client CPU + ${ours.sshdCpuS.toFixed(2)} s sshd CPU on ${ncpu} CPUs = a ${ratios.oursCpuFloorS.toFixed(2)} s floor under our wall (${ours.wallS.toFixed(2)} s); the sshd side alone ${ratios.sshdFloorS.toFixed(2)} s = ${ratios.sshdFloorVsBestPeerWall.toFixed(2)}x the best peer's wall`,
    );
    const result = {
      bench: "ssh-loopback",
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, kernel: release(), node: process.version },
      hosts: n,
      parallel,
      rounds,
      kex: kex === "curve25519" ? "curve25519-sha256 for every tool" : "each tool's default (OpenSSH: sntrup761x25519-sha512, ssh2: curve25519-sha256)",
      command: COMMAND,
      envRemoved: keepEnv ? [] : ["NODE_EXTRA_CA_CERTS"].filter((k) => k in process.env),
      load: { before: loadBefore, after: loadavg().map((l) => l.toFixed(2)).join(" ") },
      rows,
      ratios,
      phases,
    };
    const file = join(ROOT, "bench", "results", `ssh-loopback-${n}-p${parallel}-${kex}.json`);
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`JSON: ${file}`);
  } finally {
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
    if (cgroup) {
      // Sessions still ending keep the cgroup busy for a moment; bounded retries, then leave it.
      for (let i = 0; i < 50; i++) {
        try {
          rmdirSync(cgroup);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }
}

await main();
