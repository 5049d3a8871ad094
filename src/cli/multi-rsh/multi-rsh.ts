/**
 * `multi-rsh`: run one command on many hosts at once, with the remote end closing every connection
 * first so this machine keeps no TIME_WAIT. Forms (as the original):
 *   multi-rsh [options] "command" host...
 *   multi-rsh [options] -l FILE|- command args...      (also -w HOSTS, --demo)
 * main() reads the options (options.ts), plans the hosts (plan.ts), sets up the output (output.ts)
 * and the ways to stop (stop.ts); the run itself, from the transport to the ledger, is a session
 * (remote/session.ts); print.ts says how it went.
 */
import { userInfo } from "node:os";
import { runExitCode } from "../../remote/output/exit-policy.js";
import { secondsToMs } from "../../core/timer.js";
import { tableSourceNamed } from "../../kernel/read.js";
import { startDemoHosts, type DemoHosts } from "../../remote/demo/rshd.js";
import { OutputGate } from "../../remote/flow.js";
import { openSession } from "../../remote/session.js";
import { reportError } from "../exit.js";
import { guardOutput, processIO, type CliIO } from "../io.js";
import { connectionRate, parseOptions, transportOptions, type Opts } from "./options.js";
import { openOutputDirs, RunOutput } from "./output.js";
import { planHosts } from "./plan.js";
import { printEnd, printStart } from "./print.js";
import { lastRunStop, RunStops, STOP_EXIT, STOP_FLUSH_MS } from "./stop.js";
import { transferFor } from "./transfer.js";

export { SSH_DEFAULT_RATE } from "./options.js";
export { DEMO_COMMAND } from "./plan.js";

export const STDIN_NOTICE = "stdin is not sent to the hosts (their stdin is /dev/null): -I sends it to every host; -n to go without this notice";

function localUserName(): string {
  try {
    return userInfo().username;
  } catch {
    return "root";
  }
}

/**
 * clush sends a piped stdin to every host; here the remote stdin is always /dev/null (see
 * remote/rcmd/exit-marker.ts), so data piped in would be dropped without a word. Asked while the hosts
 * run, so the wait on an idle pipe costs nothing.
 */
function checkStdin(o: Opts, io: CliIO, notices: string[]): Promise<void> {
  if (o.hostfile === "-" || o.nostdin || o.I || !io.stdinHasData) return Promise.resolve();
  return io.stdinHasData().then((has) => void (has && notices.push(STDIN_NOTICE)), () => {});
}

export async function main(argv: readonly string[], rawIO: CliIO = processIO()): Promise<number> {
  let demo: DemoHosts | null = null;
  const stops = new RunStops();
  const io = guardOutput(rawIO, (stream) => {
    if (stream === "stdout") stops.request("EPIPE");
  });
  try {
    const parsed = await parseOptions(argv, io);
    if (parsed === null) return 0;
    const { o, words, given } = parsed;
    const transfer = await transferFor(o, words, io, given);
    if (o.demo) demo = await startDemoHosts();
    const p = await planHosts(words, o, io, demo, transfer?.command ?? null);
    // After the plan: a bad host list or group leaves no folder behind.
    const dirs = openOutputDirs(o);
    const template = transfer?.command ? words : words.slice(0, -1);
    const session = await openSession({ transport: o.R, transportOptions: transportOptions(o, template, demo), hosts: p.hosts, parallel: o.p, separateStderr: !!o.stderr });
    const rate = connectionRate(o, words);
    const gate = new OutputGate();
    const out = new RunOutput(io, o, gate, transfer, dirs);
    if (!out.quiet) printStart(io, p, demo);
    if (stops.stop) return STOP_EXIT[stops.stop];
    const run = session.run({
      flow: gate,
      command: p.command,
      // Never rounded to 0 (= none): -t 0.0001 times out at once, as asked.
      timeoutMs: secondsToMs(o.t),
      connectTimeoutMs: secondsToMs(o.connectTimeout),
      commandTimeoutMs: secondsToMs(o.commandTimeout),
      idleTimeoutMs: secondsToMs(o.idleTimeout),
      ratePerSecond: rate,
      user: o.user ?? "",
      users: p.users,
      localUser: localUserName(),
      ...(transfer ? { inputFor: (h: string) => transfer.inputFor(h), adjustResult: (r) => transfer.result(r) } : {}),
      onOutput: (h, s, b) => out.output(h, s, b),
      onResult: (r) => out.result(r),
    });
    stops.watch(io, run, out);
    out.startProgress(run, p.hosts.length);
    const notices: string[] = session.fdLimit.notice ? [session.fdLimit.notice] : [];
    const stdinChecked = checkStdin(o, io, notices);
    try {
      await run.done;
      await stdinChecked;
    } finally {
      out.hostsDone();
      stops.hostsDone();
    }
    const report = await run.finish({ source: tableSourceNamed(io.env.ADDRINUSE_TABLE), demoHosts: demo });
    const exitCode = stops.stop ? STOP_EXIT[stops.stop] : runExitCode(report.results, { largestRemote: !!o.S, interrupted: stops.interrupted });
    const { fdLimit, parallel } = session;
    printEnd(io, out, { o, given, plan: p, report, exitCode, transport: session.transport, notices: [...notices, ...session.notices], fdLimit, parallel, rate, transfer });
    return exitCode;
  } catch (err) {
    return reportError("multi-rsh", err, io);
  } finally {
    stops.release();
    await demo?.close();
  }
}

export function run(): void {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // Every socket is closed by now (the kernel finishes their closing handshakes without us), so
      // once stdout and stderr have drained into a slow pipe there is nothing left to wait for: exit
      // then (forcing exit earlier loses output). Exiting there, rather than letting the event loop
      // run dry, also skips tearing down the heap, ~10-20 ms that a short fan-out would spend on it,
      // and a stray handle in a transport cannot hold the operator's prompt.
      let flushed = 0;
      const done = () => {
        if (++flushed === 2) process.exit(code);
      };
      process.stdout.write("", done);
      process.stderr.write("", done);
      // Told to stop (SIGTERM, SIGHUP, stdout gone): a reader that never reads again must not keep
      // us alive; what it has not taken in STOP_FLUSH_MS is given up.
      if (lastRunStop() !== null) setTimeout(() => process.exit(code), STOP_FLUSH_MS).unref();
    },
    (err) => {
      process.exitCode = reportError("multi-rsh", err, processIO());
    },
  );
}
