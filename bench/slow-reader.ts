/**
 * bench/slow-reader: one host sends --mb MB (1000-byte lines) into a reader that sleeps first,
 * `TOOL | (sleep --sleep; wc -c)`, as an operator's pipeline meets it. Per tool, in the same run:
 * bytes that reached the reader (and whether that is all of them), the tool's exit status, peak RSS
 * (GNU time's %M) and wall time. Tools: ours `-R exec`, and `pdsh -R exec` on the same host (the
 * peer that reads with backpressure: its output thread blocks in write(2)); ours `-R rsh` on one demo
 * host of this bench's own (127.0.0.131; pdsh -R rsh does not get past the demo hosts' stderr
 * set-up, "xpoll (setting up stderr)", so it has no row); and, with --before DIR, the multi-rsh of
 * another checkout (e.g. one without backpressure) for the before/after in the same run.
 *
 * Run: npm run build && node --import tsx bench/slow-reader.ts [-- --mb 1000 --sleep 10 --before /work/main]
 * (rsh rows need root: the demo host listens on 514 and pdsh binds reserved ports.)
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDemoHosts } from "../src/remote/demo/rshd.js";
import { arg } from "./lib/options.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

const MB = Number(arg("--mb", "1000"));
const SLEEP_S = Number(arg("--sleep", "10"));
const BEFORE = arg("--before", "");
const LINE = 1000;
const BYTES = MB * 1_000_000;
const CMD = `yes $(head -c ${LINE - 1} /dev/zero | tr '\\0' x) | head -c ${BYTES}`;

interface Row {
  tool: string;
  expectedBytes: number;
  receivedBytes: number;
  complete: boolean;
  exitStatus: number | null;
  peakRssMiB: number | null;
  wallS: number | null;
  stderrTail: string;
}

function shellWord(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Run `argv | (sleep S; wc -c)` under GNU time; bounded by timeout(1) at 10 minutes. Asynchronous:
 * the demo host serving the rsh rows lives in this process.
 */
async function measure(tool: string, argv: string[], prefix: string): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), "aibench-slow-"));
  try {
    const timeFile = join(dir, "time");
    const errFile = join(dir, "err");
    const line = `timeout 600 /usr/bin/time -f '%M %e %x' -o ${timeFile} ${argv.map(shellWord).join(" ")} 2>${errFile} | (sleep ${SLEEP_S}; wc -c)`;
    const child = spawn("bash", ["-c", line], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, NO_PROGRESS: "1" } });
    let stdout = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    await new Promise((r) => child.on("close", r));
    const received = Number(stdout.trim());
    const t = existsSync(timeFile) ? readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ") : [];
    const expectedBytes = BYTES + (BYTES / LINE) * prefix.length;
    const stderr = existsSync(errFile) ? readFileSync(errFile, "utf8") : "";
    return {
      tool,
      expectedBytes,
      receivedBytes: received,
      complete: received === expectedBytes,
      exitStatus: t[2] !== undefined ? Number(t[2]) : null,
      peakRssMiB: t[0] !== undefined ? Math.round(Number(t[0]) / 1024) : null,
      wallS: t[1] !== undefined ? Number(t[1]) : null,
      stderrTail: stderr.trim().split("\n").slice(-2).join(" | ").slice(0, 200),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const ours = join(ROOT, "bin/multi-rsh.js");
  const rows: Row[] = [];
  const exec = (bin: string) => [process.execPath, bin, "-t", "0", "-R", "exec", "-w", "h1", "--", "sh", "-c", CMD];
  rows.push(await measure("multi-rsh -R exec", exec(ours), "h1: "));
  if (BEFORE) rows.push(await measure(`multi-rsh -R exec (${BEFORE})`, exec(join(BEFORE, "bin/multi-rsh.js")), "h1: "));
  rows.push(await measure("pdsh -R exec", ["pdsh", "-R", "exec", "-w", "h1", "sh", "-c", CMD], "h1: "));
  if (process.getuid?.() === 0) {
    const demo = await startDemoHosts({ count: 1, first: 131 });
    try {
      const h = demo.addresses[0]!;
      const rsh = (bin: string) => [process.execPath, bin, "-t", "0", "--port", String(demo.port), "-w", h, CMD];
      rows.push(await measure("multi-rsh -R rsh", rsh(ours), `${h}: `));
      if (BEFORE) rows.push(await measure(`multi-rsh -R rsh (${BEFORE})`, rsh(join(BEFORE, "bin/multi-rsh.js")), `${h}: `));
    } finally {
      await demo.close();
    }
  }
  const pad = (s: string, n: number) => s.padEnd(n);
  console.log(`one host, ${MB} MB in ${LINE}-byte lines, into '| (sleep ${SLEEP_S}; wc -c)'`);
  console.log(`${pad("tool", 44)}${pad("received / expected", 30)}${pad("exit", 6)}${pad("peak RSS", 11)}wall`);
  for (const r of rows) {
    console.log(
      `${pad(r.tool, 44)}${pad(`${r.receivedBytes} / ${r.expectedBytes}${r.complete ? "" : " LOST"}`, 30)}${pad(String(r.exitStatus), 6)}${pad(`${r.peakRssMiB} MiB`, 11)}${r.wallS} s`,
    );
    if (!r.complete && r.stderrTail) console.log(`    stderr: ${r.stderrTail}`);
  }
  const ourRow = rows.find((r) => r.tool === "multi-rsh -R exec");
  const pdshRow = rows.find((r) => r.tool === "pdsh -R exec");
  if (ourRow?.peakRssMiB && pdshRow?.peakRssMiB && ourRow.wallS && pdshRow.wallS) {
    console.log(`ours / pdsh (-R exec): wall ${(ourRow.wallS / pdshRow.wallS).toFixed(2)}x, peak RSS ${(ourRow.peakRssMiB / pdshRow.peakRssMiB).toFixed(1)}x (${ourRow.peakRssMiB} vs ${pdshRow.peakRssMiB} MiB: Node's own ~50 MiB)`);
  }
  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  writeFileSync(
    join(ROOT, "bench/results/slow-reader.json"),
    JSON.stringify({ date: new Date().toISOString(), mb: MB, lineBytes: LINE, sleepS: SLEEP_S, node: process.version, rows }, null, 2) + "\n",
  );
}

void main();
