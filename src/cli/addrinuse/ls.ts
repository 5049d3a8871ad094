/** `addrinuse ls` and `addrinuse watch`: which local ports hold how many sockets in which states. */
import { setTimeout as sleep } from "node:timers/promises";
import { secondsToMs } from "../../core/timer.js";
import { countByPort, countByState, type PortCount } from "../../diagnosis/portstats.js";
import { readTcpSocketsAsync, tableSourceNamed, type TableSource } from "../../kernel/read.js";
import type { TcpState } from "../../kernel/parse.js";
import { table } from "../display.js";
import type { CliIO } from "../io.js";

export interface LsOptions {
  port?: number;
  state?: TcpState;
  top: number;
  json: boolean;
}

export interface LsReport {
  at: string;
  total: number;
  byState: Record<string, number>;
  ports: PortCount[];
}

/**
 * Over netlink when it can, like `why` (ADDRINUSE_TABLE=procfs or =netlink forces one reader). Only
 * counts are shown, so sockets no process owns (most of a busy table: TIME_WAIT) come back as counts
 * per state, address and port rather than one object each.
 */
export async function lsReport(opts: Omit<LsOptions, "json">, source: "auto" | TableSource = "auto"): Promise<LsReport> {
  const { rows, omitted } = await readTcpSocketsAsync({ source, ownerlessSample: 0, ...(opts.port === undefined ? {} : { localPort: opts.port }) });
  const counted: { localPort: number; state: string; count?: number }[] = [...rows, ...omitted];
  const shown = opts.state ? counted.filter((r) => r.state === opts.state) : counted;
  let total = 0;
  for (const r of shown) total += r.count ?? 1;
  return {
    at: new Date().toISOString(),
    total,
    byState: countByState(shown),
    ports: countByPort(shown).slice(0, opts.top),
  };
}

export function formatLs(r: LsReport): string {
  const head = `${r.total} TCP sockets` + (r.total ? `: ${Object.entries(r.byState).sort((a, b) => b[1] - a[1]).map(([s, n]) => `${s} ${n}`).join(", ")}` : "");
  if (r.ports.length === 0) return head + "\n";
  const rows = [["PORT", "TOTAL", "STATES"], ...r.ports.map((p) => [
    String(p.port),
    String(p.total),
    Object.entries(p.states).sort((a, b) => b[1] - a[1]).map(([s, n]) => `${s} ${n}`).join(", "),
  ])];
  return `${head}\n${table(rows)}\n`;
}

export async function runLs(opts: LsOptions, io: CliIO): Promise<number> {
  const r = await lsReport(opts, tableSourceNamed(io.env.ADDRINUSE_TABLE));
  io.stdout.write(opts.json ? JSON.stringify(r, null, 2) + "\n" : formatLs(r));
  return 0;
}

export interface WatchOptions extends LsOptions {
  intervalS: number;
  /** Refreshes before stopping; 0 = until interrupted. */
  count: number;
}

/**
 * On a TTY the screen is redrawn in place; piped, each refresh is appended (ndjson with --json), so
 * `watch --count 10 --json > log` records a time series.
 */
export async function runWatch(opts: WatchOptions, io: CliIO): Promise<number> {
  const tty = io.stdout.isTTY === true && !opts.json;
  let stop = false;
  const onInt = () => {
    stop = true;
  };
  io.signals.on("SIGINT", onInt);
  try {
    for (let i = 0; opts.count === 0 || i < opts.count; i++) {
      const r = await lsReport(opts, tableSourceNamed(io.env.ADDRINUSE_TABLE));
      if (opts.json) io.stdout.write(JSON.stringify(r) + "\n");
      else if (tty) io.stdout.write(`\x1b[H\x1b[2J${r.at}  (every ${opts.intervalS} s, Ctrl-C to stop)\n${formatLs(r)}`);
      else io.stdout.write(`${r.at}\n${formatLs(r)}\n`);
      if (stop || (opts.count !== 0 && i + 1 >= opts.count)) break;
      await sleep(secondsToMs(opts.intervalS));
      if (stop) break;
    }
  } finally {
    io.signals.off("SIGINT", onInt);
  }
  return 0;
}
