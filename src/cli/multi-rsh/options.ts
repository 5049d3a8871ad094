/**
 * multi-rsh's options: the parser (commander), the checks that refuse what another tool reads
 * another way or what the chosen transport would silently ignore, and what they mean for the
 * transport. Options stop at the first non-option word, so `multi-rsh -w h ls -l` runs `ls -l`.
 */
import { Command, Option } from "commander";
import { AddrinuseError, UsageError } from "../../errors.js";
import type { DemoHosts } from "../../remote/demo/rshd.js";
import type { TransportOptions } from "../../remote/transport.js";
import { countArg, portArg, secondsArg } from "../args.js";
import { commanderOutput } from "../exit.js";
import type { CliIO } from "../io.js";
import { packageVersion } from "../version.js";
import { HELP_WITH_ARGUMENTS, unknownFlagHint, userLooksLikeTimeout, USER_TIMEOUT_HINT } from "./peer-flags.js";

/**
 * -R ssh/openssh (and an exec template of ssh): new connections per second unless --rate says otherwise. OpenSSH's default
 * `MaxStartups 10:30:100` starts dropping handshakes at random once one sshd has 10 connections that
 * have not authenticated yet; at 100 a second with handshakes of up to 100 ms, hosts behind one sshd
 * (a bastion, one machine under many names) stay under that. Distinct hosts each see one connection.
 */
export const SSH_DEFAULT_RATE = 100;

export interface Opts {
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
    .configureOutput(
      commanderOutput("multi-rsh", io, (text) => {
        const unknown = /^unknown option '([^']+)'/.exec(text);
        const hint = unknown ? unknownFlagHint(unknown[1]!) : null;
        return hint ? `unknown option '${unknown![1]}': ${hint}` : text;
      }),
    )
    .version(packageVersion(), "-V, --version", "print the version and exit")
    // -h alone is help; with anything else it is refused (pssh's -h is a host file): see parseOptions().
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


export interface ParsedOptions {
  o: Opts;
  /** The words after the options: the command and hosts, or (-w/-l/-g) the command's words. */
  words: string[];
  /** Was this option given on the command line (not its default)? */
  given(name: string): boolean;
}

/** Parses and checks argv; null when help was asked for (and printed). */
export async function parseOptions(argv: readonly string[], io: CliIO): Promise<ParsedOptions | null> {
  let words: string[] = [];
  const program = buildProgram(io).action((w: string[]) => {
    words = w;
  });
  await program.parseAsync([...argv], { from: "user" });
  const o = program.opts<Opts>();
  if (o.h) {
    if (argv.length > 1) throw new UsageError(HELP_WITH_ARGUMENTS);
    program.outputHelp();
    return null;
  }
  const given = (name: string) => program.getOptionValueSource(name) === "cli";
  checkOptions(o, given);
  if (o.fanout !== undefined) o.p = o.fanout;
  if (o.sendInput) o.I = true;
  if (o.json && o.ndjson) throw new UsageError("--json and --ndjson: choose one");
  if (o.b && (o.json || o.ndjson)) throw new UsageError("-b gathers text output; with --json the output is in the document");
  if (o.demo && o.R !== "rsh") throw new UsageError("--demo hosts speak rsh: drop -R or use -R rsh");

  if (o.R === "rsh" && !o.demo && !o.localPorts && process.getuid?.() !== 0) {
    throw new AddrinuseError("AIU_NOT_ROOT", "rsh needs root: rshd only trusts connections from reserved ports (512-1023), which only root may bind");
  }
  return { o, words, given };
}

/** The transport's options; `template`: the exec template's words (-R exec). */
export function transportOptions(o: Opts, template: string[], demo: DemoHosts | null): TransportOptions {
  const t: TransportOptions = {
    resetAfterEof: !!o.resetAfterEof,
    ...(o.port !== undefined ? { port: o.port } : {}),
    ...(o.localPorts ? { localPorts: o.localPorts } : {}),
    ...(o.F ? { sshConfigFile: o.F } : {}),
    ...(o.hostKeyChecking ? { hostKeyChecking: o.hostKeyChecking } : {}),
    ...(o.R === "exec" ? { template } : {}),
  };
  if (demo) {
    t.port = demo.port;
    if (!demo.reservedOnly) t.localPorts = o.localPorts ?? [20000, 29999];
  }
  return t;
}

/** --rate, or its default: a limit for sshd's MaxStartups with -R ssh, -R openssh and an exec template of ssh. */
export function connectionRate(o: Opts, words: readonly string[]): number {
  const sshLike = o.R === "ssh" || o.R === "openssh" || (o.R === "exec" && /(^|\/)ssh$/.test(words[0] ?? ""));
  return o.rate ?? (sshLike ? SSH_DEFAULT_RATE : 0);
}
