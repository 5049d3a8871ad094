/**
 * bench/long-lines: is output handling linear in the size of a line? One host on loopback
 * (test/helpers/hostile-rsh.ts, port 514 on 127.13.3.10 so pdsh can reach it too) sends N MB without
 * a newline, then the exit status; N = 12, 25, 50. A second case sends the exit marker's head, then N
 * MB of digits (what pinned a core in the exit-marker filter), then the true status. multi-rsh
 * (bin/multi-rsh.js) and, in the same run, the peer pdsh -R rsh, stdout to /dev/null; medians of
 * `--rounds` (3). The table prints time(N) / time(12): linear work gives at most N / 12 (less when a
 * fixed cost such as start-up weighs in; the 0 MB row shows it), quadratic gives (N / 12)^2: 4.2 and
 * 17.4 at 50 MB. Before the fix this bench measures, 50 MB took 15 s against 1 s at 12 MB (15).
 *
 * Run (root: rsh connects from reserved ports; ~1 minute): npm run build && npm run bench:long-lines
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startHostileRsh, writeAll } from "../test/helpers/hostile-rsh.js";
import { arg } from "./lib/options.js";
import { median } from "./lib/stats.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MULTI_RSH = join(ROOT, "bin", "multi-rsh.js");
const HOST = "127.13.3.10";
const MB = 1 << 20;
/** 0 MB: the run's fixed cost (start-up, connect), taken off before the quotient; 200 MB: the trend. */
const SIZES = [0, 12, 25, 50, 200];

if (process.argv.includes("--help")) {
  process.stdout.write("usage: npm run bench:long-lines [-- --rounds 3]   (root; writes bench/results/long-lines.json)\n");
  process.exit(0);
}
if (process.getuid?.() !== 0) {
  process.stderr.write("bench/long-lines: needs root (rsh connects from reserved ports)\n");
  process.exit(2);
}
const rounds = Number(arg("rounds", "3"));

type Case = "no-newline" | "marker-digits";
let current: { kind: Case; mb: number } = { kind: "no-newline", mb: 12 };

const hostile = await startHostileRsh([HOST], async (s) => {
  const { kind, mb } = current;
  if (kind === "no-newline") {
    await writeAll(s.socket, mb * MB, Buffer.alloc(256 * 1024, 0x78));
  } else {
    s.socket.write(s.marker || "__AIU_EXIT_0000000000000000__");
    await writeAll(s.socket, mb * MB, Buffer.alloc(256 * 1024, 0x37));
    s.socket.write("\n");
  }
  s.exit(0);
}, 514);

interface Tool {
  name: string;
  argv: string[];
  /** pdsh moves a line without newline at ~1.3 MB/s here: one round, up to 50 MB, first case only. */
  sizes: number[];
  rounds: number;
  cases: Case[];
}
const tools: Tool[] = [
  { name: "multi-rsh -R rsh", argv: [process.execPath, MULTI_RSH, "-R", "rsh", "-t", "600", "-w", HOST, "true"], sizes: SIZES, rounds, cases: ["no-newline", "marker-digits"] },
];
if (existsSync("/usr/bin/pdsh")) {
  tools.push({ name: "pdsh -R rsh", argv: ["pdsh", "-R", "rsh", "-w", HOST, "true"], sizes: SIZES.filter((n) => n <= 50), rounds: 1, cases: ["no-newline"] });
}

function timeOnce(argv: string[]): Promise<{ ms: number; code: number | null }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "ignore"], env: { ...process.env, NO_PROGRESS: "1" } });
    c.on("error", reject);
    c.on("close", (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code }));
  });
}


interface Row {
  tool: string;
  case: Case;
  mb: number;
  medianMs: number;
  runsMs: number[];
  exitCodes: (number | null)[];
  /** time(N) / time(12). */
  vs12: number;
  linearBound: number;
  quadratic: number;
}
const rows: Row[] = [];
try {
  for (const kind of ["no-newline", "marker-digits"] as Case[]) {
    for (const tool of tools.filter((t) => t.cases.includes(kind))) {
      let base = 0;
      for (const mb of tool.sizes) {
        current = { kind, mb };
        const runs: number[] = [];
        const codes: (number | null)[] = [];
        for (let r = 0; r < tool.rounds; r++) {
          const t = await timeOnce(tool.argv);
          runs.push(t.ms);
          codes.push(t.code);
        }
        const med = median(runs);
        if (mb === 12) base = med;
        const vs12 = mb === 0 ? NaN : med / base;
        rows.push({ tool: tool.name, case: kind, mb, medianMs: med, runsMs: runs, exitCodes: codes, vs12, linearBound: mb / 12, quadratic: (mb / 12) ** 2 });
      }
    }
  }
} finally {
  await hostile.close();
}

const pad = (s: string, n: number) => s.padEnd(n);
process.stdout.write(`${pad("case", 15)}${pad("tool", 20)}${pad("MB", 5)}${pad("median s", 10)}${pad("t/t(12)", 9)}${pad("linear <=", 11)}quadratic\n`);
for (const r of rows) {
  const q = Number.isNaN(r.vs12) ? pad("", 9) + pad("", 11) + "(fixed cost)" : pad(r.vs12.toFixed(2), 9) + pad(r.linearBound.toFixed(1), 11) + r.quadratic.toFixed(1);
  process.stdout.write(`${pad(r.case, 15)}${pad(r.tool, 20)}${pad(String(r.mb), 5)}${pad((r.medianMs / 1000).toFixed(3), 10)}${q}\n`);
}
const out = join(ROOT, "bench", "results", "long-lines.json");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  JSON.stringify({ command: "npm run bench:long-lines -- --rounds " + rounds, at: new Date().toISOString(), node: process.version, rounds, rows }, null, 2) + "\n",
);
process.stdout.write(`written ${out}\n`);
