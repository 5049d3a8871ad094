/**
 * bench/rsh-sustained: the same command run again and again on ONE real Debian `in.rshd` (under
 * openbsd-inetd, in a network namespace of this bench's own), by multi-rsh and by the peers that
 * close first, netkit `rsh` and `pdsh -R rsh`, in the same run; successes and failures of each.
 *
 * Why the peers fail: rsh clients must bind a reserved port (512-1023, rresvport(3)), and a client
 * that closes first keeps each connection's 4-tuple in TIME_WAIT for 60 s, so ~510 runs to one host
 * use every reserved port up and the next run fails ("rcmd: socket: All ports in use") until the
 * oldest TIME_WAIT expires. multi-rsh waits for the server's FIN, so the client side keeps nothing.
 *
 * Layout: namespace `aibr-PID` joined to the root namespace by a veth pair (`aibrPID` here, `eth0`
 * there), 10.234.0.1 (client, root namespace) and 10.234.0.2 (rshd). Before every phase the route to
 * 10.234.0.2 must go over our veth. The phases run one after the other, each for --seconds; ours
 * first. Before each phase the TIME_WAITs the previous one left towards 10.234.0.2 (counted first,
 * and reported) are destroyed with `ss -K`, on both sides, so no phase inherits another's ports.
 *
 * Phases:
 *  - ours, in-process: runHosts() + the rsh transport from dist/, called in a loop, once per
 *    --concurrency value (that many loops at once), which is what a long-lived caller of the library sees;
 *  - ours, a process per run: `node bin/multi-rsh.js -w 10.234.0.2 true` (node's start-up bounds it);
 *  - netkit `rsh 10.234.0.2 true`; `pdsh -R rsh -w 10.234.0.2 true`: a process per run.
 * A run counts as a success when it exits 0 with nothing on stderr (`true` prints nothing), and for
 * ours in-process when the host's result is `done` with exit code 0.
 *
 * Run (root): npm run build && npm run bench:rsh [-- --seconds 120 --concurrency 1,8 --only netkit]
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { release } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { arg } from "./lib/options.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const CLIENT = "10.234.0.1";
const SERVER = "10.234.0.2";
const NET = "10.234.0.0/24";
const COMMAND = "true";
const RUN_TIMEOUT_MS = 20_000;

function sh(argv: string[], what = argv.join(" ")): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${what}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

// ------------------------------------------------------------------ the host

interface Host {
  ns: string;
  veth: string;
  dir: string;
  inetd: ChildProcess;
}

function routeDevice(addr: string): string | undefined {
  const out = spawnSync("ip", ["-o", "route", "get", addr], { encoding: "utf8" }).stdout;
  return / dev (\S+)/.exec(out)?.[1];
}

function assertRoute(host: Host): void {
  const dev = routeDevice(SERVER);
  if (dev !== host.veth) throw new Error(`refusing to send to ${SERVER}: its route goes over ${dev ?? "nothing"}, not ${host.veth}`);
}

async function startHost(): Promise<Host> {
  // The /24 must exist only on our veth: anything else holding it means another run, or a collision.
  const taken = sh(["ip", "-o", "addr", "show", "to", NET]).trim();
  if (taken) throw new Error(`${NET} is already in use here: ${taken.split("\n")[0]}`);
  const ns = `aibr-${process.pid}`;
  const veth = `aibr${process.pid}`.slice(0, 15);
  const dir = `/tmp/aibr-${process.pid}`;
  mkdirSync(join(dir, "root"), { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, "etc"), { recursive: true });
  mkdirSync(join(dir, "run"), { recursive: true });
  // in.rshd admits root only through ~/.rhosts, mode 600, naming the client's address and user.
  writeFileSync(join(dir, "root", ".rhosts"), `${CLIENT} root\n`, { mode: 0o600 });
  chmodSync(join(dir, "root", ".rhosts"), 0o600);
  // Without `hosts: files` rshd's getnameinfo goes to DNS, which the namespace does not have.
  writeFileSync(join(dir, "etc", "nsswitch.conf"), "passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\nprotocols: files\n");
  writeFileSync(join(dir, "etc", "inetd.conf"), "shell stream tcp nowait root /usr/sbin/in.rshd in.rshd\n");
  sh(["ip", "netns", "add", ns]);
  sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
  sh(["ip", "addr", "add", `${CLIENT}/24`, "dev", veth]);
  sh(["ip", "link", "set", veth, "up"]);
  sh(["ip", "-n", ns, "addr", "add", `${SERVER}/24`, "dev", "eth0"]);
  sh(["ip", "-n", ns, "link", "set", "eth0", "up"]);
  sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  // inetd's default rate limit (256 starts a minute) would stop a sustained run by itself: -R.
  const script = [
    `mount --bind ${dir}/root /root`,
    `mount --bind ${dir}/etc/nsswitch.conf /etc/nsswitch.conf`,
    `mount --bind ${dir}/run /run`,
    `exec /usr/sbin/inetd -i -R 1000000 ${dir}/etc/inetd.conf`,
  ].join(" && ");
  const inetd = spawn("ip", ["netns", "exec", ns, "unshare", "--mount", "sh", "-c", script], { stdio: ["ignore", "ignore", "inherit"] });
  const host: Host = { ns, veth, dir, inetd };
  const deadline = Date.now() + 10_000;
  while (!/:514\b/.test(spawnSync("ip", ["netns", "exec", ns, "ss", "-Hltn"], { encoding: "utf8" }).stdout)) {
    if (Date.now() > deadline || inetd.exitCode !== null) throw new Error("inetd did not start listening on 514 within 10 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  return host;
}

function stopHost(host: Host): void {
  host.inetd.kill("SIGKILL");
  spawnSync("ip", ["netns", "del", host.ns]);
  spawnSync("ip", ["link", "del", host.veth]);
  rmSync(host.dir, { recursive: true, force: true });
}

/** TIME_WAITs towards the server (root namespace) and on the server (its namespace). */
function timeWaits(host: Host): { local: number; remote: number } {
  const count = (argv: string[]) => spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" }).stdout.split("\n").filter((l) => l.trim()).length;
  return {
    local: count(["ss", "-Htan", "state", "time-wait", "dst", SERVER]),
    remote: count(["ip", "netns", "exec", host.ns, "ss", "-Htan", "state", "time-wait"]),
  };
}

function destroyTimeWaits(host: Host): void {
  spawnSync("ss", ["-K", "-tan", "state", "time-wait", "dst", SERVER], { stdio: "ignore" });
  spawnSync("ip", ["netns", "exec", host.ns, "ss", "-K", "-tan", "state", "time-wait"], { stdio: "ignore" });
}

// ------------------------------------------------------------------ phases

interface Tally {
  runs: number;
  ok: number;
  failed: number;
  firstFailureAtS: number | null;
  okBeforeFirstFailure: number | null;
  reasons: Map<string, number>;
  /** ok/failed per 10 s of the phase. */
  timeline: { ok: number; failed: number }[];
}

function newTally(): Tally {
  return { runs: 0, ok: 0, failed: 0, firstFailureAtS: null, okBeforeFirstFailure: null, reasons: new Map(), timeline: [] };
}

function count(t: Tally, startedAt: number, ok: boolean, reason: string): void {
  const sinceS = (Date.now() - startedAt) / 1000;
  const bucket = Math.floor(sinceS / 10);
  while (t.timeline.length <= bucket) t.timeline.push({ ok: 0, failed: 0 });
  t.runs++;
  if (ok) {
    t.ok++;
    t.timeline[bucket]!.ok++;
    return;
  }
  t.failed++;
  t.timeline[bucket]!.failed++;
  if (t.firstFailureAtS === null) {
    t.firstFailureAtS = Math.round(sinceS * 100) / 100;
    t.okBeforeFirstFailure = t.ok;
  }
  t.reasons.set(reason, (t.reasons.get(reason) ?? 0) + 1);
}

/** "pdsh@box: 10.234.0.2: rcmd: socket: All ports in use" -> "rcmd: socket: All ports in use". */
function reasonOf(stderr: string, code: number | null, signal: string | null): string {
  const line = stderr.split("\n").find((l) => l.trim()) ?? "";
  const text = line.replace(/^pdsh@[^:]*:\s*/, "").replace(new RegExp(`^${SERVER.replace(/\./g, "\\.")}:\\s*`), "").trim();
  if (text) return text.slice(0, 160);
  return signal ? `killed by ${signal} (no message)` : `exit ${code} (no message)`;
}

/** Success for a process run: multi-rsh always writes its summary to stderr, so for it the exit code. */
function processPhase(argv: string[], seconds: number, stderrMeansFailure = true): Tally {
  const t = newTally();
  const startedAt = Date.now();
  const end = startedAt + seconds * 1000;
  while (Date.now() < end) {
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", timeout: RUN_TIMEOUT_MS, killSignal: "SIGKILL", stdio: ["ignore", "pipe", "pipe"] });
    const ok = r.status === 0 && (!stderrMeansFailure || r.stderr.trim() === "");
    count(t, startedAt, ok, ok ? "" : reasonOf(r.stderr ?? "", r.status, r.signal));
  }
  return t;
}

interface Engine {
  runHosts: (o: Record<string, unknown>) => { done: Promise<{ state: string; exitCode: number | null; error: { code: string; message: string } | null }[]> };
  createTransport: (name: string, options: Record<string, unknown>) => Promise<unknown>;
}

async function loadEngine(): Promise<Engine | string> {
  const engine = join(ROOT, "dist", "remote", "engine.js");
  const transports = join(ROOT, "dist", "remote", "transports", "index.js");
  if (!existsSync(engine) || !existsSync(transports) || !readFileSync(engine, "utf8").includes("runHosts")) {
    return "dist/remote/engine.js with runHosts is not built yet";
  }
  const e = (await import(pathToFileURL(engine).href)) as Pick<Engine, "runHosts">;
  const tr = (await import(pathToFileURL(transports).href)) as Pick<Engine, "createTransport">;
  return { runHosts: e.runHosts, createTransport: tr.createTransport };
}

async function inProcessPhase(engine: Engine, seconds: number, concurrency: number): Promise<Tally> {
  const transport = await engine.createTransport("rsh", {});
  const t = newTally();
  const startedAt = Date.now();
  const end = startedAt + seconds * 1000;
  const loop = async () => {
    while (Date.now() < end) {
      const [r] = await engine.runHosts({
        hosts: [SERVER],
        command: COMMAND,
        transport,
        parallel: 1,
        timeoutMs: 15_000,
        connectTimeoutMs: 5_000,
        commandTimeoutMs: 0,
        user: "root",
        localUser: "root",
        separateStderr: false,
      }).done;
      const ok = r !== undefined && r.state === "done" && r.exitCode === 0;
      count(t, startedAt, ok, ok ? "" : r?.error ? `${r.error.code}: ${r.error.message}`.slice(0, 160) : `${r?.state} exit ${r?.exitCode}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return t;
}

interface PhaseResult {
  name: string;
  how: string;
  concurrency: number;
  seconds: number;
  runs: number;
  ok: number;
  failed: number;
  runsPerSecond: number;
  okPerSecond: number;
  firstFailureAtS: number | null;
  okBeforeFirstFailure: number | null;
  reasons: Record<string, number>;
  timelinePer10s: { ok: number; failed: number }[];
  /** TIME_WAITs towards the server this phase left, counted at its end (then destroyed). */
  timeWaitAfter: { local: number; remote: number };
  timeWaitBefore: { local: number; remote: number };
  skipped?: string;
}

function result(name: string, how: string, concurrency: number, seconds: number, t: Tally, before: { local: number; remote: number }, after: { local: number; remote: number }): PhaseResult {
  return {
    name,
    how,
    concurrency,
    seconds,
    runs: t.runs,
    ok: t.ok,
    failed: t.failed,
    runsPerSecond: Math.round((t.runs / seconds) * 10) / 10,
    okPerSecond: Math.round((t.ok / seconds) * 10) / 10,
    firstFailureAtS: t.firstFailureAtS,
    okBeforeFirstFailure: t.okBeforeFirstFailure,
    reasons: Object.fromEntries([...t.reasons].sort((a, b) => b[1] - a[1]).slice(0, 8)),
    timelinePer10s: t.timeline,
    timeWaitBefore: before,
    timeWaitAfter: after,
  };
}

async function main(): Promise<void> {
  if (process.platform !== "linux" || process.getuid?.() !== 0) {
    process.stderr.write("bench/rsh-sustained needs Linux and root (a network namespace, reserved ports)\n");
    process.exit(2);
  }
  for (const [bin, pkg] of [["/usr/sbin/in.rshd", "rsh-server"], ["/usr/sbin/inetd", "openbsd-inetd"], ["/usr/bin/rsh", "rsh-client"], ["/usr/bin/pdsh", "pdsh"]] as const) {
    if (!existsSync(bin)) {
      process.stderr.write(`bench/rsh-sustained: ${bin} is missing (apt-get install ${pkg})\n`);
      process.exit(2);
    }
  }
  const seconds = Number(arg("--seconds", "120"));
  // In-process phases, one per value: 1 is a plain loop; more keeps several runs to the host in flight.
  const concurrencies = arg("--concurrency", "1,8").split(",").map(Number);
  const only = arg("--only", "").split(",").filter(Boolean);
  if (!(seconds > 0 && seconds <= 600) || !concurrencies.every((c) => Number.isInteger(c) && c >= 1 && c <= 64)) {
    process.stderr.write("bench/rsh-sustained: --seconds 1..600, --concurrency N[,N...] with N in 1..64\n");
    process.exit(2);
  }
  const node = process.execPath;
  const phases: { name: string; how: string; run: () => Promise<Tally | string>; concurrency: number }[] = [
    ...concurrencies.map((concurrency) => ({
      name: `ours, in-process x${concurrency}`,
      how: `runHosts({hosts:["${SERVER}"], command:"${COMMAND}"}) with the rsh transport from dist/, ${concurrency} loop(s) at once`,
      concurrency,
      run: async (): Promise<Tally | string> => {
        const engine = await loadEngine();
        return typeof engine === "string" ? engine : inProcessPhase(engine, seconds, concurrency);
      },
    })),
    {
      name: "ours, process per run",
      how: `node bin/multi-rsh.js -w ${SERVER} ${COMMAND}`,
      concurrency: 1,
      run: async () => (existsSync(join(ROOT, "dist", "cli", "multi-rsh", "multi-rsh.js")) ? processPhase([node, join(ROOT, "bin", "multi-rsh.js"), "-w", SERVER, COMMAND], seconds, false) : "dist/cli/multi-rsh/multi-rsh.js is not built"),
    },
    { name: "netkit rsh", how: `rsh ${SERVER} ${COMMAND}`, concurrency: 1, run: async () => processPhase(["rsh", SERVER, COMMAND], seconds) },
    { name: "pdsh -R rsh", how: `pdsh -R rsh -w ${SERVER} ${COMMAND}`, concurrency: 1, run: async () => processPhase(["pdsh", "-R", "rsh", "-w", SERVER, COMMAND], seconds) },
  ].filter((p) => only.length === 0 || only.some((o) => p.name.includes(o)));

  const loadAtStart = readFileSync("/proc/loadavg", "latin1").trim();
  const host = await startHost();
  const results: PhaseResult[] = [];
  try {
    assertRoute(host);
    const probe = spawnSync("rsh", [SERVER, "echo ok"], { encoding: "utf8", timeout: 10_000 });
    if (probe.stdout.trim() !== "ok") throw new Error(`rshd does not answer: ${probe.stderr.trim() || probe.stdout.trim()}`);
    for (const p of phases) {
      assertRoute(host);
      const before = timeWaits(host);
      destroyTimeWaits(host);
      process.stderr.write(`${p.name}: ${seconds} s ...\n`);
      const t = await p.run();
      if (typeof t === "string") {
        results.push({ ...result(p.name, p.how, p.concurrency, seconds, newTally(), before, { local: 0, remote: 0 }), skipped: t });
        process.stderr.write(`  skipped: ${t}\n`);
        continue;
      }
      const after = timeWaits(host);
      const r = result(p.name, p.how, p.concurrency, seconds, t, before, after);
      results.push(r);
      process.stderr.write(`  ${r.ok} ok, ${r.failed} failed (${r.okPerSecond} ok/s); TIME_WAIT left: ${after.local} here, ${after.remote} on the server\n`);
    }
    destroyTimeWaits(host);
  } finally {
    stopHost(host);
  }

  console.log(`\n${seconds} s per phase, one in.rshd at ${SERVER}, command '${COMMAND}'`);
  console.log(`${"phase".padEnd(24)} ${"runs".padStart(7)} ${"ok".padStart(7)} ${"failed".padStart(7)} ${"ok/s".padStart(7)}  ${"1st fail".padStart(8)}  TW left (here/server)  top failure`);
  for (const r of results) {
    if (r.skipped) {
      console.log(`${r.name.padEnd(24)} skipped: ${r.skipped}`);
      continue;
    }
    const top = Object.entries(r.reasons)[0];
    console.log(
      `${r.name.padEnd(24)} ${String(r.runs).padStart(7)} ${String(r.ok).padStart(7)} ${String(r.failed).padStart(7)} ${r.okPerSecond.toFixed(1).padStart(7)}  ${(r.firstFailureAtS === null ? "-" : `${r.firstFailureAtS} s`).padStart(8)}  ${`${r.timeWaitAfter.local}/${r.timeWaitAfter.remote}`.padStart(21)}  ${top ? `${top[0]} (${top[1]})` : ""}`,
    );
  }
  const target = { runsIn120s: 12_000, failures: 0 };
  const verdicts = results
    .filter((r) => r.name.startsWith("ours, in-process") && !r.skipped)
    .map((r) => {
      const scaled = Math.round((r.ok / seconds) * 120);
      const met = scaled >= target.runsIn120s && r.failed === 0;
      return `${r.name}: ${r.ok} ok, ${r.failed} failed in ${seconds} s (${scaled} per 120 s): target ${met ? "met" : "not met"}`;
    });
  const verdict = verdicts.length ? verdicts.join("; ") : "ours in-process did not run";
  console.log(`\n${verdicts.join("\n") || verdict}`);

  const doc = {
    bench: "rsh-sustained",
    date: new Date().toISOString(),
    node: process.version,
    kernel: release(),
    cpus: readFileSync("/proc/cpuinfo", "latin1").split("\n").filter((l) => l.startsWith("processor")).length,
    setup: {
      server: `Debian in.rshd under openbsd-inetd -R 1000000 in netns aibr-PID at ${SERVER}, veth to the root namespace (${CLIENT}); /root/.rhosts "${CLIENT} root"; nsswitch hosts: files`,
      command: COMMAND,
      secondsPerPhase: seconds,
      order: results.map((r) => r.name),
      betweenPhases:
        "TIME_WAITs towards the server counted (timeWaitBefore), then destroyed with `ss -K state time-wait dst 10.234.0.2` in the root namespace and `ss -K state time-wait` in the server's, so no phase inherits the previous one's ports; ours runs first anyway",
      success: "netkit rsh, pdsh: exit 0 and empty stderr; multi-rsh process: exit 0 (it exits 1 on any failure, and always prints its summary on stderr); in-process: result state done, exit code 0",
      loadAverageAtStart: loadAtStart,
      loadAverageAtEnd: readFileSync("/proc/loadavg", "latin1").trim(),
    },
    target: "ours >= 12,000 runs in 120 s with 0 failures while the peers fail",
    verdict,
    phases: results,
  };
  mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
  writeFileSync(join(ROOT, "bench", "results", "rsh-sustained.json"), JSON.stringify(doc, null, 2) + "\n");
  console.log("wrote bench/results/rsh-sustained.json");
}

await main();
