/**
 * bench/fanout: one command on 100 and 300 testbed hosts (1,000 with --sizes), by every peer and by
 * multi-rsh over every transport, all in the same run: pdsh -R rsh, pdsh -R ssh, pssh, clush (rsh
 * and ssh workers), `xargs -P` ssh, GNU parallel, and `node bin/multi-rsh.js -R rsh|ssh|openssh|exec`
 * (openssh and exec also without their relay, as on a machine without netcat-openbsd).
 * Commands: `hostname` and a script printing 1 MB (16,384 lines of 64 bytes).
 *
 * Every tool gets the same fan-out (--fanout, default 64) and the same ssh client config (the
 * testbed's: curve25519-sha256 key exchange, since OpenSSH 9.2's default sntrup761 costs more than
 * the rest of a run and the ssh2 library lacks it). Several rounds; within a round the tools run one
 * after another in an order rotated each round; before every run the testbed's TIME_WAIT sockets are
 * destroyed with `ss -K`, on the client and in each host, so no run inherits another's.
 *
 * Per run: wall time; client CPU (user+sys of the tool and every child it waited for, from GNU
 * time); peak RSS of the tool's whole process tree (sampled every 50 ms: xargs and parallel fork one
 * ssh per host, and GNU time's %M is only the largest single process); TIME_WAIT left on the client
 * (towards the testbed) and in the hosts (each host's own table); failures = hosts whose output did
 * not arrive whole. Medians over the rounds; ratios against the best peer of the same protocol.
 *
 * Run (root): npm run build && npm run bench:fanout [-- --sizes 100,300,1000 --rounds 3 --fanout 64]
 * The 1,000-host run of multi-rsh with fan-out 256 (peak RSS and fds of each tool recorded):
 *   npm run bench:fanout -- --sizes 1000 --rounds 1 --fanout 256 --commands hostname --tools "multi-rsh -R rsh,pdsh -R rsh,multi-rsh -R ssh" --merge
 * Redraw the chart from the JSON only: npm run bench:fanout -- --svg-only
 * Beside another testbed: --prefix aibf --net 10.235 (default aitb and 10.233).
 */
import { spawn } from "node:child_process";
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assertRouteOverBridge, missingRequirement, run, up, type Testbed } from "../testbed/testbed.js";
import { arg } from "./lib/options.js";
import { median } from "./lib/stats.js";
import { firstChild, openFds, samplePeak, treeRss } from "./lib/sampler.js";
import { cleanSockets, hostTimeWaits, reservedBusy, timeWaitTowards } from "./lib/testbed-sockets.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS = join(ROOT, "bench", "results", "fanout.json");
const SVG = join(ROOT, "docs", "fanout.svg");
const MB_LINES = 16_384;
const RUN_TIMEOUT_MS = 180_000;
/**
 * Removed from every tool's environment: with NODE_EXTRA_CA_CERTS set, Node 20 parses its whole CA
 * bundle and the extra file at start-up, before any of the program runs (measured here: +50 ms wall
 * and +40 ms CPU for an empty script), whether or not the program ever uses TLS. Some shells and
 * containers export it; it is a property of the environment, not of the tool, and only Node tools
 * pay for it. `--keep-env` keeps it.
 */
const ENV_REMOVED = ["NODE_EXTRA_CA_CERTS"];

type Family = "rsh" | "ssh";
type CommandName = "hostname" | "1MB";

interface Tool {
  name: string;
  family: Family;
  ours: boolean;
  /** Output shape, for counting what arrived per host. */
  output: "prefix" | "tab" | "pssh" | "bare";
  argv(c: { hostsFile: string; addrs: string[]; command: string; fanout: number; tb: Testbed }): { cmd: string; args: string[]; env?: Record<string, string>; stdinFile?: string };
  needs: string;
}

const MULTI_RSH = join(ROOT, "bin", "multi-rsh.js");
/**
 * multi-rsh's default -t 15 is a total per host; pdsh and clush have no command timeout by default
 * and pssh gets -t 120 here, so ours gets 120 too: a loaded machine moving 300 MB is slow, not broken.
 */
const OUR_TIMEOUT_S = "120";

const TOOLS: Tool[] = [
  { name: "pdsh -R rsh", family: "rsh", ours: false, output: "prefix", needs: "/usr/bin/pdsh",
    argv: (c) => ({ cmd: "pdsh", args: ["-R", "rsh", "-f", String(c.fanout), "-w", `^${c.hostsFile}`, c.command] }) },
  // Like-for-like with ours, which always collects each host's exit code: pdsh does only with -S
  // (it appends `;echo XXRETCODE:$?`, which costs every host a fork).
  { name: "pdsh -S -R rsh", family: "rsh", ours: false, output: "prefix", needs: "/usr/bin/pdsh",
    argv: (c) => ({ cmd: "pdsh", args: ["-S", "-R", "rsh", "-f", String(c.fanout), "-w", `^${c.hostsFile}`, c.command] }) },
  { name: "clush -R rsh", family: "rsh", ours: false, output: "prefix", needs: "/usr/bin/clush",
    argv: (c) => ({ cmd: "clush", args: ["-R", "rsh", "-f", String(c.fanout), "-l", "root", "--hostfile", c.hostsFile, c.command] }) },
  { name: "multi-rsh -R rsh", family: "rsh", ours: true, output: "prefix", needs: MULTI_RSH,
    argv: (c) => ({ cmd: process.execPath, args: [MULTI_RSH, "-R", "rsh", "-t", OUR_TIMEOUT_S, "-p", String(c.fanout), "-l", c.hostsFile, c.command] }) },
  { name: "pdsh -R ssh", family: "ssh", ours: false, output: "prefix", needs: "/usr/bin/pdsh",
    argv: (c) => ({ cmd: "pdsh", args: ["-R", "ssh", "-f", String(c.fanout), "-w", `^${c.hostsFile}`, c.command], env: { PDSH_SSH_ARGS_APPEND: `-F ${c.tb.files.sshConfig}` } }) },
  { name: "pssh", family: "ssh", ours: false, output: "pssh", needs: "/usr/bin/parallel-ssh",
    argv: (c) => ({ cmd: "parallel-ssh", args: ["-i", "-p", String(c.fanout), "-t", "120", "-h", c.hostsFile, "-x", `-F ${c.tb.files.sshConfig}`, c.command] }) },
  { name: "clush -R ssh", family: "ssh", ours: false, output: "prefix", needs: "/usr/bin/clush",
    argv: (c) => ({ cmd: "clush", args: ["-f", String(c.fanout), "-o", `-F ${c.tb.files.sshConfig}`, "--hostfile", c.hostsFile, c.command] }) },
  { name: "xargs -P ssh", family: "ssh", ours: false, output: "bare", needs: "/usr/bin/xargs",
    argv: (c) => ({ cmd: "xargs", args: ["-P", String(c.fanout), "-I{}", "ssh", "-F", c.tb.files.sshConfig, "{}", c.command], stdinFile: c.hostsFile }) },
  { name: "GNU parallel", family: "ssh", ours: false, output: "tab", needs: "/usr/bin/parallel",
    argv: (c) => ({ cmd: "parallel", args: ["--will-cite", "-j", String(c.fanout), "--tag", "ssh", "-F", c.tb.files.sshConfig, "{}", c.command, "::::", c.hostsFile] }) },
  { name: "multi-rsh -R ssh", family: "ssh", ours: true, output: "prefix", needs: MULTI_RSH,
    argv: (c) => ({ cmd: process.execPath, args: [MULTI_RSH, "-R", "ssh", "-t", OUR_TIMEOUT_S, "-F", c.tb.files.sshConfig, "-p", String(c.fanout), "-l", c.hostsFile, c.command] }) },
  { name: "multi-rsh -R openssh", family: "ssh", ours: true, output: "prefix", needs: MULTI_RSH,
    argv: (c) => ({ cmd: process.execPath, args: [MULTI_RSH, "-R", "openssh", "-t", OUR_TIMEOUT_S, "-F", c.tb.files.sshConfig, "-p", String(c.fanout), "-l", c.hostsFile, c.command] }) },
  // The same as an exec template: the system ssh per host, through the relay like -R openssh.
  { name: "multi-rsh -R exec", family: "ssh", ours: true, output: "prefix", needs: MULTI_RSH,
    argv: (c) => ({ cmd: process.execPath, args: [MULTI_RSH, "-R", "exec", "-t", OUR_TIMEOUT_S, "-p", String(c.fanout), "-l", c.hostsFile, "--", "ssh", "-F", c.tb.files.sshConfig, "%h", c.command] }) },
  // Without the relay (what a machine without netcat-openbsd gets: ssh connects and closes first
  // itself), for the before/after of the relay in the same run.
  { name: "multi-rsh -R openssh, no relay", family: "ssh", ours: true, output: "prefix", needs: MULTI_RSH,
    argv: (c) => ({ cmd: process.execPath, args: [MULTI_RSH, "-R", "openssh", "-t", OUR_TIMEOUT_S, "-F", c.tb.files.sshConfig, "-p", String(c.fanout), "-l", c.hostsFile, c.command], env: { PATH: pathWithoutNetcat(c.tb) } }) },
  { name: "multi-rsh -R exec, no relay", family: "ssh", ours: true, output: "prefix", needs: MULTI_RSH,
    argv: (c) => ({ cmd: process.execPath, args: [MULTI_RSH, "-R", "exec", "-t", OUR_TIMEOUT_S, "-p", String(c.fanout), "-l", c.hostsFile, "--", "ssh", "-F", c.tb.files.sshConfig, "%h", c.command], env: { PATH: pathWithoutNetcat(c.tb) } }) },
];

/** A PATH directory with ssh and nohup only, so that multi-rsh finds no netcat-openbsd and runs without the relay. */
function pathWithoutNetcat(tb: Testbed): string {
  const dir = join(tb.files.stateDir, "path-without-nc");
  mkdirSync(dir, { recursive: true });
  for (const p of ["ssh", "nohup"]) if (!existsSync(join(dir, p))) symlinkSync(`/usr/bin/${p}`, join(dir, p));
  return dir;
}

interface RunRecord {
  tool: string;
  hosts: number;
  fanout: number;
  command: CommandName;
  round: number;
  wallMs: number;
  cpuMs: number;
  peakRssBytes: number;
  clientTimeWait: number;
  hostTimeWait: number;
  failures: number;
  /** Most file descriptors the tool's own process (not its children) held at once, sampled. */
  peakFds: number;
  exitCode: number | null;
  /** Reserved ports (512-1023) held by sockets of other programs just before the run. */
  reservedPortsBusy: number;
  /** Variables removed from the tool's environment (ENV_REMOVED); absent in runs from before it existed. */
  envRemoved?: string[];
  note?: string;
}

interface Row {
  tool: string;
  family: Family;
  ours: boolean;
  hosts: number;
  fanout: number;
  command: CommandName;
  rounds: number;
  wallMs: number;
  cpuMs: number;
  peakRssBytes: number;
  clientTimeWait: number;
  hostTimeWait: number;
  failures: number;
  /** wall and CPU over the best peer of the same protocol, same hosts and command. */
  wallRatio: number | null;
  cpuRatio: number | null;
}

interface Doc {
  bench: "fanout";
  date: string;
  machine: { kernel: string; cpus: number; memoryBytes: number };
  /** Hosts counts present in rows (a --merge run adds its own); rounds and fan-out are per row. */
  config: { sizes: number[]; kex: string; commands: Record<CommandName, string> };
  testbed: { hosts: number; setupMs: number; hostPssBytes: number };
  rows: Row[];
  runs: RunRecord[];
  skipped: string[];
}

/** Counts, per host, the output lines that are what the command prints, streaming (1 MB × 300 hosts is not kept). */
class OutputCounter {
  private perHost = new Map<string, number>();
  private bare = 0;
  private rest = "";
  private psshHost: string | null = null;
  constructor(private readonly tool: Tool, private readonly command: CommandName, private readonly names: Map<string, string>) {}

  private good(host: string | null, text: string): boolean {
    if (this.command === "hostname") return host === null ? [...this.names.values()].includes(text) : this.names.get(host) === text;
    return text.length === 63 && /^0+$/.test(text);
  }

  private line(l: string): void {
    const o = this.tool.output;
    if (o === "bare") {
      if (this.good(null, l)) this.bare++;
      return;
    }
    if (o === "pssh") {
      const m = /^\[\d+\] \S+ \[(SUCCESS|FAILURE)\] (\S+)/.exec(l);
      if (m) {
        this.psshHost = m[2]!;
        return;
      }
      if (this.psshHost && this.good(this.psshHost, l)) this.perHost.set(this.psshHost, (this.perHost.get(this.psshHost) ?? 0) + 1);
      return;
    }
    const sep = o === "tab" ? "\t" : ": ";
    const i = l.indexOf(sep);
    if (i < 0) return;
    const host = l.slice(0, i);
    if (this.good(host, l.slice(i + sep.length))) this.perHost.set(host, (this.perHost.get(host) ?? 0) + 1);
  }

  push(chunk: string): void {
    const text = this.rest + chunk;
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      this.line(text.slice(start, nl));
      start = nl + 1;
    }
    this.rest = text.slice(start);
  }

  /** Hosts whose output did not arrive whole. */
  failures(hosts: number): number {
    if (this.rest) this.line(this.rest);
    const want = this.command === "hostname" ? 1 : MB_LINES;
    if (this.tool.output === "bare") return hosts - Math.min(hosts, Math.floor(this.bare / want));
    let ok = 0;
    for (const n of this.perHost.values()) if (n === want) ok++;
    return hosts - ok;
  }
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (!process.argv.includes("--keep-env")) for (const k of ENV_REMOVED) delete env[k];
  return env;
}

async function runTool(tool: Tool, tb: Testbed, hostsFile: string, hosts: Testbed["hosts"], command: CommandName, commandLine: string, fanout: number, round: number): Promise<RunRecord> {
  await cleanSockets(tb, hosts);
  const reservedPortsBusy = tool.family === "rsh" ? reservedBusy(tb.net) : 0;
  const a = tool.argv({ hostsFile, addrs: hosts.map((h) => h.address), command: commandLine, fanout, tb });
  const timeFile = join(tb.files.stateDir, "bench-time.txt");
  const names = new Map(hosts.map((h) => [h.address, h.name]));
  const counter = new OutputCounter(tool, command, names);
  // Output goes to a file, as a user's redirection would, and is counted after the clock stops: a
  // reader in this process would be the bottleneck and slow every tool by its own speed.
  const outFile = join(tb.files.stateDir, "bench-out.txt");
  const outFd = openSync(outFile, "w");
  const inFd = a.stdinFile ? openSync(a.stdinFile, "r") : null;
  const started = performance.now();
  const child = spawn("/usr/bin/time", ["-f", "%e %U %S %M", "-o", timeFile, a.cmd, ...a.args], {
    stdio: [inFd ?? "ignore", outFd, "pipe"],
    env: { ...cleanEnv(), ...(a.env ?? {}), NO_PROGRESS: "1" },
  });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    if (stderr.length < 4000) stderr += s;
  });
  // GNU time is the child; the tool is its only child.
  const rss = samplePeak(() => treeRss(child.pid!), 50);
  const fds = samplePeak(() => {
    const pid = firstChild(child.pid!);
    return pid === null ? 0 : openFds(pid);
  }, 50);
  const killer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
  const exitCode = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  const wallMs = Math.round(performance.now() - started);
  let peak = rss.stop();
  const peakFds = fds.stop();
  clearTimeout(killer);
  closeSync(outFd);
  if (inFd !== null) closeSync(inFd);
  for await (const chunk of createReadStream(outFile, { encoding: "utf8", highWaterMark: 1 << 20 })) counter.push(chunk as string);
  rmSync(outFile);
  let cpuMs = 0;
  try {
    const f = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
    cpuMs = Math.round(((f[1] ?? 0) + (f[2] ?? 0)) * 1000);
    peak = Math.max(peak, (f[3] ?? 0) * 1024);
  } catch {
    // Killed before GNU time wrote anything.
  }
  const hostTw = [...hostTimeWaits(tb, hosts).values()].reduce((x, y) => x + y, 0);
  const failures = counter.failures(hosts.length);
  const rec: RunRecord = {
    tool: tool.name, hosts: hosts.length, fanout, command, round, wallMs, cpuMs, peakRssBytes: peak,
    clientTimeWait: timeWaitTowards(tb.net), hostTimeWait: hostTw, failures, peakFds, exitCode, reservedPortsBusy,
    envRemoved: process.argv.includes("--keep-env") ? [] : ENV_REMOVED.filter((k) => k in process.env),
  };
  if (failures > 0) rec.note = stderr.split("\n").filter(Boolean).slice(0, 3).join(" | ").slice(0, 300);
  return rec;
}

function summarise(runs: RunRecord[]): Row[] {
  const rows: Row[] = [];
  const keys = [...new Set(runs.map((r) => `${r.hosts}|${r.command}|${r.tool}`))];
  for (const key of keys) {
    const rs = runs.filter((r) => `${r.hosts}|${r.command}|${r.tool}` === key);
    const tool = TOOLS.find((t) => t.name === rs[0]!.tool)!;
    rows.push({
      tool: tool.name, family: tool.family, ours: tool.ours, hosts: rs[0]!.hosts, fanout: rs[0]!.fanout, command: rs[0]!.command, rounds: rs.length,
      wallMs: median(rs.map((r) => r.wallMs)),
      cpuMs: median(rs.map((r) => r.cpuMs)),
      peakRssBytes: Math.max(...rs.map((r) => r.peakRssBytes)),
      clientTimeWait: median(rs.map((r) => r.clientTimeWait)),
      hostTimeWait: median(rs.map((r) => r.hostTimeWait)),
      failures: rs.reduce((a, r) => a + r.failures, 0),
      wallRatio: null,
      cpuRatio: null,
    });
  }
  for (const r of rows) {
    // The best peer is the fastest one that lost no host: a peer that drops hosts is not fast.
    const peers = rows.filter((p) => !p.ours && p.family === r.family && p.hosts === r.hosts && p.command === r.command && p.failures === 0);
    if (peers.length === 0) continue;
    r.wallRatio = Math.round((r.wallMs / Math.min(...peers.map((p) => p.wallMs))) * 100) / 100;
    r.cpuRatio = Math.round((r.cpuMs / Math.max(1, Math.min(...peers.map((p) => p.cpuMs)))) * 100) / 100;
  }
  return rows;
}

function table(rows: Row[]): string {
  const head = ["hosts", "command", "tool", "wall s", "×best", "cpu s", "×best", "peak RSS MiB", "client TW", "host TW", "failures"];
  const lines = rows.map((r) => [
    String(r.hosts), r.command, r.tool, (r.wallMs / 1000).toFixed(2), r.wallRatio?.toFixed(2) ?? "-", (r.cpuMs / 1000).toFixed(2),
    r.cpuRatio?.toFixed(2) ?? "-", (r.peakRssBytes / 2 ** 20).toFixed(0), String(r.clientTimeWait), String(r.hostTimeWait), String(r.failures),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (l: string[]) => l.map((c, i) => (i <= 2 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  return [fmt(head), ...lines.map(fmt)].join("\n");
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** One panel per (hosts, command): horizontal bars of wall time, ours in a second colour, failures marked. */
export function renderSvg(doc: Doc): string {
  const panels = [...new Set(doc.rows.map((r) => `${r.hosts}|${r.command}`))];
  const barH = 16;
  const gap = 4;
  const labelW = 170;
  const plotW = 420;
  const panelW = labelW + plotW + 160;
  const cols = 2;
  const panelHeights = panels.map((p) => 40 + doc.rows.filter((r) => `${r.hosts}|${r.command}` === p).length * (barH + gap));
  const rowsOfPanels = Math.ceil(panels.length / cols);
  const rowH = Math.max(0, ...panelHeights) + 20;
  const width = panelW * cols + 20;
  const lastRowH = Math.max(0, ...panelHeights.slice((rowsOfPanels - 1) * cols)) + 20;
  const height = 70 + (rowsOfPanels - 1) * rowH + lastRowH + 20;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  out.push(`<text x="10" y="22" font-size="15" font-weight="bold">Fan-out: wall time per run (median of the rounds, lower is better)</text>`);
  out.push(`<text x="10" y="42" fill="#555">${esc(`${doc.date.slice(0, 10)} · Linux ${doc.machine.kernel} · ${doc.machine.cpus} CPUs · testbed hosts in network namespaces (in.rshd, OpenSSH sshd) · ssh kex ${doc.config.kex}`)}</text>`);
  panels.forEach((p, k) => {
    const [hosts, command] = p.split("|");
    const rows = doc.rows.filter((r) => `${r.hosts}|${r.command}` === p);
    const x0 = 10 + (k % cols) * panelW;
    const y0 = 60 + Math.floor(k / cols) * rowH;
    const max = Math.max(...rows.map((r) => r.wallMs), 1);
    out.push(`<text x="${x0}" y="${y0 + 16}" font-weight="bold">${esc(`${hosts} hosts, ${command === "1MB" ? "1 MB of output each" : "hostname"} (fan-out ${rows[0]!.fanout}, ${rows[0]!.rounds} round${rows[0]!.rounds > 1 ? "s" : ""})`)}</text>`);
    rows.forEach((r, i) => {
      const y = y0 + 28 + i * (barH + gap);
      const w = Math.max(1, Math.round((r.wallMs / max) * plotW));
      const fill = r.ours ? "#d9480f" : r.family === "rsh" ? "#74a9cf" : "#a6a6a6";
      out.push(`<text x="${x0 + labelW - 6}" y="${y + barH - 4}" text-anchor="end">${esc(r.tool)}</text>`);
      out.push(`<rect x="${x0 + labelW}" y="${y}" width="${w}" height="${barH}" fill="${fill}"/>`);
      const label = `${(r.wallMs / 1000).toFixed(2)} s${r.failures ? ` · ${r.failures} failed` : ""}${r.clientTimeWait ? ` · ${r.clientTimeWait} TW` : ""}`;
      out.push(`<text x="${x0 + labelW + w + 4}" y="${y + barH - 4}" fill="${r.failures ? "#c00" : "#222"}">${esc(label)}</text>`);
    });
  });
  const ly = height - 12;
  out.push(`<rect x="10" y="${ly - 10}" width="12" height="12" fill="#d9480f"/><text x="26" y="${ly}">multi-rsh (ours)</text>`);
  out.push(`<rect x="150" y="${ly - 10}" width="12" height="12" fill="#74a9cf"/><text x="166" y="${ly}">rsh peers</text>`);
  out.push(`<rect x="250" y="${ly - 10}" width="12" height="12" fill="#a6a6a6"/><text x="266" y="${ly}">ssh peers</text>`);
  out.push(`<text x="370" y="${ly}" fill="#555">TW = TIME_WAIT left on the client after the run</text>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

async function main(): Promise<number> {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    // The usage is this file's opening comment, from "Run (root)" on.
    const head = readFileSync(fileURLToPath(import.meta.url), "utf8").split("*/")[0]!;
    console.log(head.slice(head.indexOf(" * Run (root)")).replace(/^ \* ?/gm, "").trim());
    console.log(`tools (--tools, comma-separated): ${TOOLS.map((t) => t.name).join(", ")}`);
    return 0;
  }
  if (process.argv.includes("--svg-only")) {
    const doc = JSON.parse(readFileSync(RESULTS, "utf8")) as Doc;
    writeFileSync(SVG, renderSvg(doc));
    console.log(`wrote ${SVG}`);
    return 0;
  }
  const why = missingRequirement();
  if (why) {
    console.error(`bench/fanout: ${why}`);
    return 2;
  }
  const sizes = arg("sizes", "100,300").split(",").map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 1000)) {
    console.error("bench/fanout: --sizes takes hosts counts 1-1000, e.g. 100,300");
    return 2;
  }
  // One count, or one per size ("3,1": the slow peers take minutes a round at 300 hosts).
  const roundsList = arg("rounds", "3").split(",").map(Number);
  const roundsFor = (k: number): number => roundsList[Math.min(k, roundsList.length - 1)]!;
  const rounds = Math.max(...roundsList);
  const fanout = Number(arg("fanout", "64"));
  const budgetMs = Number(arg("budget", "1500")) * 1000;
  const only = arg("tools", "");
  const deadline = Date.now() + budgetMs;
  const skipped: string[] = [];
  const tools = TOOLS.filter((t) => {
    if (only && !only.split(",").some((o) => t.name.includes(o))) return false;
    if (!existsSync(t.needs)) {
      skipped.push(`${t.name}: ${t.needs} missing${t.ours ? " (npm run build)" : ""}`);
      return false;
    }
    return true;
  });

  const maxHosts = Math.max(...sizes);
  // Its own prefix and /16 let this bench run beside other testbeds (the default is the shared aitb/10.233).
  const prefix = arg("prefix", "aitb");
  const netArg = arg("net", "10.233");
  const tb = await up({ hosts: maxHosts, prefix, net: netArg });
  assertRouteOverBridge(tb.hosts.map((h) => h.address), tb.bridge);
  console.log(`testbed: ${maxHosts} hosts (${tb.created ? `up in ${(tb.setupMs / 1000).toFixed(1)} s` : "already up"})`);
  const mbScript = join(tb.files.stateDir, "bench-1mb.sh");
  writeFileSync(mbScript, `yes ${"0".repeat(63)} | head -n ${MB_LINES}\n`);
  const commands: Record<CommandName, string> = { hostname: "hostname", "1MB": `sh ${mbScript}` };

  const runs: RunRecord[] = [];
  outer: for (const [k, n] of sizes.entries()) {
    const hosts = tb.hosts.slice(0, n);
    const hostsFile = join(tb.files.stateDir, `bench-hosts-${n}`);
    writeFileSync(hostsFile, hosts.map((h) => h.address).join("\n") + "\n");
    for (let round = 1; round <= roundsFor(k); round++) {
      for (const command of (["hostname", "1MB"] as const).filter((c) => arg("commands", "hostname,1MB").split(",").includes(c))) {
        const order = tools.map((_, i) => tools[(i + round - 1) % tools.length]!);
        for (const tool of order) {
          if (Date.now() > deadline) {
            skipped.push(`budget of ${budgetMs / 1000} s spent: stopped before ${n} hosts round ${round} ${command} ${tool.name}`);
            break outer;
          }
          const rec = await runTool(tool, tb, hostsFile, hosts, command, commands[command], Math.min(fanout, n), round);
          runs.push(rec);
          console.log(
            `${n} hosts r${round} ${command.padEnd(8)} ${tool.name.padEnd(22)} ${(rec.wallMs / 1000).toFixed(2)} s wall, ${(rec.cpuMs / 1000).toFixed(2)} s cpu, ` +
              `${rec.failures} failed, TW client ${rec.clientTimeWait} hosts ${rec.hostTimeWait}${rec.note ? ` (${rec.note})` : ""}`,
          );
        }
      }
    }
  }
  await cleanSockets(tb, tb.hosts);
  // --merge: this run's (hosts, tool) pairs replace theirs in the existing results, the rest stays
  // (the 1,000-host run is done apart, with fewer tools and a larger fan-out).
  if (process.argv.includes("--merge") && existsSync(RESULTS)) {
    const old = JSON.parse(readFileSync(RESULTS, "utf8")) as Doc;
    // Keyed by command too: a hostname-only rerun keeps the 1 MB runs of the same tools.
    const key = (r: RunRecord) => `${r.hosts}|${r.command}|${r.tool}`;
    const fresh = new Set(runs.map(key));
    runs.unshift(...old.runs.filter((r) => !fresh.has(key(r))));
    skipped.unshift(...old.skipped);
  }
  const rows = summarise(runs).sort((a, b) => a.hosts - b.hosts || a.command.localeCompare(b.command) * -1);
  const doc: Doc = {
    bench: "fanout",
    date: new Date().toISOString(),
    machine: { kernel: release(), cpus: cpus().length, memoryBytes: totalmem() },
    config: { sizes: [...new Set(runs.map((r) => r.hosts))].sort((a, b) => a - b), kex: "curve25519-sha256", commands },
    testbed: { hosts: tb.hosts.length, setupMs: tb.setupMs, hostPssBytes: tb.hostPssBytes },
    rows,
    runs,
    skipped,
  };
  console.log("\n" + table(rows));
  for (const s of skipped) console.log(`skipped: ${s}`);
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileSync(RESULTS, JSON.stringify(doc, null, 2) + "\n");
  mkdirSync(dirname(SVG), { recursive: true });
  writeFileSync(SVG, renderSvg(doc));
  console.log(`\nwrote ${RESULTS} and ${SVG}; the testbed stays up (npm run testbed -- down)`);
  return 0;
}

main().then((c) => (process.exitCode = c));
