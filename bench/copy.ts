/**
 * bench/copy: one 10 MB file to 100 testbed hosts, by multi-rsh and its peers in the same run:
 * `pdcp -R rsh` (pdsh's copier, pdcp on the hosts), `clush -R rsh --copy` (rcp), `clush --copy`
 * (scp over ssh), `pscp.pssh` (parallel-scp), and `node bin/multi-rsh.js --copy` over -R rsh
 * (rcp -t on the hosts) and -R ssh (scp -t in an ssh2 channel).
 *
 * OpenSSH 9's scp speaks SFTP by default and the testbed's sshd has no sftp subsystem: the peers'
 * scp gets -O, the scp protocol (clush: its scp_options, since -o goes to ssh only), which is also what ours speaks (scp -t on the host).
 *
 * Same fan-out for every tool (--fanout, default 32) and the same ssh client config (the testbed's:
 * curve25519-sha256 key exchange for OpenSSH and ssh2 alike). Rounds rotate the order of the tools;
 * before every run the destination is emptied on every host and this machine's sockets towards the
 * testbed are destroyed (`ss -K`), so no run inherits another's TIME_WAIT (nor, for pdcp, a shortage
 * of reserved ports).
 *
 * Per run: wall time and client CPU (user+sys of the tool and the children it waited for, GNU time),
 * hosts whose copy is not byte for byte the source (sha256 of each host's file, read from its /run on
 * disk), and the TIME_WAIT left on this machine towards the testbed. Medians over rounds; ratios
 * against the best peer that lost no host (all peers, and the peers of the same protocol).
 *
 * Run (root): npm run build && npm run bench:copy [-- --hosts 100 --rounds 3 --fanout 32 --prefix aibc --net 10.237]
 *   --only REGEX  a subset of the tools (by name);  --cipher NAME  every ssh tool on that cipher
 *   --rcopy       the other way: the same file from every host (rpdcp, clush --rcopy, pslurp and
 *                 ours --rcopy), each host's copy checked where its tool puts it; copy-from.json
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assertRouteOverBridge, down, missingRequirement, run, up, type Testbed } from "../testbed/testbed.js";
import { arg } from "./lib/options.js";
import { median } from "./lib/stats.js";
import { timeWaitTowards } from "./lib/testbed-sockets.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS = join(ROOT, "bench", "results", "copy.json");
const MULTI_RSH = join(ROOT, "bin", "multi-rsh.js");
const SIZE = 10 * 1000 * 1000;
const RUN_TIMEOUT_MS = 180_000;
const DEST = "/run/copy-dst";
const NAME = "payload.bin";

type Family = "rsh" | "ssh";
interface Tool {
  name: string;
  family: Family;
  ours: boolean;
  needs: string;
  argv(c: { hostsFile: string; src: string; fanout: number; tb: Testbed; sshConfig: string }): string[];
  /** --rcopy: where the tool puts the file of `host` under the local folder `dir`. */
  landed?(dir: string, host: string): string;
}

const TOOLS: Tool[] = [
  { name: "pdcp -R rsh", family: "rsh", ours: false, needs: "/usr/bin/pdcp", argv: (c) => ["pdcp", "-R", "rsh", "-f", String(c.fanout), "-w", `^${c.hostsFile}`, c.src, DEST] },
  { name: "clush -R rsh --copy", family: "rsh", ours: false, needs: "/usr/bin/clush", argv: (c) => ["clush", "-R", "rsh", "-f", String(c.fanout), "-l", "root", "--hostfile", c.hostsFile, "--copy", c.src, "--dest", DEST] },
  { name: "multi-rsh -R rsh --copy", family: "rsh", ours: true, needs: MULTI_RSH, argv: (c) => [process.execPath, MULTI_RSH, "-R", "rsh", "-p", String(c.fanout), "-l", c.hostsFile, "--copy", c.src, "--dest", DEST] },
  { name: "clush --copy (scp)", family: "ssh", ours: false, needs: "/usr/bin/clush", argv: (c) => ["clush", "-f", String(c.fanout), "-o", `-F ${c.sshConfig}`, "-O", `scp_options=-O -F ${c.sshConfig}`, "--hostfile", c.hostsFile, "--copy", c.src, "--dest", DEST] },
  { name: "pscp.pssh", family: "ssh", ours: false, needs: "/usr/bin/parallel-scp", argv: (c) => ["parallel-scp", "-p", String(c.fanout), "-t", "120", "-h", c.hostsFile, "-x", `-F ${c.sshConfig} -O`, c.src, DEST] },
  { name: "multi-rsh -R ssh --copy", family: "ssh", ours: true, needs: MULTI_RSH, argv: (c) => [process.execPath, MULTI_RSH, "-R", "ssh", "-F", c.sshConfig, "-p", String(c.fanout), "-l", c.hostsFile, "--copy", c.src, "--dest", DEST] },
];

/** --rcopy: `c.src` is the local folder the files come to; every host's file is DEST/NAME. */
const REMOTE_SRC = `${DEST}/${NAME}`;
const dotHost = (dir: string, host: string) => join(dir, `${NAME}.${host}`);
/** pslurp's DIR/HOST/NAME; Debian's pssh 2.3 names the folder HOST:None when the hosts file gives no port. */
const slurped = (dir: string, host: string) => [join(dir, host, NAME), join(dir, `${host}:None`, NAME)].find((p) => existsSync(p)) ?? join(dir, host, NAME);
const FROM_TOOLS: Tool[] = [
  { name: "rpdcp -R rsh", family: "rsh", ours: false, needs: "/usr/bin/rpdcp", landed: dotHost, argv: (c) => ["rpdcp", "-R", "rsh", "-f", String(c.fanout), "-w", `^${c.hostsFile}`, REMOTE_SRC, c.src] },
  { name: "clush -R rsh --rcopy", family: "rsh", ours: false, needs: "/usr/bin/clush", landed: dotHost, argv: (c) => ["clush", "-R", "rsh", "-f", String(c.fanout), "-l", "root", "--hostfile", c.hostsFile, "--rcopy", REMOTE_SRC, "--dest", c.src] },
  { name: "multi-rsh -R rsh --rcopy", family: "rsh", ours: true, needs: MULTI_RSH, landed: dotHost, argv: (c) => [process.execPath, MULTI_RSH, "-R", "rsh", "-p", String(c.fanout), "-l", c.hostsFile, "--rcopy", REMOTE_SRC, "--dest", c.src] },
  { name: "clush --rcopy (scp)", family: "ssh", ours: false, needs: "/usr/bin/clush", landed: dotHost, argv: (c) => ["clush", "-f", String(c.fanout), "-o", `-F ${c.sshConfig}`, "-O", `scp_options=-O -F ${c.sshConfig}`, "--hostfile", c.hostsFile, "--rcopy", REMOTE_SRC, "--dest", c.src] },
  { name: "pslurp", family: "ssh", ours: false, needs: "/usr/bin/parallel-slurp", landed: slurped, argv: (c) => ["parallel-slurp", "-p", String(c.fanout), "-t", "120", "-h", c.hostsFile, "-x", `-F ${c.sshConfig} -O`, "-L", c.src, REMOTE_SRC, NAME] },
  { name: "multi-rsh -R ssh --rcopy", family: "ssh", ours: true, needs: MULTI_RSH, landed: dotHost, argv: (c) => [process.execPath, MULTI_RSH, "-R", "ssh", "-F", c.sshConfig, "-p", String(c.fanout), "-l", c.hostsFile, "--rcopy", REMOTE_SRC, "--dest", c.src] },
];
const FROM = process.argv.includes("--rcopy");

interface RunRecord {
  tool: string;
  round: number;
  wallMs: number;
  cpuMs: number;
  badHosts: number;
  clientTimeWait: number;
  exitCode: number | null;
  note?: string;
}

interface Row {
  tool: string;
  family: Family;
  ours: boolean;
  rounds: number;
  wallMs: number;
  cpuMs: number;
  badHosts: number;
  clientTimeWait: number;
  /** Over the best peer (any protocol) that lost no host. */
  wallVsBest: number | null;
  cpuVsBest: number | null;
  /** Over the best peer of the same protocol that lost no host. */
  wallVsFamily: number | null;
  cpuVsFamily: number | null;
}

/**
 * --cipher NAME: every ssh tool on that one cipher (a like-for-like row: by default OpenSSH takes
 * chacha20-poly1305 and ours AES-GCM, and the hosts' sshd pays differently for each).
 */
const CIPHER = process.argv.includes("--cipher") ? arg("cipher", "") : null;

function sshConfigFor(tb: Testbed): string {
  if (!CIPHER) return tb.files.sshConfig;
  const path = join(tb.files.stateDir, `ssh_config.${CIPHER.replace(/[^A-Za-z0-9.-]/g, "_")}`);
  if (!existsSync(path)) writeFileSync(path, readFileSync(tb.files.sshConfig, "utf8").replace(/^(\s*KexAlgorithms .*)$/m, `$1\n  Ciphers ${CIPHER}`));
  return path;
}

function hostDest(tb: Testbed, index: number): string {
  return join(tb.files.stateDir, "host", String(index), "run", "copy-dst");
}

async function runTool(tool: Tool, tb: Testbed, src: string, want: string, fanout: number, round: number): Promise<RunRecord> {
  for (const h of tb.hosts) {
    rmSync(hostDest(tb, h.index), { recursive: true, force: true });
    mkdirSync(hostDest(tb, h.index));
    // --rcopy: every host holds the file, and the local folder starts empty.
    if (FROM) copyFileSync(src, join(hostDest(tb, h.index), NAME));
  }
  const localDir = join(tb.files.stateDir, "rcopy-dst");
  if (FROM) {
    rmSync(localDir, { recursive: true, force: true });
    mkdirSync(localDir);
  }
  await run("ss", ["-t", "-K", "state", "all", "dst", `${tb.net}.0.0/16`], { timeoutMs: 30_000 });
  const timeFile = join(tb.files.stateDir, "bench-copy-time.txt");
  const [cmd, ...args] = tool.argv({ hostsFile: tb.files.hosts, src: FROM ? localDir : src, fanout, tb, sshConfig: sshConfigFor(tb) });
  const started = performance.now();
  const child = spawn("/usr/bin/time", ["-f", "%e %U %S", "-o", timeFile, cmd!, ...args], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, NO_PROGRESS: "1" } });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    if (stderr.length < 4000) stderr += s;
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
  const exitCode = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  const wallMs = Math.round(performance.now() - started);
  clearTimeout(killer);
  const clientTw = timeWaitTowards(tb.net);
  let cpuMs = 0;
  try {
    const f = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
    cpuMs = Math.round(((f[1] ?? 0) + (f[2] ?? 0)) * 1000);
  } catch {
    // Killed before GNU time wrote anything.
  }
  let bad = 0;
  for (const h of tb.hosts) {
    const p = FROM ? tool.landed!(localDir, h.address) : join(hostDest(tb, h.index), NAME);
    if (!existsSync(p) || createHash("sha256").update(readFileSync(p)).digest("hex") !== want) bad++;
  }
  if (FROM) rmSync(localDir, { recursive: true, force: true });
  const rec: RunRecord = { tool: tool.name, round, wallMs, cpuMs, badHosts: bad, clientTimeWait: clientTw, exitCode };
  if (bad > 0 || exitCode !== 0) rec.note = stderr.split("\n").filter(Boolean).slice(0, 3).join(" | ").slice(0, 300);
  return rec;
}

function summarise(runs: RunRecord[], tools: Tool[]): Row[] {
  const rows: Row[] = tools
    .filter((t) => runs.some((r) => r.tool === t.name))
    .map((t) => {
      const rs = runs.filter((r) => r.tool === t.name);
      return {
        tool: t.name, family: t.family, ours: t.ours, rounds: rs.length,
        wallMs: median(rs.map((r) => r.wallMs)), cpuMs: median(rs.map((r) => r.cpuMs)),
        badHosts: rs.reduce((a, r) => a + r.badHosts, 0), clientTimeWait: median(rs.map((r) => r.clientTimeWait)),
        wallVsBest: null, cpuVsBest: null, wallVsFamily: null, cpuVsFamily: null,
      };
    });
  const ratio = (a: number, b: number) => Math.round((a / Math.max(1, b)) * 100) / 100;
  for (const r of rows) {
    const peers = rows.filter((p) => !p.ours && p.badHosts === 0);
    const family = peers.filter((p) => p.family === r.family);
    if (peers.length) {
      r.wallVsBest = ratio(r.wallMs, Math.min(...peers.map((p) => p.wallMs)));
      r.cpuVsBest = ratio(r.cpuMs, Math.min(...peers.map((p) => p.cpuMs)));
    }
    if (family.length) {
      r.wallVsFamily = ratio(r.wallMs, Math.min(...family.map((p) => p.wallMs)));
      r.cpuVsFamily = ratio(r.cpuMs, Math.min(...family.map((p) => p.cpuMs)));
    }
  }
  return rows;
}

function table(rows: Row[]): string {
  const head = ["tool", "wall s", "×best", "×same", "cpu s", "×best", "×same", "client TW", "bad hosts"];
  const f = (x: number | null) => (x === null ? "-" : x.toFixed(2));
  const lines = rows.map((r) => [r.tool, (r.wallMs / 1000).toFixed(2), f(r.wallVsBest), f(r.wallVsFamily), (r.cpuMs / 1000).toFixed(2), f(r.cpuVsBest), f(r.cpuVsFamily), String(r.clientTimeWait), String(r.badHosts)]);
  const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (l: string[]) => l.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  return [fmt(head), ...lines.map(fmt)].join("\n");
}

async function main(): Promise<void> {
  const needs = missingRequirement();
  if (needs) {
    process.stderr.write(`bench/copy: ${needs}\n`);
    process.exitCode = 2;
    return;
  }
  const hosts = Number(arg("hosts", "100"));
  const rounds = Number(arg("rounds", "3"));
  const fanout = Number(arg("fanout", "32"));
  const prefix = arg("prefix", "aibc");
  const net = arg("net", "10.237");
  // --only REGEX: a subset of the tools (e.g. --only ssh), written to copy-only.json, not copy.json.
  const only = process.argv.includes("--only") ? new RegExp(arg("only", "")) : null;
  const all = FROM ? FROM_TOOLS : TOOLS;
  const wanted = only ? all.filter((t) => only.test(t.name)) : all;
  const tools = wanted.filter((t) => existsSync(t.needs));
  const skipped = wanted.filter((t) => !existsSync(t.needs)).map((t) => `${t.name}: ${t.needs} not installed`);
  // A subset or a pinned cipher is written beside copy.json, never over it.
  const base = FROM ? RESULTS.replace(/copy\.json$/, "copy-from.json") : RESULTS;
  const results = only || CIPHER ? base.replace(/\.json$/, `${only ? "-only" : ""}${CIPHER ? `-${CIPHER.replace(/[^A-Za-z0-9.-]/g, "_")}` : ""}.json`) : base;
  const tb = await up({ hosts, prefix, net });
  try {
    assertRouteOverBridge(tb.hosts.map((h) => h.address), tb.bridge);
    const src = join(tb.files.stateDir, NAME);
    const data = Buffer.alloc(SIZE);
    for (let at = 0; at < SIZE; at += 32) createHash("sha256").update(`copy${at}`).digest().copy(data, at);
    writeFileSync(src, data);
    const want = createHash("sha256").update(data).digest("hex");
    const runs: RunRecord[] = [];
    for (let round = 0; round < rounds; round++) {
      const order = tools.map((_, i) => tools[(i + round) % tools.length]!);
      for (const t of order) {
        const rec = await runTool(t, tb, src, want, fanout, round);
        runs.push(rec);
        process.stderr.write(`round ${round + 1}/${rounds} ${t.name}: ${(rec.wallMs / 1000).toFixed(2)} s, cpu ${(rec.cpuMs / 1000).toFixed(2)} s, bad ${rec.badHosts}, client TIME_WAIT ${rec.clientTimeWait}${rec.note ? ` (${rec.note})` : ""}\n`);
      }
    }
    const rows = summarise(runs, tools);
    const doc = {
      bench: FROM ? "copy-from" : "copy",
      date: new Date().toISOString(),
      machine: { kernel: release(), cpus: cpus().length, memoryBytes: totalmem() },
      config: { hosts, rounds, fanout, bytes: SIZE, kex: "curve25519-sha256", dest: DEST, ...(only ? { only: only.source } : {}), ...(CIPHER ? { cipher: CIPHER } : {}) },
      testbed: { hosts: tb.hosts.length, setupMs: tb.setupMs },
      rows,
      runs,
      skipped,
    };
    mkdirSync(dirname(RESULTS), { recursive: true });
    writeFileSync(results, JSON.stringify(doc, null, 2) + "\n");
    process.stdout.write(`${hosts} hosts, ${SIZE / 1e6} MB each ${FROM ? "from" : "to"} every host, fan-out ${fanout}, medians of ${rounds}\n${table(rows)}\n`);
    for (const s of skipped) process.stdout.write(`skipped: ${s}\n`);
    process.stdout.write(`written: ${results}\n`);
  } finally {
    for (const h of tb.hosts) rmSync(hostDest(tb, h.index), { recursive: true, force: true });
    await down({ prefix });
  }
}

await main();
