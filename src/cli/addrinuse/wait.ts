/**
 * `addrinuse wait PORT`: returns once the port can be bound. It never connects to the port (a connect
 * probe would itself leave a TIME_WAIT on the prober); it binds and reads the kernel table, and the
 * countdown comes from the kernel's own timers.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { addressesOverlap } from "../../core/address.js";
import { seconds } from "../../diagnosis/diagnose.js";
import { readTcpSocketsAsync, tableSourceNamed } from "../../kernel/read.js";
import { tryBind } from "../../net/probe.js";
import { StatusLine } from "../display.js";
import { showsProgress, type CliIO } from "../io.js";

export interface WaitOptions {
  port: number;
  host?: string;
  /** 0 = no limit. */
  timeoutS: number;
  /** Wait until a program WITHOUT SO_REUSEADDR could bind: TIME_WAIT and leftovers gone too. */
  withoutReuseAddr: boolean;
  json: boolean;
  pollMs?: number;
}

export async function runWait(opts: WaitOptions, io: CliIO): Promise<number> {
  const started = Date.now();
  const status = new StatusLine(io.stderr, showsProgress(io) && !opts.json);
  const host = opts.host ?? "::";
  const pollMs = opts.pollMs ?? 200;
  let polls = 0;
  let last = { sockets: 0, longestMs: 0, states: [] as string[] };
  for (;;) {
    polls++;
    const bind = await tryBind(opts.port, opts.host);
    // Over netlink when it loads: a poll every 200 ms of a table of 50,000 sockets costs ~25 ms that
    // way and ~100 ms through /proc/net/tcp.
    const { rows: all } = await readTcpSocketsAsync({ localPort: opts.port, source: tableSourceNamed(io.env.ADDRINUSE_TABLE) });
    const rows = all.filter((r) => addressesOverlap(r.localAddress, host));
    const blocking = opts.withoutReuseAddr ? rows : bind.ok ? [] : rows;
    last = {
      sockets: blocking.length,
      longestMs: Math.max(0, ...blocking.filter((r) => r.timer !== "none" && r.state !== "ESTABLISHED").map((r) => r.timerMs)),
      states: [...new Set(blocking.map((r) => r.state))],
    };
    const free = bind.ok && blocking.length === 0;
    const elapsed = Date.now() - started;
    if (free || (opts.timeoutS > 0 && elapsed >= opts.timeoutS * 1000)) {
      status.clear();
      const result = { port: opts.port, host, bindable: free, waitedMs: elapsed, polls, blocking: last };
      if (opts.json) io.stdout.write(JSON.stringify(result) + "\n");
      else if (free) io.stdout.write(`port ${opts.port}: bindable after ${seconds(elapsed)}\n`);
      else
        io.stdout.write(
          `port ${opts.port}: still not bindable after ${seconds(elapsed)} (${last.sockets} sockets: ${last.states.join(", ") || "bind refused"})\n`,
        );
      return free ? 0 : 1;
    }
    status.set(
      `waiting for port ${opts.port}: ${last.sockets} socket${last.sockets === 1 ? "" : "s"} (${last.states.join(", ") || "bind refused"})` +
        (last.longestMs > 0 ? `, kernel timers say ${seconds(last.longestMs)} left` : "") +
        (opts.timeoutS > 0 ? `; giving up in ${seconds(opts.timeoutS * 1000 - elapsed)}` : ""),
    );
    const remaining = opts.timeoutS > 0 ? opts.timeoutS * 1000 - elapsed : pollMs;
    await sleep(Math.max(1, Math.min(pollMs, remaining)));
  }
}
