/**
 * bench/thousand: the 1,000-host run, fan-out 256, `hostname` on every host of a testbed of its own
 * (prefix aibk, 10.238.0.0/16), by multi-rsh -R rsh, multi-rsh -R ssh and, in the same run, the peer
 * pdsh -R rsh. What it checks and records per run:
 *
 *  - every host answers once: multi-rsh's --json has exactly one result per host, `done`, exit 0, and
 *    the host's own name as its only output line; pdsh prints exactly one `ADDR: NAME` line per host;
 *  - peak RSS: GNU time's %M (ru_maxrss of the tool; each of the three is one process, so that is the
 *    peak of the whole run, exactly, with no sampling gap);
 *  - peak open fds: /proc/PID/fd of the tool counted every 20 ms (fds come and go with connections;
 *    a sample can miss a peak shorter than that, so it is a lower bound);
 *  - wall and CPU time, and the TIME_WAIT the run left on this machine towards the testbed.
 *
 * Before every run the TIME_WAITs towards the testbed are destroyed with `ss -K`, here and in each
 * host that has any, so no run inherits another's ports (pdsh closes first and keeps ~1,000 of them
 * on its reserved ports). Tools run one after another, in an order rotated each round. The testbed
 * is taken down at the end, whatever happened.
 *
 * Memory: 1,000 hosts with inetd and sshd each take ~2.4 MB a host; the bench refuses to start when
 * MemAvailable is below twice what the hosts need plus 2 GiB.
 *
 * Run (root, a few minutes): npm run build && flock /tmp/addrinuse-bench.lock npm run bench:thousand [-- --rounds 3 --hosts 1000 --fanout 256]
 *
 * `--ssh`: the ssh run of issue 13 instead: multi-rsh -R ssh against, in the same run, `pssh -p N`
 * and `pdsh -R ssh -f N` (N = --fanout, 1000 there), each started under `prlimit --nofile=SOFT:HARD`
 * (`--soft-nofile 1024`: the soft limit most systems start a login with), on a testbed whose sshd's
 * keep OpenSSH's default MaxStartups (`--max-startups default`). Besides the counts above it records
 * what each tool lost: hosts that did not answer once, handshakes dropped by sshd (ours: retries and
 * `dropped-by-server` results; the peers: ssh's "kex_exchange_identification" / "Connection closed"
 * lines), and "Too many open files". Results in bench/results/thousand-ssh.json.
 *   flock /tmp/addrinuse-bench.lock npm run bench:thousand -- --ssh --hosts 1000 --fanout 1000 --rounds 1 \
 *     --max-startups default --soft-nofile 1024 [--prefix P --net 10.N]
 */
import { spawn } from "node:child_process";
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assertRouteOverBridge, down, missingRequirement, run, up, type Testbed } from "../testbed/testbed.js";
import { arg } from "./lib/options.js";
import { median } from "./lib/stats.js";
import { cleanSockets, reservedBusy, timeWaitTowards } from "./lib/testbed-sockets.js";
import { firstChild, openFds, samplePeak } from "./lib/sampler.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

const SSH_MODE = process.argv.includes("--ssh");
const RESULTS = join(ROOT, "bench", "results", SSH_MODE ? "thousand-ssh.json" : "thousand.json");
const MULTI_RSH = join(ROOT, "bin", "multi-rsh.js");
const PREFIX = arg("prefix", process.env.ADDRINUSE_TESTBED_PREFIX ?? "aibk");
const NET = arg("net", process.env.ADDRINUSE_TESTBED_NET ?? "10.238");
const RUN_TIMEOUT_MS = 300_000;
const HOST_BYTES = 2.4 * 2 ** 20;

interface Tool {
  name: string;
  ours: boolean;
  /** --json document (ours), `ADDR: line` text (pdsh), or pssh -i's `[n] time [SUCCESS] ADDR` blocks. */
  output: "json" | "prefix" | "pssh";
  argv(hostsFile: string, fanout: number, tb: Testbed): string[];
  env?(tb: Testbed): Record<string, string>;
}

const SSH_TOOLS: Tool[] = [
  { name: "multi-rsh -R ssh", ours: true, output: "json", argv: (f, p, tb) => [process.execPath, MULTI_RSH, "-R", "ssh", "-F", tb.files.sshConfig, "-p", String(p), "-t", "120", "--json", "-l", f, "hostname"] },
  { name: "pssh", ours: false, output: "pssh", argv: (f, p, tb) => ["parallel-ssh", "-i", "-p", String(p), "-t", "120", "-h", f, "-x", `-F ${tb.files.sshConfig}`, "hostname"] },
  { name: "pdsh -R ssh", ours: false, output: "prefix", argv: (f, p) => ["pdsh", "-R", "ssh", "-f", String(p), "-w", `^${f}`, "hostname"], env: (tb) => ({ PDSH_SSH_ARGS_APPEND: `-F ${tb.files.sshConfig}` }) },
];

const RSH_TOOLS: Tool[] = [
  // -t 120: a loaded machine doing a thousand handshakes is slow, not broken (pdsh has no timeout).
  { name: "multi-rsh -R rsh", ours: true, output: "json", argv: (f, p) => [process.execPath, MULTI_RSH, "-R", "rsh", "-p", String(p), "-t", "120", "--json", "-l", f, "hostname"] },
  { name: "multi-rsh -R ssh", ours: true, output: "json", argv: (f, p, tb) => [process.execPath, MULTI_RSH, "-R", "ssh", "-F", tb.files.sshConfig, "-p", String(p), "-t", "120", "--json", "-l", f, "hostname"] },
  { name: "pdsh -R rsh", ours: false, output: "prefix", argv: (f, p) => ["pdsh", "-R", "rsh", "-f", String(p), "-w", `^${f}`, "hostname"] },
];

const TOOLS = SSH_MODE ? SSH_TOOLS : RSH_TOOLS;
const PEER = SSH_MODE ? "pdsh -R ssh" : "pdsh -R rsh";
/** --soft-nofile N: every tool starts with that soft fd limit (and the hard limit this bench has). */
const SOFT_NOFILE = arg("soft-nofile", "");

interface RunRecord {
  tool: string;
  round: number;
  hosts: number;
  fanout: number;
  wallMs: number;
  cpuMs: number;
  exitCode: number | null;
  peakRssBytes: number;
  peakFds: number;
  /** Hosts that answered exactly once, with their own name and nothing else. */
  answeredOnce: number;
  /** Results (ours) or output lines naming a testbed host (pdsh) in all: one per host when nothing is lost or doubled. */
  records: number;
  notOnce: string[];
  clientTimeWait: number;
  /** Reserved ports (512-1023) held by sockets towards other networks when the run started. */
  reservedPortsBusy: number;
  stderrTail: string;
  /** Handshakes sshd dropped: ours retried (and any dropped-by-server result); peers' ssh said so. */
  dropped: number;
  /** Retries ours made (dropped handshakes it recovered from). */
  retries: number;
  /** "Too many open files" said on stderr, or our results with cause local. */
  emfile: number;
  /** Ours: failed hosts by cause. */
  causes?: Record<string, number>;
}

function memAvailable(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "latin1"));
  return m ? Number(m[1]) * 1024 : 0;
}

interface Answers {
  answeredOnce: number;
  records: number;
  /** The first hosts that did not answer once, and how (for the report: a loss is named, not just counted). */
  notOnce: string[];
}

/** How many hosts answered exactly once with their own name, and how many records there were. */
async function countAnswers(tool: Tool, outFile: string, tb: Testbed): Promise<Answers> {
  const names = new Map(tb.hosts.map((h) => [h.address, h.name]));
  const notOnce = (good: Set<string>, why: (addr: string) => string) =>
    tb.hosts.filter((h) => !good.has(h.address)).slice(0, 10).map((h) => `${h.address}: ${why(h.address)}`);
  if (tool.output === "json") {
    let doc: { results: { host: string; state: string; exitCode: number | null; output: string[]; error: { code: string } | null }[] };
    try {
      doc = JSON.parse(readFileSync(outFile, "utf8")) as typeof doc;
    } catch {
      return { answeredOnce: 0, records: 0, notOnce: ["no --json document"] };
    }
    const seen = new Map<string, number>();
    for (const r of doc.results) seen.set(r.host, (seen.get(r.host) ?? 0) + 1);
    const good = doc.results.filter((r) => seen.get(r.host) === 1 && r.state === "done" && r.exitCode === 0 && r.output.length === 1 && r.output[0] === names.get(r.host));
    const goodSet = new Set(good.map((r) => r.host));
    const why = (a: string) => {
      const rs = doc.results.filter((r) => r.host === a);
      return rs.length !== 1 ? `${rs.length} results` : `${rs[0]!.state} ${rs[0]!.error?.code ?? ""} exit ${rs[0]!.exitCode} ${JSON.stringify(rs[0]!.output.slice(0, 2))}`;
    };
    return { answeredOnce: good.length, records: doc.results.length, notOnce: notOnce(goodSet, why) };
  }
  const lines = new Map<string, string[]>();
  const odd: string[] = [];
  let records = 0;
  let rest = "";
  let psshHost: string | null = null;
  const take = (l: string) => {
    if (tool.output === "pssh") {
      const m = /^\[\d+\] \S+ \[(SUCCESS|FAILURE)\] (\S+)/.exec(l);
      if (m) {
        psshHost = m[1] === "SUCCESS" && names.has(m[2]!) ? m[2]! : null;
        if (psshHost) lines.set(psshHost, lines.get(psshHost) ?? []);
        return;
      }
      if (psshHost) {
        records++;
        lines.get(psshHost)!.push(l);
      } else if (odd.length < 10 && l.trim()) odd.push(l.slice(0, 200));
      return;
    }
    const i = l.indexOf(": ");
    const h = i < 0 ? "" : l.slice(0, i);
    if (!names.has(h)) {
      if (odd.length < 10) odd.push(l.slice(0, 200));
      return;
    }
    records++;
    lines.set(h, [...(lines.get(h) ?? []), l.slice(i + 2)]);
  };
  for await (const chunk of createReadStream(outFile, { encoding: "utf8" })) {
    const text = rest + (chunk as string);
    const parts = text.split("\n");
    rest = parts.pop()!;
    parts.forEach(take);
  }
  if (rest) take(rest);
  const good = new Set([...lines].filter(([h, ls]) => ls.length === 1 && ls[0] === names.get(h)).map(([h]) => h));
  const why = (a: string) => JSON.stringify((lines.get(a) ?? []).slice(0, 2));
  return { answeredOnce: good.size, records, notOnce: [...notOnce(good, why), ...odd.map((l) => `line of no host: ${l}`)] };
}

async function runTool(tool: Tool, tb: Testbed, hostsFile: string, fanout: number, round: number): Promise<RunRecord> {
  await cleanSockets(tb);
  const reservedPortsBusy = reservedBusy(tb.net);
  const [tcmd, ...targs] = tool.argv(hostsFile, fanout, tb);
  const hard = readFileSync("/proc/self/limits", "latin1").match(/^Max open files\s+\S+\s+(\S+)/m)?.[1] ?? "unlimited";
  const [cmd, ...args] = SOFT_NOFILE ? ["prlimit", `--nofile=${SOFT_NOFILE}:${hard}`, tcmd!, ...targs] : [tcmd!, ...targs];
  const timeFile = join(tb.files.stateDir, "thousand-time.txt");
  const outFile = join(tb.files.stateDir, "thousand-out.txt");
  const outFd = openSync(outFile, "w");
  const started = performance.now();
  const child = spawn("/usr/bin/time", ["-f", "%e %U %S %M", "-o", timeFile, cmd!, ...args], {
    stdio: ["ignore", outFd, "pipe"],
    env: { ...process.env, NO_PROGRESS: "1", ...(tool.env?.(tb) ?? {}) },
  });
  let stderr = "";
  let stderrDropped = 0;
  let stderrEmfile = 0;
  let partialErr = "";
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    stderr = (stderr + s).slice(-2000);
    const ls = (partialErr + s).split("\n");
    partialErr = ls.pop()!;
    for (const l of ls) {
      if (/kex_exchange_identification|Connection closed by .* port 22|Connection reset by .* port 22|banner exchange/.test(l)) stderrDropped++;
      if (/Too many open files|EMFILE/.test(l)) stderrEmfile++;
    }
  });
  // GNU time is the child; the tool is its only child (prlimit execs it in place).
  let toolPid: number | null = null;
  const fds = samplePeak(() => {
    toolPid ??= firstChild(child.pid!);
    return toolPid === null ? 0 : openFds(toolPid);
  }, 20);
  const killer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
  const exitCode = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  const wallMs = Math.round(performance.now() - started);
  const peakFds = fds.stop();
  clearTimeout(killer);
  closeSync(outFd);
  const clientTimeWait = timeWaitTowards(tb.net);
  const counted = await countAnswers(tool, outFile, tb);
  let dropped = stderrDropped;
  let retries = 0;
  let emfile = stderrEmfile;
  let causes: Record<string, number> | undefined;
  if (tool.output === "json") {
    try {
      const doc = JSON.parse(readFileSync(outFile, "utf8")) as { results: { retries?: number; cause?: string | null }[]; causes?: Record<string, number> };
      retries = doc.results.reduce((n, r) => n + (r.retries ?? 0), 0);
      dropped = retries + doc.results.filter((r) => r.cause === "dropped-by-server").length;
      emfile = doc.results.filter((r) => r.cause === "local").length;
      causes = doc.causes ?? {};
    } catch {
      // counted above as no document
    }
  }
  rmSync(outFile);
  let cpuMs = 0;
  let peakRssBytes = 0;
  try {
    const f = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
    cpuMs = Math.round(((f[1] ?? 0) + (f[2] ?? 0)) * 1000);
    peakRssBytes = (f[3] ?? 0) * 1024;
  } catch {
    // The tool was killed before GNU time could write.
  }
  return {
    tool: tool.name, round, hosts: tb.hosts.length, fanout, wallMs, cpuMs, exitCode, peakRssBytes, peakFds,
    ...counted, clientTimeWait, reservedPortsBusy, stderrTail: stderr.trim().split("\n").slice(-3).join("\n"),
    dropped, retries, emfile, ...(causes ? { causes } : {}),
  };
}

interface Row {
  tool: string;
  rounds: number;
  wallMs: number;
  cpuMs: number;
  peakRssBytes: number;
  peakFds: number;
  /** The worst round's. */
  answeredOnce: number;
  clientTimeWait: number;
  /** The worst round's. */
  dropped: number;
  emfile: number;
  wallRatio: number | null;
  rssRatio: number | null;
  fdsRatio: number | null;
}

function summarise(runs: RunRecord[]): Row[] {
  const rows: Row[] = TOOLS.filter((t) => runs.some((r) => r.tool === t.name)).map((t) => {
    const rs = runs.filter((r) => r.tool === t.name);
    return {
      tool: t.name,
      rounds: rs.length,
      wallMs: median(rs.map((r) => r.wallMs)),
      cpuMs: median(rs.map((r) => r.cpuMs)),
      peakRssBytes: Math.max(...rs.map((r) => r.peakRssBytes)),
      peakFds: Math.max(...rs.map((r) => r.peakFds)),
      answeredOnce: Math.min(...rs.map((r) => r.answeredOnce)),
      clientTimeWait: Math.max(...rs.map((r) => r.clientTimeWait)),
      dropped: Math.max(...rs.map((r) => r.dropped)),
      emfile: Math.max(...rs.map((r) => r.emfile)),
      wallRatio: null,
      rssRatio: null,
      fdsRatio: null,
    };
  });
  const peer = rows.find((r) => r.tool === PEER);
  if (peer) {
    const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 100) / 100 : null);
    for (const r of rows) {
      r.wallRatio = ratio(r.wallMs, peer.wallMs);
      r.rssRatio = ratio(r.peakRssBytes, peer.peakRssBytes);
      r.fdsRatio = ratio(r.peakFds, peer.peakFds);
    }
  }
  return rows;
}

function table(rows: Row[], hosts: number): string {
  const head = ["tool", "rounds", "wall s (median)", "×pdsh", "cpu s", "peak RSS MiB", "×pdsh", "peak fds", "×pdsh", `answered once /${hosts}`, "client TW", "dropped", "EMFILE"];
  const body = rows.map((r) => [
    r.tool, String(r.rounds), (r.wallMs / 1000).toFixed(2), r.wallRatio?.toFixed(2) ?? "-", (r.cpuMs / 1000).toFixed(2),
    (r.peakRssBytes / 2 ** 20).toFixed(0), r.rssRatio?.toFixed(2) ?? "-", String(r.peakFds), r.fdsRatio?.toFixed(2) ?? "-",
    String(r.answeredOnce), String(r.clientTimeWait), String(r.dropped), String(r.emfile),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")).join("\n");
}

async function main(): Promise<number> {
  const why =
    missingRequirement() ??
    (existsSync("/usr/bin/pdsh") ? null : "pdsh is missing: apt-get install pdsh") ??
    (existsSync("/usr/bin/time") ? null : "GNU time is missing: apt-get install time") ??
    (!SSH_MODE || existsSync("/usr/bin/parallel-ssh") ? null : "pssh is missing: apt-get install pssh");
  if (why) {
    console.error(`bench/thousand: ${why}`);
    return 2;
  }
  if (!existsSync(join(ROOT, "dist", "cli", "multi-rsh.js"))) {
    console.error("bench/thousand: dist/ is missing: npm run build first");
    return 2;
  }
  const hosts = Number(arg("hosts", "1000"));
  const fanout = Number(arg("fanout", "256"));
  const rounds = Number(arg("rounds", "3"));
  if (![hosts, fanout, rounds].every((n) => Number.isInteger(n) && n > 0) || hosts > 1000) {
    console.error("bench/thousand: --hosts 1-1000, --fanout and --rounds positive integers");
    return 2;
  }
  const need = 2 * hosts * HOST_BYTES + 2 * 2 ** 30;
  if (memAvailable() < need) {
    console.error(`bench/thousand: ${(memAvailable() / 2 ** 30).toFixed(1)} GiB available, ${(need / 2 ** 30).toFixed(1)} GiB wanted for ${hosts} hosts: not run`);
    return 2;
  }
  const loadAtStart = readFileSync("/proc/loadavg", "latin1").trim();
  const runs: RunRecord[] = [];
  let tb: Testbed | null = null;
  try {
    tb = await up({ hosts, prefix: PREFIX, net: NET, maxStartups: arg("max-startups", "200:30:400") });
    assertRouteOverBridge(tb.hosts.map((h) => h.address), tb.bridge);
    console.log(`testbed: ${hosts} hosts up in ${(tb.setupMs / 1000).toFixed(1)} s, host processes ${(tb.hostPssBytes / 2 ** 20).toFixed(0)} MiB PSS; load ${loadAtStart}`);
    const hostsFile = join(tb.files.stateDir, "hosts");
    for (let round = 1; round <= rounds; round++) {
      const order = TOOLS.map((_, i) => TOOLS[(i + round - 1) % TOOLS.length]!);
      for (const tool of order) {
        const r = await runTool(tool, tb, hostsFile, fanout, round);
        runs.push(r);
        console.log(
          `r${round} ${tool.name.padEnd(18)} ${(r.wallMs / 1000).toFixed(2)} s, exit ${r.exitCode}, ${r.answeredOnce}/${hosts} answered once (${r.records} records), ` +
            `peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB, peak fds ${r.peakFds}, TW here ${r.clientTimeWait}, dropped ${r.dropped}, EMFILE ${r.emfile}` +
            (r.answeredOnce < hosts ? `\n    ${[...r.notOnce, r.stderrTail].filter(Boolean).join("\n    ")}` : ""),
        );
      }
    }
    await cleanSockets(tb);
  } finally {
    if (tb || existsSync(`/tmp/addrinuse-testbed/${PREFIX}`)) {
      const d = await down({ prefix: PREFIX });
      console.log(`testbed down: ${d.namespaces} namespaces, ${d.processes} processes removed`);
    }
  }
  const rows = summarise(runs);
  const doc = {
    bench: SSH_MODE ? "thousand-ssh" : "thousand",
    date: new Date().toISOString(),
    machine: { kernel: release(), cpus: cpus().length, memoryBytes: totalmem(), loadAtStart, loadAtEnd: readFileSync("/proc/loadavg", "latin1").trim() },
    config: {
      hosts, fanout, rounds, command: "hostname", prefix: PREFIX, net: NET, kex: "curve25519-sha256",
      maxStartups: arg("max-startups", "200:30:400"), softNofile: SOFT_NOFILE || null,
      run: `npm run bench:thousand -- ${process.argv.slice(2).join(" ")}`,
    },
    testbed: { setupMs: tb!.setupMs, hostPssBytes: tb!.hostPssBytes },
    rows,
    runs,
  };
  console.log("\n" + table(rows, hosts));
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileSync(RESULTS, JSON.stringify(doc, null, 2) + "\n");
  console.log(`\nwrote ${RESULTS}`);
  // Ours must have every host answer once; the peer's losses are its own and only recorded.
  return runs.some((r) => TOOLS.find((t) => t.name === r.tool)!.ours && r.answeredOnce !== hosts) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
