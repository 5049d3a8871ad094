/**
 * `multi-rsh`: run one command on many hosts at once, with the remote end closing every connection
 * first so this machine keeps no TIME_WAIT. Forms (as the original):
 *   multi-rsh [options] "command" host...
 *   multi-rsh [options] -l FILE|- command args...      (also -w HOSTS, --demo)
 * Options stop at the first non-option word, so `multi-rsh -w h ls -l` runs `ls -l`.
 */
import { constants as osConstants, userInfo } from "node:os";
import { dedupeHosts, emptySelection, parseExclusion, parseHostFile, parseHostSelection, selectHosts, splitTopLevel, type HostListOptions } from "../../core/hostlist.js";
import { AddrinuseError, UsageError } from "../../errors.js";
import { readTcpSocketsAsync, tableSourceNamed } from "../../kernel/read.js";
import { ensureFdLimit } from "../../kernel/fd-limit.js";
import { runHosts, type HostResult } from "../../remote/engine.js";
import type { DemoHosts } from "../../remote/demo-hosts.js";
import { createTransport } from "../../remote/transports/index.js";
// The default transport, loaded with the rest rather than by createTransport's dynamic import once
// the arguments are parsed: that costs file-read round trips in series before the first connection.
import "../../remote/transports/rsh.js";
import type { TransportOptions } from "../../remote/transport.js";
import { countArg, portArg, secondsArg } from "../args.js";
import { secondsToMs } from "../../core/timer.js";
import type { StatusLine } from "../display.js";
import { reportError } from "../exit.js";
import { packageVersion } from "../version.js";
import {
  EXCLUDE_SSH_ARGS_HINT, HELP_WITH_ARGUMENTS, excludeLooksLikeSshArgs, HOSTFILE_MISSING_HINT, USER_TIMEOUT_HINT, unknownFlagHint, userLooksLikeTimeout,
} from "./peer-flags.js";
import { readHostFile, readHostStdin } from "./host-file.js";
import { guardOutput, processIO, showsProgress, type CliIO } from "../io.js";
import { OutputGate } from "../../remote/flow.js";
import type { OutputMode, OutputSink } from "./output-sink.js";
import type { OutputDirs } from "./output-dir.js";
import type { Transfer } from "./transfer.js";

import { Command, Option } from "commander";

export const STDIN_NOTICE = "stdin is not sent to the hosts (their stdin is /dev/null): -I sends it to every host; -n to go without this notice";

export const DEMO_COMMAND = 'echo "hello from $MULTI_RSH_HOST"; uname -sr';

/**
 * -R ssh/openssh (and an exec template of ssh): new connections per second unless --rate says otherwise. OpenSSH's default
 * `MaxStartups 10:30:100` starts dropping handshakes at random once one sshd has 10 connections that
 * have not authenticated yet; at 100 a second with handshakes of up to 100 ms, hosts behind one sshd
 * (a bastion, one machine under many names) stay under that. Distinct hosts each see one connection.
 */
export const SSH_DEFAULT_RATE = 100;

/** Open files kept for everything but the hosts' connections (Node itself, stdio, kernel table reads). */
const FD_RESERVE = 64;

/**
 * Open files a host's run holds at once, per transport (rsh --stderr: its listener and channel; the
 * connection that ends a timed-out command opens after the main one is reset, so it adds none).
 */
function fdsPerHost(transport: string, separateStderr: boolean): number {
  if (transport === "rsh") return separateStderr ? 3 : 1;
  if (transport === "ssh") return 1;
  // A child ssh or template: three pipes, and for the relay its socket pair and TCP connection.
  return 7;
}

interface Opts {
  hostfile?: string;
  w?: string[];
  x?: string[];
  H?: string[];
  p: number;
  fanout?: number;
  t: number;
  connectTimeout: number;
  commandTimeout: number;
  user?: string;
  h?: boolean;
  nostdin?: boolean;
  P?: boolean;
  idleTimeout: number;
  rate?: number;
  R: string;
  b?: boolean;
  N?: boolean;
  S?: boolean;
  json?: boolean;
  ndjson?: boolean;
  stderr?: boolean;
  raw?: boolean;
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
      outputError: (s, write) => {
        const text = s.trim().replace(/^error: /, "").replace(/\n+/g, " ");
        const unknown = /^unknown option '([^']+)'/.exec(text);
        const hint = unknown ? unknownFlagHint(unknown[1]!) : null;
        write(`multi-rsh: ${hint ? `unknown option '${unknown![1]}': ${hint}` : text}\n`);
      },
    })
    .version(packageVersion(), "-V, --version", "print the version and exit")
    // -h alone is help; with anything else it is refused (pssh's -h is a host file): see main().
    .helpOption("--help", "print this help and exit")
    .addOption(new Option("-h", "help (alone)").hideHelp())
    .passThroughOptions()
    .argument("[words...]")
    .option("-l, --hostfile <file>", "file of hosts (- = stdin): 'a,b' or 'a b' per line, # comments, #include FILE")
    .option("-w <hosts>", "hosts, as pdsh: node[01-32], user@host, [::1], ^FILE, -HOST to exclude, /RE/ to keep, -/RE/ to drop; repeatable", collect)
    .option("-x <hosts>", "exclude these hosts, ^FILE and /RE/ matches; repeatable", collect)
    .option("-H <host>", "a host (pssh's -H); repeatable, space-separated words each a host list", collect)
    .option("-p <n>", "connections in parallel (pssh's -p)", (v) => countArg(v, "-p", 1, 100_000), 20)
    .option("-f, --fanout <n>", "the same, spelt as pdsh and clush do", (v) => countArg(v, "-f", 1, 100_000))
    .option("-t <seconds>", "total time per host, connect included (pssh's -t; 0 = none)", (v) => secondsArg(v, "-t"), 0)
    .option("--connect-timeout <seconds>", "time to connect (pdsh/clush's -t; 0 = only -t)", (v) => secondsArg(v, "--connect-timeout"), 10)
    .option("--command-timeout <seconds>", "time for the command once connected (pdsh/clush's -u; 0 = none)", (v) => secondsArg(v, "--command-timeout"), 0)
    .option("--idle-timeout <seconds>", "give up on a host that prints nothing for this long once running (0 = none)", (v) => secondsArg(v, "--idle-timeout"), 0)
    .option("--rate <n>", `new connections per second at most (0 = no limit; default: rsh none, ssh ${SSH_DEFAULT_RATE})`, (v) => countArg(v, "--rate", 0, 1_000_000))
    .option("-u, --user <user>", "remote user (default: the local user; pdsh/clush/pssh's -l)")
    .option("-R <transport>", "rsh | ssh | openssh | exec (exec: see below)", "rsh")
    .option("-b", "gather identical outputs under folded host lists")
    .option("-N", "no host prefix on output lines")
    .option("-S", "exit with the largest remote exit code")
    .option("-n, --nostdin", "say that stdin is not read (the remote stdin is always /dev/null): no notice when it is piped")
    .option("-P", "print output as it arrives (the default; pssh's -P)")
    .option("--json", "one JSON document at the end (results, output, summary, ledger)")
    .option("--ndjson", "one JSON record per host as it finishes")
    .option("--stderr", "keep the remote stderr apart (rsh's second channel) instead of merged")
    .option("--raw", "write the hosts' bytes as they are, even to a terminal (trusts the hosts: escape sequences act)")
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
    .option("-I, --send-input", "read stdin once (64 MiB at most) and send it to the command on every host (pssh's -I)")
    .addHelpText(
      "after",
      [
        "",
        "-R exec runs a local program per host from a template given after --, the command appended last:",
        "  multi-rsh -R exec -w HOSTS -- docker exec %h sh -c 'CMD'",
        "  multi-rsh -R exec -w HOSTS -- ssh -F FILE %h 'CMD'",
        "  (%h = the host, %u = the remote user, %% = %; an argument vector, no shell)",
        "",
        "pdsh/clush/pssh flags: -w -x -f -R -N -S -b -H -P -n as theirs; -l is the host file (their -l USER is -u USER),",
        "-t the total time per host (pdsh/clush's -t is --connect-timeout, their -u is --command-timeout); others are refused",
        "with a hint. The table: README.md, 'Flags from pdsh, clush and pssh'.",
      ].join("\n"),
    );
}

/** Bounded (host-file.ts): `-l /dev/zero` is a usage error, not a crash. */
function readStdin(io: CliIO): Promise<string> {
  return readHostStdin(io.stdin);
}

/** `-l FILE`: a missing file is most often a pdsh/clush/pssh user's `-l USER`: say so. */
function readListedHostFile(path: string): string {
  try {
    return readHostFile(path);
  } catch (e) {
    if (e instanceof UsageError && /: (ENOENT|EISDIR)$/.test(e.message)) throw new UsageError(`${e.message} (${HOSTFILE_MISSING_HINT})`, "ERR_HOSTFILE");
    throw e;
  }
}

/**
 * Options that another tool reads another way, or that the chosen transport would silently ignore:
 * refused with one line naming ours (see peer-flags.ts).
 */
function checkOptions(o: Opts, given: (name: string) => boolean): void {
  if (o.user !== undefined && userLooksLikeTimeout(o.user)) throw new UsageError(USER_TIMEOUT_HINT(o.user));
  if (o.fanout !== undefined && given("p") && o.fanout !== o.p) throw new UsageError(`-f ${o.fanout} and -p ${o.p}: both set the fan-out; give one`);
  const ssh = o.R === "ssh" || o.R === "openssh";
  if (o.F !== undefined && !ssh) {
    throw new UsageError(`-F is the ssh config file of -R ssh and -R openssh; -R ${o.R} has none${o.R === "exec" ? " (put -F in the template: -- ssh -F FILE %h)" : ""}`);
  }
  if (o.hostKeyChecking !== undefined && !ssh) throw new UsageError(`--host-key-checking is for -R ssh and -R openssh; -R ${o.R} checks no host keys`);
  if (o.R !== "rsh") {
    for (const [flag, set] of [["--reset-after-eof", o.resetAfterEof], ["--local-ports", o.localPorts !== undefined]] as const) {
      if (set) throw new UsageError(`${flag} is for -R rsh; -R ${o.R} chooses its own local ports and closing`);
    }
  }
  if (o.R === "exec" && o.port !== undefined) throw new UsageError("--port: -R exec connects nowhere itself; put the port in the template (-- ssh -p PORT %h)");
}

interface Plan {
  command: string;
  hosts: string[];
  duplicates: string[];
  /** `user@host` in a host list: that host's remote user (over -u). */
  users: Map<string, string>;
}

async function plan(words: string[], o: Opts, io: CliIO, demo: DemoHosts | null, transferCommand: string | null): Promise<Plan> {
  let command = "";
  // Exclusions (`-host`, -x) and filters (`/re/`) apply to every host, wherever they come from, as in pdsh.
  const sel = emptySelection();
  const listed = o.hostfile !== undefined || (o.w?.length ?? 0) > 0 || (o.H?.length ?? 0) > 0 || (o.g?.length ?? 0) > 0 || !!o.a || demo !== null;
  // Groups are read only when asked for (-g, -a, @NAME, -@NAME): the reader and its YAML parser stay off the start-up path.
  const terms = [...(o.w ?? []), ...(o.x ?? []), ...(o.H ?? []), ...(listed ? [] : words.slice(1))];
  const wantsGroups = (o.g?.length ?? 0) > 0 || !!o.a || terms.some((t) => splitTopLevel(t).some((p) => /^-?@/.test(p)));
  const groups = wantsGroups ? (await import("./groups-reader.js")).groupResolver(io.env, o.groups, readHostFile) : null;
  const lists: HostListOptions = { readFile: readHostFile, ...(groups ? { resolveGroup: (name: string) => groups.resolve(name) } : {}) };
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
      const text = o.hostfile === "-" ? await readStdin(io) : readListedHostFile(o.hostfile);
      sel.include.push(...parseHostFile(text, o.hostfile === "-" ? "stdin" : o.hostfile, readHostFile));
    }
    for (const w of o.w ?? []) parseHostSelection(w, lists, sel);
    for (const h of o.H ?? []) for (const word of h.split(/\s+/).filter(Boolean)) parseHostSelection(word, lists, sel);
    for (const g of o.g ?? []) for (const name of splitTopLevel(g)) sel.include.push(...groups!.resolve(name.replace(/^@/, "")));
    if (o.a) sel.include.push(...groups!.all());
    if (demo) sel.include.push(...demo.addresses);
    if (!command && demo) command = DEMO_COMMAND;
  } else {
    if (words.length === 0) throw new UsageError('no command: multi-rsh [options] "command" host...  (or -l FILE / -w HOSTS)');
    command = words[0]!;
    for (const h of words.slice(1)) parseHostSelection(h, lists, sel);
  }
  if (!command.trim()) throw new UsageError("no command to run");
  for (const x of o.x ?? []) if (excludeLooksLikeSshArgs(x)) throw new UsageError(EXCLUDE_SSH_ARGS_HINT(x));
  for (const x of o.x ?? []) parseExclusion(x, lists, sel);
  const { hosts: unique, duplicates } = dedupeHosts(selectHosts(sel));
  if (unique.length === 0) throw new UsageError("no hosts to run on (give hosts, -w, -l or --demo)");
  return { command, hosts: unique, duplicates, users: sel.users };
}

/** What ends a run early besides Ctrl-C: a signal to stop (as a cancel), or stdout gone (EPIPE). */
type Stop = "SIGTERM" | "SIGHUP" | "EPIPE";
const STOP_EXIT: Record<Stop, number> = {
  SIGTERM: 128 + osConstants.signals.SIGTERM,
  SIGHUP: 128 + osConstants.signals.SIGHUP,
  // As if SIGPIPE had killed us, the way `yes | head -1` ends (Node ignores SIGPIPE and sees EPIPE).
  EPIPE: 128 + osConstants.signals.SIGPIPE,
};

/** After a stop, how long the output still queued for a pipe may delay the exit. */
const STOP_FLUSH_MS = 2000;
/** How the last main() was stopped, if it was (for run(), which then bounds its wait for stdout). */
let lastStop: Stop | null = null;

export async function main(argv: readonly string[], rawIO: CliIO = processIO()): Promise<number> {
  let demo: DemoHosts | null = null;
  // Until a run starts there is nothing to cancel: stdout lost then only keeps the run from starting
  // (SIGTERM and SIGHUP keep their default action until then: nothing of ours is left to clean up).
  let stop: Stop | null = null;
  let onStop: (why: Stop) => void = (why) => void (stop ??= why);
  const io = guardOutput(rawIO, (stream) => {
    if (stream === "stdout") onStop("EPIPE");
  });
  const onTerm = () => onStop("SIGTERM");
  const onHup = () => onStop("SIGHUP");
  try {
    let words: string[] = [];
    const program = buildProgram(io).action((w: string[]) => {
      words = w;
    });
    await program.parseAsync([...argv], { from: "user" });
    const o = program.opts<Opts>();
    if (o.h) {
      if (argv.length > 1) throw new UsageError(HELP_WITH_ARGUMENTS);
      program.outputHelp();
      return 0;
    }
    const given = (name: string) => program.getOptionValueSource(name) === "cli";
    checkOptions(o, given);
    if (o.fanout !== undefined) o.p = o.fanout;
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
    if (o.demo) demo = await (await import("../../remote/demo-hosts.js")).startDemoHosts();
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
    // Before the first connection: a fan-out of 1,000 at the usual soft limit of 1024 dies of EMFILE.
    const perHost = fdsPerHost(o.R, !!o.stderr);
    const fdLimit = await ensureFdLimit(Math.min(o.p, p.hosts.length) * perHost + FD_RESERVE);
    // Past the hard limit: fewer at once rather than hosts failing with EMFILE half way through.
    const soft = fdLimit.after?.soft ?? Infinity;
    const parallel = soft < fdLimit.needed ? Math.max(1, Math.min(o.p, Math.floor((soft - FD_RESERVE) / perHost))) : o.p;
    if (parallel < o.p && fdLimit.notice) fdLimit.notice += `; running ${parallel} at a time instead of -p ${o.p}`;
    // The default limit is for sshd's MaxStartups: -R ssh, -R openssh, and an exec template of ssh.
    const sshLike = o.R === "ssh" || o.R === "openssh" || (o.R === "exec" && /(^|\/)ssh$/.test(words[0] ?? ""));
    const rate = o.rate ?? (sshLike ? SSH_DEFAULT_RATE : 0);

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
    if (stop) return STOP_EXIT[stop as Stop];
    const gate = new OutputGate();
    const run = runHosts({
      flow: gate,
      hosts: p.hosts,
      command: p.command,
      transport,
      parallel,
      // Never rounded to 0 (= none): -t 0.0001 times out at once, as asked.
      timeoutMs: secondsToMs(o.t),
      connectTimeoutMs: secondsToMs(o.connectTimeout),
      commandTimeoutMs: secondsToMs(o.commandTimeout),
      idleTimeoutMs: secondsToMs(o.idleTimeout),
      ratePerSecond: rate,
      user: o.user ?? "",
      users: p.users,
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
    // SIGTERM and SIGHUP (a closed terminal, a supervisor, `timeout`) are a cancel, as the second
    // Ctrl-C: every host still gets its one result, exec children are ended, temp files removed.
    // stdout gone (EPIPE) too, quietly: nobody reads what we would say.
    onStop = (why) => {
      if (stop) return;
      stop = why;
      lastStop = why;
      interrupted = true;
      status?.clear();
      if (why !== "EPIPE") io.stderr.write(`multi-rsh: ${why}: resetting running connections, cancelling the rest\n`);
      run.cancel();
      gate.resume();
    };
    // Held until main returns, so a stop while the ledger is read still ends with the summary.
    io.signals.on("SIGTERM", onTerm);
    io.signals.on("SIGHUP", onHup);

    // What is needed only once output arrives or the run ends is loaded while the first connections
    // are in flight, not before them: every module loaded at start-up delays the first connection
    // of every run, and the hosts take a while to answer anyway. setImmediate: after the engine's
    // first connections are issued (they go out from microtasks and nextTicks). Until it is loaded,
    // what the run reports is kept in order.
    const later = new Promise<void>((resolve) => setImmediate(resolve)).then(() =>
      Promise.all([import("./output-sink.js"), import("../display.js"), import("../../remote/report.js"), import("../../core/exit-policy.js")]),
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
    const ready = new OutputSink(io, mode, !o.N, line, { gate, raw: !!o.raw });
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

    // clush sends a piped stdin to every host; here the remote stdin is always /dev/null (see
    // core/exit-marker.ts), so data piped in would be dropped without a word. Asked while the
    // hosts run, so the wait on an idle pipe costs nothing.
    const notices: string[] = fdLimit.notice ? [fdLimit.notice] : [];
    const stdinChecked = o.hostfile !== "-" && !o.nostdin && !o.I && io.stdinHasData
      ? io.stdinHasData().then((has) => void (has && notices.push(STDIN_NOTICE)), () => {})
      : Promise.resolve();
    let results: HostResult[];
    try {
      results = await run.done;
      await stdinChecked;
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
    const stopped = stop as Stop | null;
    const exitCode = stopped ? STOP_EXIT[stopped] : runExitCode(results, { largestRemote: !!o.S, interrupted });
    let demoSide: { served: number; serverClosedFirst: number; hostTimeWait: number } | undefined;
    if (demo) {
      demoSide = {
        served: demo.stats.served,
        serverClosedFirst: demo.stats.serverClosedFirst,
        hostTimeWait: countPeerTimeWait(results, rows, demo.port),
      };
    }
    ready.flushGathered(p.hosts);
    const dropped = ready.dropped();
    if (mode === "json") {
      const doc = {
        command: p.command,
        transport: transport.name,
        hosts: p.hosts,
        duplicates: p.duplicates,
        // Written in parts by writeDocument, in this place.
        results: null,
        counts: summary.counts,
        nonZeroExit: summary.nonZeroExit,
        failures: summary.failures,
        causes: summary.causes,
        retries: summary.retries,
        ledger: summary.ledger,
        durationMs: summary.durationMs,
        exitCode,
        ...(demoSide ? { demoHosts: demoSide } : {}),
        ...(notices.length || transport.notices?.length ? { notices: [...notices, ...(transport.notices ?? [])] } : {}),
        ...(dropped ? { outputDropped: dropped } : {}),
        fdLimit: { needed: fdLimit.needed, before: fdLimit.before, after: fdLimit.after, outcome: fdLimit.outcome, parallel },
        rate,
        ...(transfer ? transfer.json(results) : {}),
        ...(outDirs ? { outputDirs: { ...(o.o !== undefined ? { stdout: o.o } : {}), ...(o.e !== undefined ? { stderr: o.e } : {}) }, ...(outDirs.problems.length ? { outputProblems: outDirs.problems } : {}) } : {}),
      };
      ready.writeDocument(doc, results);
    } else if (mode === "ndjson") {
      // The host records went out as each ended; the run's own record closes the stream, on stdout
      // like the rest, so stderr stays quiet as with --json.
      const tail = {
        summary: {
          hosts: p.hosts.length,
          counts: summary.counts,
          nonZeroExit: summary.nonZeroExit,
          ledger: summary.ledger,
          durationMs: summary.durationMs,
          exitCode,
          ...(demoSide ? { demoHosts: demoSide } : {}),
          ...(notices.length || transport.notices?.length ? { notices: [...notices, ...(transport.notices ?? [])] } : {}),
          ...(dropped ? { outputDropped: dropped } : {}),
        },
      };
      io.stdout.write(JSON.stringify(tail) + "\n");
    } else {
      if (dropped) io.stderr.write(`multi-rsh: ${ready.droppedNotice(dropped)}\n`);
      for (const n of [...notices, ...(transport.notices ?? [])]) io.stderr.write(`multi-rsh: ${n}\n`);
      for (const n of outDirs?.problems.slice(0, 10) ?? []) io.stderr.write(`multi-rsh: ${n}\n`);
      if (transfer) io.stderr.write(transfer.describe(results));
      io.stderr.write(formatSummary(summary));
      // pdsh and clush read -t as the connect timeout: say what ours was when it cut hosts.
      const cutByT = given("t") && o.t > 0 && results.some((r) => r.state === "timedout" && r.durationMs >= o.t * 1000 - 100);
      if (cutByT) {
        io.stderr.write(`multi-rsh: -t ${o.t} is the total time per host, connect included (pssh's -t); pdsh/clush's -t is --connect-timeout here, -t 0 = no limit\n`);
      }
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
    io.signals.off("SIGTERM", onTerm);
    io.signals.off("SIGHUP", onHup);
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
      if (lastStop !== null) setTimeout(() => process.exit(code), STOP_FLUSH_MS).unref();
    },
    (err) => {
      process.exitCode = reportError("multi-rsh", err, processIO());
    },
  );
}
