/**
 * `multi-rsh`: run one command on many hosts at once, with the remote end closing every connection
 * first so this machine keeps no TIME_WAIT. Forms (as the original):
 *   multi-rsh [options] "command" host...
 *   multi-rsh [options] -l FILE|- command args...      (also -w HOSTS, --demo)
 * Options stop at the first non-option word, so `multi-rsh -w h ls -l` runs `ls -l`.
 */
import { readFileSync } from "node:fs";
import { userInfo } from "node:os";
import { dedupeHosts, expandHostList, parseHostFile, splitTopLevel } from "../core/hostlist.js";
import { AddrinuseError, UsageError } from "../errors.js";
import { readTcpSocketsAsync, tableSourceNamed } from "../kernel/read.js";
import { runHosts, type HostResult } from "../remote/engine.js";
import type { DemoHosts } from "../remote/demo-hosts.js";
import { createTransport } from "../remote/transports/index.js";
// The default transport, loaded with the rest rather than by createTransport's dynamic import once
// the arguments are parsed: that costs file-read round trips in series before the first connection.
import "../remote/transports/rsh.js";
import type { TransportOptions } from "../remote/transport.js";
import { countArg, portArg, secondsArg } from "./args.js";
import type { StatusLine } from "./display.js";
import { reportError } from "./exit.js";
import { packageVersion } from "./version.js";
import { processIO, showsProgress, type CliIO } from "./io.js";
import type { OutputMode, OutputSink } from "./output-sink.js";
import type { OutputDirs } from "./output-dir.js";
import type { Transfer } from "./transfer.js";

import { Command, Option } from "commander";

export const DEMO_COMMAND = 'echo "hello from $MULTI_RSH_HOST"; uname -sr';

interface Opts {
  hostfile?: string;
  w?: string[];
  x?: string[];
  p: number;
  t: number;
  connectTimeout: number;
  commandTimeout: number;
  u?: string;
  R: string;
  b?: boolean;
  N?: boolean;
  S?: boolean;
  json?: boolean;
  ndjson?: boolean;
  stderr?: boolean;
  resetAfterEof?: boolean;
  demo?: boolean;
  port?: number;
  localPorts?: [number, number];
  F?: string;
  hostKeyChecking?: "strict" | "accept-new" | "off";
  g?: string[];
  a?: boolean;
  groups?: string;
  o?: string;
  e?: string;
  copy?: string[];
  rcopy?: string[];
  dest?: string;
  r?: boolean;
  preserve?: boolean;
  I?: boolean;
  sendInput?: boolean;
  rcpPath?: string;
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

function rangeArg(text: string): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(text.trim());
  const a = m ? portArg(m[1]!, "--local-ports start") : 0;
  const b = m ? portArg(m[2]!, "--local-ports end") : 0;
  if (!m || a > b) throw new UsageError(`bad --local-ports '${text}': expected FROM-TO within 1-65535, e.g. 512-1023`);
  return [a, b];
}

function buildProgram(io: CliIO): Command {
  return new Command("multi-rsh")
    .description("Run a command on many hosts at once; the remote end closes first, so this machine keeps no TIME_WAIT.")
    .usage('[options] "command" host...\n       multi-rsh [options] -l FILE|- command args...\n       multi-rsh [options] -w HOSTS command args...')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: (s, write) => write(`multi-rsh: ${s.trim().replace(/^error: /, "").replace(/\n+/g, " ")}\n`),
    })
    .version(packageVersion(), "--version", "print the version and exit")
    .passThroughOptions()
    .argument("[words...]")
    .option("-l, --hostfile <file>", "file of hosts, one per line (- = stdin); blank lines and # comments allowed")
    .option("-w <hosts>", "hosts: comma list with ranges (node[01-32], 10.0.0.[1-9]) and ^FILE; repeatable", collect)
    .option("-x <hosts>", "exclude these hosts (same syntax); repeatable", collect)
    .option("-p <n>", "connections in parallel", (v) => countArg(v, "-p", 1, 100_000), 20)
    .option("-t <seconds>", "total time per host, connect included (0 = none)", (v) => secondsArg(v, "-t"), 15)
    .option("--connect-timeout <seconds>", "time to connect (0 = only -t)", (v) => secondsArg(v, "--connect-timeout"), 0)
    .option("--command-timeout <seconds>", "time for the command once connected (0 = only -t)", (v) => secondsArg(v, "--command-timeout"), 0)
    .option("-u <user>", "remote user (default: the local user)")
    .option("-R <transport>", "rsh | ssh | openssh | exec", "rsh")
    .option("-b", "gather identical outputs under folded host lists")
    .option("-N", "no host prefix on output lines")
    .option("-S", "exit with the largest remote exit code")
    .option("--json", "one JSON document at the end (results, output, summary, ledger)")
    .option("--ndjson", "one JSON record per host as it finishes")
    .option("--stderr", "keep the remote stderr apart (rsh's second channel) instead of merged")
    .option("--reset-after-eof", "rsh: after the remote closes, answer with RST so neither side keeps TIME_WAIT")
    .option("--port <port>", "remote port (rsh 514, ssh 22)", (v) => portArg(v))
    .option("--local-ports <from-to>", "rsh: local ports to connect from (default 512-1023, which rshd requires)", rangeArg)
    .option("-F <file>", "ssh: config file instead of ~/.ssh/config")
    .addOption(new Option("--host-key-checking <mode>", "ssh: strict | accept-new | off").choices(["strict", "accept-new", "off"]))
    .option("--demo", "run on built-in rsh hosts this command starts on 127.0.0.2-17")
    .option("-g <groups>", "hosts of these groups (comma list; ClusterShell and dshgroup files, --groups); repeatable", collect)
    .option("-a", "all hosts: the group 'all', else every group")
    .option("--groups <file>", "group file read first: NAME.yaml (ClusterShell groups.d) or 'name: nodeset' lines")
    .option("-o <dir>", "each host's output in DIR/HOST (stdout, or both streams without --stderr), not on the terminal")
    .option("-e <dir>", "each host's stderr in DIR/HOST (implies --stderr)")
    .option("--copy <src...>", "copy these local files to every host's --dest (rcp over rsh, scp otherwise)")
    .option("--rcopy <src...>", "copy these remote files from every host into --dest as NAME.HOST")
    .option("--dest <dir>", "--copy: the directory on the hosts; --rcopy: the local directory")
    .option("-r", "--copy/--rcopy: directories too, recursively")
    .option("--preserve", "--copy/--rcopy: keep modification times and modes")
    .option("--rcp-path <path>", "--copy/--rcopy: the program on the hosts (default rcp over rsh, scp otherwise; pdcp's -e)")
    .option("-I, --send-input", "read stdin once (64 MiB at most) and send it to the command on every host (pssh's -I)");
}

async function readStdin(io: CliIO): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of io.stdin) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(String(c)));
  return Buffer.concat(chunks).toString("utf8");
}

function readHostFile(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read host file '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "ERR_HOSTFILE");
  }
}

interface Plan {
  command: string;
  hosts: string[];
  duplicates: string[];
}

async function plan(words: string[], o: Opts, io: CliIO, demo: DemoHosts | null, transferCommand: string | null): Promise<Plan> {
  let command = "";
  const hosts: string[] = [];
  const listed = o.hostfile !== undefined || (o.w?.length ?? 0) > 0 || (o.g?.length ?? 0) > 0 || !!o.a || demo !== null;
  // Groups are read only when asked for (-g, -a, @NAME): the reader and its YAML parser stay off the start-up path.
  const wantsGroups = (o.g?.length ?? 0) > 0 || !!o.a || [...(o.w ?? []), ...(o.x ?? [])].some((t) => splitTopLevel(t).some((p) => p.startsWith("@")));
  const groups = wantsGroups ? (await import("./groups-reader.js")).groupResolver(io.env, o.groups, readHostFile) : null;
  const expand = (t: string) => (groups ? groups.expand(t) : expandHostList(t, readHostFile));
  if (transferCommand !== null) {
    // --copy/--rcopy: the command is the transfer's; every word is the exec template, if any.
    if (!listed) throw new UsageError("--copy/--rcopy take their hosts from -w, -l, -g or -a");
    command = transferCommand;
  } else if (o.R === "exec") {
    // -R exec -w HOSTS -- TEMPLATE... COMMAND: the last word is the command, the rest the template.
    if (!listed) throw new UsageError("-R exec takes its hosts from -w or -l: multi-rsh -R exec -w HOSTS -- docker exec %h sh -c 'CMD'");
    if (words.length < 2) throw new UsageError("-R exec needs a template and a command: -- docker exec %h sh -c 'CMD'");
    command = words[words.length - 1]!;
  } else if (listed) {
    command = words.join(" ");
  }
  if (listed) {
    if (o.hostfile !== undefined) {
      const text = o.hostfile === "-" ? await readStdin(io) : readHostFile(o.hostfile);
      hosts.push(...parseHostFile(text, o.hostfile === "-" ? "stdin" : o.hostfile));
    }
    for (const w of o.w ?? []) hosts.push(...expand(w));
    for (const g of o.g ?? []) for (const name of splitTopLevel(g)) hosts.push(...groups!.resolve(name.replace(/^@/, "")));
    if (o.a) hosts.push(...groups!.all());
    if (demo) hosts.push(...demo.addresses);
    if (!command && demo) command = DEMO_COMMAND;
  } else {
    if (words.length === 0) throw new UsageError('no command: multi-rsh [options] "command" host...  (or -l FILE / -w HOSTS)');
    command = words[0]!;
    for (const h of words.slice(1)) hosts.push(...expandHostList(h, readHostFile));
  }
  if (!command.trim()) throw new UsageError("no command to run");
  const excluded = new Set<string>();
  for (const x of o.x ?? []) for (const h of expand(x)) excluded.add(h);
  const { hosts: unique, duplicates } = dedupeHosts(hosts.filter((h) => !excluded.has(h)));
  if (unique.length === 0) throw new UsageError("no hosts to run on (give hosts, -w, -l or --demo)");
  return { command, hosts: unique, duplicates };
}

export async function main(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  let demo: DemoHosts | null = null;
  try {
    let words: string[] = [];
    const program = buildProgram(io).action((w: string[]) => {
      words = w;
    });
    await program.parseAsync([...argv], { from: "user" });
    const o = program.opts<Opts>();
    if (o.sendInput) o.I = true;
    if (o.json && o.ndjson) throw new UsageError("--json and --ndjson: choose one");
    if (o.b && (o.json || o.ndjson)) throw new UsageError("-b gathers text output; with --json the output is in the document");
    if (o.demo && o.R !== "rsh") throw new UsageError("--demo hosts speak rsh: drop -R or use -R rsh");

    if (o.R === "rsh" && !o.demo && !o.localPorts && process.getuid?.() !== 0) {
      throw new AddrinuseError("ERR_NOT_ROOT", "rsh needs root: rshd only trusts connections from reserved ports (512-1023), which only root may bind");
    }
    // --copy, --rcopy, -I and -o/-e: loaded only when asked for, and checked before any host is contacted.
    let transfer: Transfer | null = null;
    if (o.copy || o.rcopy || o.I || o.dest !== undefined || o.r || o.preserve || o.rcpPath !== undefined) {
      const t = await import("./transfer.js");
      // Words that would be a command (with -R exec every word is the template).
      t.checkTransferOptions(o, o.hostfile === "-", o.R === "exec" ? 0 : words.length);
      const stdinBytes = o.I ? await t.readStdinForAll(io.stdin) : null;
      transfer = t.planTransfer(o, o.rcpPath ?? (o.R === "rsh" ? "rcp" : "scp"), stdinBytes);
      // A copy takes as long as its bytes do: -t's 15 s default is for commands (-t still applies when given).
      // Connecting still has a bound (10 s, clush's and pdsh's), or a host that never answers would hold the run.
      if (transfer.kind !== "stdin" && program.getOptionValueSource("t") === "default") {
        o.t = 0;
        if (program.getOptionValueSource("connectTimeout") === "default") o.connectTimeout = 10;
      }
    }
    // Loaded only for --demo: every module on the start-up path delays the first connection.
    if (o.demo) demo = await (await import("../remote/demo-hosts.js")).startDemoHosts();
    const p = await plan(words, o, io, demo, transfer?.command ?? null);
    // After the plan: a bad host list or group leaves no folder behind.
    let outDirs: OutputDirs | null = null;
    if (o.o !== undefined || o.e !== undefined) {
      const d = await import("./output-dir.js");
      outDirs = new d.OutputDirs({
        ...(o.o !== undefined ? { stdout: d.prepareOutputDir(o.o, "-o") } : {}),
        ...(o.e !== undefined ? { stderr: d.prepareOutputDir(o.e, "-e") } : {}),
      });
      if (o.e !== undefined) o.stderr = true;
    }

    const transportOptions: TransportOptions = {
      resetAfterEof: !!o.resetAfterEof,
      ...(o.port !== undefined ? { port: o.port } : {}),
      ...(o.localPorts ? { localPorts: o.localPorts } : {}),
      ...(o.F ? { sshConfigFile: o.F } : {}),
      ...(o.hostKeyChecking ? { hostKeyChecking: o.hostKeyChecking } : {}),
      ...(o.R === "exec" ? { template: transfer?.command ? words : words.slice(0, -1) } : {}),
    };
    if (demo) {
      transportOptions.port = demo.port;
      if (!demo.reservedOnly) transportOptions.localPorts = o.localPorts ?? [20000, 29999];
    }
    const transport = await createTransport(o.R, transportOptions);

    const mode: OutputMode = o.json ? "json" : o.ndjson ? "ndjson" : o.b ? "gather" : "lines";
    const progress = showsProgress(io) && mode !== "json" && mode !== "ndjson";
    const quietText = mode === "json" || mode === "ndjson";

    if (demo && !quietText) {
      io.stderr.write(
        `multi-rsh: demo: ${demo.addresses.length} built-in rsh hosts on 127.0.0.2-${2 + demo.addresses.length - 1} port ${demo.port}` +
          (demo.reservedOnly ? " (client on reserved ports, as root)" : " (not root: ordinary ports instead of reserved ones)") +
          "\n",
      );
    }
    if (p.duplicates.length && !quietText) {
      io.stderr.write(`multi-rsh: ${p.duplicates.length} duplicate host${p.duplicates.length === 1 ? "" : "s"} run once: ${p.duplicates.slice(0, 10).join(", ")}${p.duplicates.length > 10 ? ", ..." : ""}\n`);
    }

    const localUser = (() => {
      try {
        return userInfo().username;
      } catch {
        return "root";
      }
    })();
    let sink: OutputSink | null = null;
    let status: StatusLine | null = null;
    const early: ({ host: string; stream: "stdout" | "stderr"; chunk: Buffer } | HostResult)[] = [];
    const started = Date.now();
    let finishedCount = 0;
    let failedCount = 0;
    const run = runHosts({
      hosts: p.hosts,
      command: p.command,
      transport,
      parallel: o.p,
      timeoutMs: Math.round(o.t * 1000),
      connectTimeoutMs: Math.round(o.connectTimeout * 1000),
      commandTimeoutMs: Math.round(o.commandTimeout * 1000),
      user: o.u ?? "",
      localUser,
      separateStderr: !!o.stderr,
      ...(transfer ? { inputFor: (h: string) => transfer.inputFor(h) } : {}),
      onOutput: (h, s, b) => {
        if (s === "stdout" && transfer?.onStdout(h, b)) return;
        if (outDirs?.output(h, s, b)) return;
        if (sink) sink.output(h, s, b);
        else early.push({ host: h, stream: s, chunk: b });
      },
      onResult: (res) => {
        const r = transfer ? transfer.result(res) : res;
        outDirs?.finish(r.host);
        finishedCount++;
        if (r.state !== "done" || (r.exitCode ?? 0) !== 0) failedCount++;
        if (sink) sink.finish(r);
        else early.push(r);
      },
    });
    // Ctrl-C once: status, and the run goes on. Twice within a second, or Ctrl-\: stop now.
    let interrupted = false;
    let lastInt = 0;
    const abort = () => {
      interrupted = true;
      status?.clear();
      io.stderr.write("multi-rsh: interrupted: resetting running connections, cancelling the rest\n");
      run.cancel();
    };
    const onInt = () => {
      const now = Date.now();
      if (now - lastInt < 1000) return abort();
      lastInt = now;
      const s = run.status();
      status?.clear();
      const active = [...s.connecting, ...s.running];
      io.stderr.write(
        `multi-rsh: ${s.finished.length} done, ${active.length} running${active.length ? ` (${active.slice(0, 20).join(" ")}${active.length > 20 ? " ..." : ""})` : ""}, ${s.queued.length} waiting. Ctrl-C again within 1 s to stop.\n`,
      );
    };
    io.signals.on("SIGINT", onInt);
    io.signals.on("SIGQUIT", abort);

    // What is needed only once output arrives or the run ends is loaded while the first connections
    // are in flight, not before them: every module loaded at start-up delays the first connection
    // of every run, and the hosts take a while to answer anyway. setImmediate: after the engine's
    // first connections are issued (they go out from microtasks and nextTicks). Until it is loaded,
    // what the run reports is kept in order.
    const later = new Promise<void>((resolve) => setImmediate(resolve)).then(() =>
      Promise.all([import("./output-sink.js"), import("./display.js"), import("../remote/report.js"), import("../core/exit-policy.js")]),
    );
    let loaded: Awaited<typeof later>;
    try {
      loaded = await later;
    } catch (e) {
      io.signals.off("SIGINT", onInt);
      io.signals.off("SIGQUIT", abort);
      run.cancel();
      await run.done;
      throw e;
    }
    const [{ OutputSink }, { StatusLine }, { countPeerTimeWait, formatSummary, ledgerPortFilter, summarise }, { runExitCode }] = loaded;
    const line = new StatusLine(io.stderr, progress);
    status = line;
    const ready = new OutputSink(io, mode, !o.N, line);
    for (const e of early) {
      if ("chunk" in e) ready.output(e.host, e.stream, e.chunk);
      else ready.finish(e);
    }
    early.length = 0;
    sink = ready;

    const ticker = progress
      ? setInterval(() => {
          const s = run.status();
          const secs = (Date.now() - started) / 1000;
          line.set(
            `[${finishedCount}/${p.hosts.length}] ${s.connecting.length + s.running.length} running, ${failedCount} failed, ${(finishedCount / Math.max(secs, 0.001)).toFixed(0)} hosts/s`,
          );
        }, 100)
      : null;

    let results: HostResult[];
    try {
      results = await run.done;
      if (transfer) results = results.map((r) => transfer.result(r));
    } finally {
      outDirs?.closeAll();
      if (ticker) clearInterval(ticker);
      line.clear();
      io.signals.off("SIGINT", onInt);
      io.signals.off("SIGQUIT", abort);
      await transport.close?.();
    }

    // Only the families this run used: each table file costs a walk of the kernel's whole hash.
    // (A v4-mapped address is an IPv6 socket, listed in tcp6.)
    const families = new Set(results.flatMap((r) => (r.remoteAddress ? [r.remoteAddress.includes(":") ? 6 : 4] : [])));
    // And only the rows of this run's ports: the kernel filters them over netlink (procfs: before
    // parsing), where a busy machine's table of thousands of other sockets took 50 ms to read whole.
    const ports = ledgerPortFilter(results, demo !== null);
    const rows =
      ports === null
        ? []
        : (
            await readTcpSocketsAsync({
              ports,
              source: tableSourceNamed(io.env.ADDRINUSE_TABLE),
              ...(families.size === 1 ? { family: families.has(6) ? (6 as const) : (4 as const) } : {}),
            })
          ).rows;
    const summary = summarise(results, rows, Date.now() - started);
    const exitCode = runExitCode(results, { largestRemote: !!o.S, interrupted });
    let demoSide: { served: number; serverClosedFirst: number; hostTimeWait: number } | undefined;
    if (demo) {
      demoSide = {
        served: demo.stats.served,
        serverClosedFirst: demo.stats.serverClosedFirst,
        hostTimeWait: countPeerTimeWait(results, rows, demo.port),
      };
    }
    ready.flushGathered(p.hosts);
    if (mode === "json") {
      const doc = {
        command: p.command,
        transport: transport.name,
        hosts: p.hosts,
        duplicates: p.duplicates,
        results: results.map((r) => ready.record(r)),
        counts: summary.counts,
        nonZeroExit: summary.nonZeroExit,
        failures: summary.failures,
        ledger: summary.ledger,
        durationMs: summary.durationMs,
        exitCode,
        ...(demoSide ? { demoHosts: demoSide } : {}),
        ...(transport.notices?.length ? { notices: [...transport.notices] } : {}),
        ...(transfer ? transfer.json(results) : {}),
        ...(outDirs ? { outputDirs: { ...(o.o !== undefined ? { stdout: o.o } : {}), ...(o.e !== undefined ? { stderr: o.e } : {}) }, ...(outDirs.problems.length ? { outputProblems: outDirs.problems } : {}) } : {}),
      };
      io.stdout.write(JSON.stringify(doc, null, 2) + "\n");
    } else {
      for (const n of transport.notices ?? []) io.stderr.write(`multi-rsh: ${n}\n`);
      for (const n of outDirs?.problems.slice(0, 10) ?? []) io.stderr.write(`multi-rsh: ${n}\n`);
      if (transfer) io.stderr.write(transfer.describe(results));
      io.stderr.write(formatSummary(summary));
      if (demoSide) {
        io.stderr.write(
          `demo hosts' side: ${demoSide.serverClosedFirst} of ${demoSide.served} connections closed by the host first; the hosts hold ${demoSide.hostTimeWait} TIME_WAIT (the remote end keeps them, as it should)\n`,
        );
      }
    }
    return exitCode;
  } catch (err) {
    return reportError("multi-rsh", err, io);
  } finally {
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
    },
    (err) => {
      process.exitCode = reportError("multi-rsh", err, processIO());
    },
  );
}
