/**
 * bench/why: `addrinuse why PORT` against `ss -tan` on a kernel table of 10,000 and 50,000 TIME_WAIT
 * sockets, whole processes (start-up included), in the same run.
 *
 * Each size gets a fresh network namespace (prefix `aibw`), so cleaning up is deleting it. Inside it
 * this same file runs again (`--inner`): it listens on 0.0.0.0, opens N short connections that the
 * SERVER closes first, so every TIME_WAIT sits on the listener's port (the busiest port), and then
 * times the commands itself with spawnSync, so that `ip netns exec` costs no command anything.
 *
 * Why several destination addresses: the client's connect() walks the ephemeral range per
 * destination (__inet_hash_connect); a second connection from a port that already has a server-side
 * TIME_WAIT to the same 4-tuple would recycle that entry (tcp_timewait_state_process) instead of
 * adding one. Spreading over 127.0.0.1-8 keeps the 4-tuples distinct.
 *
 * TIME_WAIT lasts 60 s, so the timing window after the build is bounded (--window) and the count is
 * read before and after the rounds; both go in the JSON.
 *
 * `why` and `ls` are timed with both table readers in the same rounds: netlink (the default when the
 * optional `netlink` package loads) and procfs (ADDRINUSE_TABLE=procfs).
 *
 * Run: npm run build && npm run bench:why [-- --sizes 10000,50000 --rounds 7 --compare OTHER/bin/addrinuse.js]
 */
import { spawnSync, spawn } from "node:child_process";
import { connect, createServer, type AddressInfo } from "node:net";
import { existsSync, mkdirSync, openSync, statSync, writeFileSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { release } from "node:os";
import { arg } from "./lib/options.js";
import { median } from "./lib/stats.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const CLI = join(ROOT, "bin", "addrinuse.js");
const DESTINATIONS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"];

const SS_SPORT = "ss -tanp 'sport = :PORT'";

interface CommandSpec {
  name: string;
  argv: string[];
  /** Added to the environment (ADDRINUSE_TABLE=procfs times the procfs reader in the same run). */
  env?: Record<string, string>;
}

interface Timing {
  name: string;
  argv: string[];
  env?: Record<string, string>;
  runsMs: number[];
  medianMs: number;
  minMs: number;
  /** Mean CPU time (user + system) of the command, 10 ms resolution per run. */
  meanCpuMs: number;
  exitCodes: number[];
}

interface InnerResult {
  target: number;
  made: number;
  failedConnects: number;
  buildMs: number;
  port: number;
  timeWaitBefore: number;
  timeWaitAfter: number;
  rounds: number;
  check: { whyTimeWaitCount: number | null; whyListenerPid: number | null; builderPid: number; whySource: string | null; procfsTimeWaitCount: number | null };
  timings: Timing[];
}

// ---------------------------------------------------------------- inside the namespace

async function buildTimeWait(target: number, deadline: number): Promise<{ port: number; made: number; failed: number; close: () => void }> {
  const server = createServer((s) => {
    s.on("error", () => {});
    // The server closes first: its side of every connection goes to TIME_WAIT.
    s.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: 0, host: "0.0.0.0", backlog: 4096 }, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  const { made, failed } = await topUp(port, target, deadline);
  return { port, made, failed, close: () => server.close() };
}

/** `count` short connections to the listener on `port`, at most 200 at once. */
async function topUp(port: number, target: number, deadline: number): Promise<{ made: number; failed: number }> {
  const inFlightMax = 200;
  let started = 0;
  let made = 0;
  let failed = 0;
  let inFlight = 0;
  await new Promise<void>((resolve) => {
    const launch = () => {
      while (inFlight < inFlightMax && started < target && Date.now() < deadline) {
        const host = DESTINATIONS[started % DESTINATIONS.length]!;
        started++;
        inFlight++;
        let ok = true;
        const c = connect({ port, host });
        c.on("error", () => {
          ok = false;
        });
        c.resume();
        c.on("close", () => {
          inFlight--;
          if (ok) made++;
          else failed++;
          launch();
        });
      }
      if (inFlight === 0) resolve();
    };
    launch();
  });
  return { made, failed };
}

function countTimeWait(port: number): number {
  const r = spawnSync("ss", ["-Htan", "state", "time-wait", `sport = :${port}`], { encoding: "latin1", maxBuffer: 1 << 28 });
  return r.stdout.split("\n").filter((l) => l.length > 0).length;
}

/**
 * CPU time of the children this process has waited for (cutime + cstime from /proc/self/stat), in
 * ms. Its resolution is 10 ms (USER_HZ), but on a shared machine it moves far less with the load
 * than wall time does, so the mean over rounds is reported next to the wall-time median.
 */
function childCpuMs(): number {
  const stat = readFileSync("/proc/self/stat", "latin1");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[13]) + Number(f[14])) * 10;
}

/**
 * Removed from every timed command's environment (as bench/fanout does): with NODE_EXTRA_CA_CERTS
 * set, Node 20 parses its whole CA bundle and the extra file at start-up, before any of the program
 * runs, whether or not it ever uses TLS: `node -e 0` went from ~20 ms to ~60 ms here. Some shells
 * and containers export it; it is a property of the environment, not of the tool, and only the Node
 * rows pay for it. `--keep-env` keeps it.
 */
const ENV_REMOVED = process.argv.includes("--keep-env") ? [] : ["NODE_EXTRA_CA_CERTS"];

function timedEnv(extra?: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of ENV_REMOVED) delete env[k];
  return env;
}

function timeOnce(argv: string[], devnull: number, env?: Record<string, string>): { ms: number; cpuMs: number; code: number } {
  const c0 = childCpuMs();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0]!, argv.slice(1), { stdio: ["ignore", devnull, devnull], env: timedEnv(env) });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ms, cpuMs: childCpuMs() - c0, code: r.status ?? -1 };
}

async function inner(): Promise<void> {
  const target = Number(arg("--inner", "10000"));
  const rounds = Number(arg("--rounds", "7"));
  const windowMs = Number(arg("--window", "35")) * 1000;
  const t0 = Date.now();
  const built = await buildTimeWait(target, t0 + 40_000);
  const port = built.port;
  // A client port that comes round again to the same destination recycles the server's TIME_WAIT
  // instead of adding one: top up, a bounded number of times.
  for (let pass = 0; pass < 3; pass++) {
    const missing = target - countTimeWait(port);
    if (missing <= target / 100 || Date.now() > t0 + 40_000) break;
    const more = await topUp(port, missing, t0 + 40_000);
    built.made += more.made;
    built.failed += more.failed;
  }
  const buildMs = Date.now() - t0;
  const windowEnd = Date.now() + windowMs;
  const timeWaitBefore = countTimeWait(port);

  // Checked runs: the numbers only mean something if `why` saw what we built, through each reader.
  const checked = (env: Record<string, string>) => {
    const run = spawnSync(process.execPath, [CLI, "why", String(port), "--json"], { encoding: "utf8", maxBuffer: 1 << 30, env: { ...process.env, ...env } });
    try {
      return JSON.parse(run.stdout) as { source?: string; groups: { state: string; count: number; sockets: { owners: { pid: number }[] }[] }[] };
    } catch {
      process.stderr.write(`why --json did not parse: ${run.stderr.slice(0, 400)}\n`);
      return null;
    }
  };
  const doc = checked({});
  const whyTimeWaitCount = doc ? (doc.groups.find((g) => g.state === "TIME_WAIT")?.count ?? 0) : null;
  const whyListenerPid = doc?.groups.find((g) => g.state === "LISTEN")?.sockets[0]?.owners[0]?.pid ?? null;
  const whySource = doc?.source ?? null;
  const viaProcfs = checked({ ADDRINUSE_TABLE: "procfs" });
  const procfsTimeWaitCount = viaProcfs ? (viaProcfs.groups.find((g) => g.state === "TIME_WAIT")?.count ?? 0) : null;

  const node = process.execPath;
  const commands: CommandSpec[] = [
    { name: "ss -tan", argv: ["ss", "-tan"] },
    { name: "ss -tanp", argv: ["ss", "-tanp"] },
    // Like for like: ss asked the same question (this port, with owners), filtered in the kernel too.
    { name: SS_SPORT, argv: ["ss", "-tanp", `sport = :${port}`] },
    // Floors: node's own start-up, the kernel's cost of printing the table, and both together.
    { name: "node -e 0", argv: [node, "-e", "0"] },
    { name: "cat /proc/net/tcp{,6}", argv: ["cat", "/proc/net/tcp", "/proc/net/tcp6"] },
    { name: "node: read /proc/net/tcp{,6}", argv: [node, "-e", "const f=require('fs');f.readFileSync('/proc/net/tcp');f.readFileSync('/proc/net/tcp6')"] },
    // `why` reads over netlink (sock_diag, as ss does) when the optional `netlink` package loads;
    // the procfs reader is timed too, in the same rounds, through ADDRINUSE_TABLE=procfs.
    { name: "addrinuse why PORT", argv: [node, CLI, "why", String(port)] },
    { name: "addrinuse why PORT --json", argv: [node, CLI, "why", String(port), "--json"] },
    { name: "why PORT (procfs reader)", argv: [node, CLI, "why", String(port)], env: { ADDRINUSE_TABLE: "procfs" } },
    { name: "addrinuse ls", argv: [node, CLI, "ls"] },
    { name: "ls (procfs reader)", argv: [node, CLI, "ls"], env: { ADDRINUSE_TABLE: "procfs" } },
  ];
  // --compare OTHER/bin/addrinuse.js: the same `why` from another build (e.g. before a change).
  const compare = arg("--compare", "");
  if (compare) commands.push({ name: "compare: why PORT", argv: [node, compare, "why", String(port)] });
  const devnull = openSync("/dev/null", "w");
  const runs = new Map<string, { ms: number[]; cpu: number[]; codes: number[] }>(commands.map((c) => [c.name, { ms: [], cpu: [], codes: [] }]));
  // One warm-up of each (page cache, dist files), not counted.
  for (const c of commands) timeOnce(c.argv, devnull, c.env);
  let done = 0;
  for (let r = 0; r < rounds && Date.now() < windowEnd; r++) {
    // Rotate the order each round so no command always runs right after the same neighbour.
    for (let i = 0; i < commands.length; i++) {
      const c = commands[(i + r) % commands.length]!;
      const t = timeOnce(c.argv, devnull, c.env);
      runs.get(c.name)!.ms.push(t.ms);
      runs.get(c.name)!.cpu.push(t.cpuMs);
      runs.get(c.name)!.codes.push(t.code);
    }
    done++;
  }
  const timeWaitAfter = countTimeWait(port);
  built.close();
  const timings: Timing[] = commands.map((c) => {
    const r = runs.get(c.name)!;
    return { name: c.name, argv: c.argv.map((a) => a.replace(ROOT + "/", "")), ...(c.env ? { env: c.env } : {}), runsMs: r.ms.map((x) => Math.round(x * 10) / 10), medianMs: median(r.ms), minMs: Math.min(...r.ms), meanCpuMs: Math.round(r.cpu.reduce((a, b) => a + b, 0) / Math.max(1, r.cpu.length)), exitCodes: [...new Set(r.codes)] };
  });
  const result: InnerResult = {
    target,
    made: built.made,
    failedConnects: built.failed,
    buildMs,
    port,
    timeWaitBefore,
    timeWaitAfter,
    rounds: done,
    check: { whyTimeWaitCount, whyListenerPid, builderPid: process.pid, whySource, procfsTimeWaitCount },
    timings,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
}

// ---------------------------------------------------------------- outside: namespaces and the report

function sh(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.trim()}`);
}

function runInNamespace(ns: string, size: number, rounds: number, windowS: number): Promise<InnerResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "ip",
      ["netns", "exec", ns, process.execPath, "--import", "tsx", fileURLToPath(import.meta.url), "--inner", String(size), "--rounds", String(rounds), "--window", String(windowS), "--compare", arg("--compare", ""), ...(ENV_REMOVED.length ? [] : ["--keep-env"])],
      { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => (out += d));
    // Bounded: build (40 s) + window + slack.
    const timer = setTimeout(() => child.kill("SIGKILL"), (40 + windowS + 60) * 1000);
    child.on("close", (code) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.trim().split("\n").pop() ?? "") as InnerResult);
      } catch {
        reject(new Error(`inner run for ${size} failed (exit ${code})`));
      }
    });
  });
}

function fmt(ms: number): string {
  return ms.toFixed(1).padStart(8);
}

async function outer(): Promise<void> {
  if (process.platform !== "linux" || process.getuid?.() !== 0) {
    process.stderr.write("bench/why needs Linux and root (network namespaces)\n");
    process.exit(2);
  }
  if (!existsSync(join(ROOT, "dist", "cli", "addrinuse", "addrinuse.js"))) {
    process.stderr.write("bench/why: dist/ is missing; run `npm run build` first\n");
    process.exit(2);
  }
  for (const f of ["kernel/read", "kernel/parse", "kernel/inet-diag", "kernel/netlink", "diagnosis/diagnose", "cli/addrinuse/why", "cli/addrinuse/addrinuse"]) {
    if (statSync(join(ROOT, "src", f + ".ts")).mtimeMs > statSync(join(ROOT, "dist", f + ".js")).mtimeMs) {
      process.stderr.write(`bench/why: warning: dist/${f}.js is older than src/${f}.ts; run \`npm run build\`\n`);
    }
  }
  const sizes = arg("--sizes", "10000,50000").split(",").map(Number);
  const rounds = Number(arg("--rounds", "7"));
  const windowS = Number(arg("--window", "35"));
  const loadAtStart = readFileSync("/proc/loadavg", "latin1").trim();
  const results: InnerResult[] = [];
  for (const size of sizes) {
    const ns = `aibw-${process.pid}-${size}`;
    sh(["ip", "netns", "add", ns]);
    try {
      sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"]);
      sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", `net.ipv4.tcp_max_tw_buckets=${Math.max(262144, size * 2)}`]);
      process.stderr.write(`building ${size} TIME_WAIT sockets in ${ns} ...\n`);
      const r = await runInNamespace(ns, size, rounds, windowS);
      results.push(r);
      const ss = r.timings.find((t) => t.name === "ss -tan")!.medianMs;
      console.log(
        `\n${r.timeWaitBefore} TIME_WAIT on port ${r.port} (built ${r.made}/${r.target} in ${(r.buildMs / 1000).toFixed(1)} s; ${r.timeWaitAfter} left after ${r.rounds} rounds); why saw ${r.check.whyTimeWaitCount} over ${r.check.whySource} (${r.check.procfsTimeWaitCount} over procfs), listener pid ${r.check.whyListenerPid === r.check.builderPid ? "named" : "NOT named"}`,
      );
      const ssMin = r.timings.find((t) => t.name === "ss -tan")!.minMs;
      const ssCpu = r.timings.find((t) => t.name === "ss -tan")!.meanCpuMs;
      console.log(`${"command".padEnd(30)} ${"median ms".padStart(9)} ${"min ms".padStart(8)} ${"cpu ms".padStart(7)}  ratio to ss -tan: median, min, cpu`);
      for (const t of r.timings) {
        console.log(
          `${t.name.padEnd(30)} ${fmt(t.medianMs).padStart(9)} ${fmt(t.minMs)} ${String(t.meanCpuMs).padStart(7)}  ${(t.medianMs / ss).toFixed(2).padStart(6)} x ${(t.minMs / ssMin).toFixed(2).padStart(6)} x ${(ssCpu > 0 ? t.meanCpuMs / ssCpu : NaN).toFixed(2).padStart(6)} x   exit ${t.exitCodes.join(",")}`,
        );
      }
      const sport = r.timings.find((t) => t.name === SS_SPORT)!;
      for (const name of ["addrinuse why PORT", "addrinuse why PORT --json"]) {
        const t = r.timings.find((x) => x.name === name)!;
        console.log(`like for like: ${name} / ${SS_SPORT}: median ${(t.medianMs / sport.medianMs).toFixed(2)} x, min ${(t.minMs / sport.minMs).toFixed(2)} x`);
      }
    } finally {
      spawnSync("ip", ["netns", "del", ns]);
    }
  }
  const ssVersion = spawnSync("ss", ["-V"], { encoding: "utf8" }).stdout.trim();
  const doc = {
    bench: "why",
    date: new Date().toISOString(),
    node: process.version,
    kernel: release(),
    ss: ssVersion,
    cpus: readFileSync("/proc/cpuinfo", "latin1").split("\n").filter((l) => l.startsWith("processor")).length,
    loadAverageAtStart: loadAtStart,
    loadAverageAtEnd: readFileSync("/proc/loadavg", "latin1").trim(),
    envRemoved: ENV_REMOVED.filter((k) => k in process.env),
    method:
      "per size a fresh netns; a Node listener on 0.0.0.0 with N connections the server closed first (TIME_WAIT on the listener's port, listener still alive); each command a whole process spawned from inside the netns, stdout+stderr to /dev/null, one warm-up, then rounds in rotating order; median wall time",
    target: "addrinuse why PORT <= 1.0 x ss -tan at 50,000 (aim 0.5)",
    note:
      "The machine is shared: wall-time medians move with its load (see loadAverage*); the minimums and the CPU times (cutime+cstime, 10 ms resolution, mean over rounds; Node's CPU includes its GC and compiler threads) are the steadier measures. `node -e 0` is the floor of any Node program. `why` reads the table over netlink sock_diag (TCPDIAG_GETSOCK, both families in one walk, port filtered in the kernel by bytecode) through the optional `netlink` package, as ss does; `why PORT (procfs reader)` is the same build forced to /proc/net/tcp{,6} (ADDRINUSE_TABLE=procfs), whose kernel-side text formatting alone (`cat /proc/net/tcp{,6}`) costs about as much as all of `ss -tan`.",
    results: results.map((r) => {
      const ss = r.timings.find((t) => t.name === "ss -tan")!.medianMs;
      const ssMin = r.timings.find((t) => t.name === "ss -tan")!.minMs;
      const ssCpu = r.timings.find((t) => t.name === "ss -tan")!.meanCpuMs;
      return {
        ...r,
        ratioToSsTan: Object.fromEntries(r.timings.map((t) => [t.name, Math.round((t.medianMs / ss) * 100) / 100])),
        ratioToSsTanOfMinimums: Object.fromEntries(r.timings.map((t) => [t.name, Math.round((t.minMs / ssMin) * 100) / 100])),
        ratioToSsTanpSport: Object.fromEntries(r.timings.map((t) => [t.name, Math.round((t.medianMs / r.timings.find((x) => x.name === SS_SPORT)!.medianMs) * 100) / 100])),
        ratioToSsTanOfCpu: Object.fromEntries(r.timings.map((t) => [t.name, Math.round((t.meanCpuMs / Math.max(1, ssCpu)) * 100) / 100])),
      };
    }),
  };
  mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
  writeFileSync(join(ROOT, "bench", "results", "why.json"), JSON.stringify(doc, null, 2) + "\n");
  console.log(`\nwrote bench/results/why.json`);
}

if (process.argv.includes("--help") || process.argv.includes("-h")) {
  process.stdout.write(
    "npm run bench:why [-- --sizes 10000,50000] [--rounds 7] [--window 35] [--compare OTHER/bin/addrinuse.js]\n" +
      "  root; builds N TIME_WAIT sockets on one port in a throwaway netns and times `addrinuse why PORT`\n" +
      "  against `ss -tan` and, like for like, `ss -tanp 'sport = :PORT'`; writes bench/results/why.json\n",
  );
} else if (process.argv.includes("--inner")) await inner();
else await outer();
