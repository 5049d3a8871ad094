/**
 * `addrinuse`: why a port cannot be bound, who holds it, how long until the kernel lets go, and what
 * to do. Each subcommand lives in its own file; this one wires the argument parser (commander) to
 * them and turns every error into one line and an exit code through cli/exit.ts. (Loading every
 * subcommand up front costs `why` under 5 ms in the bundle: see cli/startup.ts.)
 */
import { Command, Option } from "commander";
import { normaliseStateName } from "../../kernel/parse.js";
import { assertLinux, tableSourceProblem } from "../../kernel/read.js";
import { UsageError } from "../../errors.js";
import { addressArg, countArg, portArg, secondsArg } from "../args.js";
import { commanderOutput, reportError } from "../exit.js";
import { processIO, type CliIO } from "../io.js";
import { packageVersion } from "../version.js";
import { runWhyDemo } from "./demo-why.js";
import { runFree } from "./free.js";
import { registerLab } from "./lab.js";
import { runLs, runWatch } from "./ls.js";
import { runTune } from "./tune.js";
import { runWait } from "./wait.js";
import { runWhyConnect } from "./why-connect.js";
import { runWhy } from "./why.js";

function stateArg(text: string) {
  const s = normaliseStateName(text);
  if (!s) throw new UsageError(`bad state '${text}': expected a TCP state such as LISTEN, ESTABLISHED, TIME_WAIT, FIN_WAIT_2`);
  return s;
}

export function buildProgram(io: CliIO, done: (code: number) => void): Command {
  const program = new Command("addrinuse")
    .description("Why can't this port be bound? Who holds it, in which TCP state, for how long, and what to do.")
    .exitOverride()
    .configureOutput(commanderOutput("addrinuse", io))
    .showSuggestionAfterError(true)
    .allowExcessArguments(false)
    .version(packageVersion(), "--version", "print the version and exit");

  program
    .command("why")
    .description(
      "bind PORT as a Node server would, list every socket on it by state and owner, and say why and what to do (exit 0 bindable, 1 not); " +
        "with --connect HOST:PORT instead: whether connect() there is out of local ports (exit 0 no, 1 yes)",
    )
    .argument("[port]", "TCP port, 1-65535", (v) => portArg(v))
    .option("--host <addr>", "the address your server would bind, or localhost (default: all addresses, as Node's listen)", (v) => (v === "localhost" ? v : addressArg(v)))
    .option("--connect <host:port>", "client side: count the 4-tuples toward this destination against the ephemeral range")
    .option("--json", "one JSON document on stdout")
    .action(async (port: number | undefined, o: { host?: string; connect?: string; json?: boolean }) => {
      if (o.connect !== undefined) {
        if (port !== undefined || o.host !== undefined) throw new UsageError("why --connect HOST:PORT takes no PORT and no --host");
        done(await runWhyConnect(o.connect, !!o.json, io));
        return;
      }
      if (port === undefined) throw new UsageError("why needs a PORT (or --connect HOST:PORT)");
      done(await runWhy({ port, host: o.host, json: !!o.json }, io));
    });

  program
    .command("wait")
    .description("wait until PORT can be bound, without connecting to it; countdown from the kernel's timers (exit 0 bindable, 1 timed out)")
    .argument("<port>", "TCP port, 1-65535", (v) => portArg(v))
    .option("--host <addr>", "the address to bind", addressArg)
    .option("--timeout <seconds>", "give up after this long (0 = no limit)", (v) => secondsArg(v, "--timeout"), 0)
    .option("--without-reuseaddr", "wait until a program that does not set SO_REUSEADDR could bind (TIME_WAIT gone too)")
    .option("--json", "one JSON document on stdout")
    .action(async (port: number, o: { host?: string; timeout: number; withoutReuseaddr?: boolean; json?: boolean }) => {
      done(await runWait({ port, host: o.host, timeoutS: o.timeout, withoutReuseAddr: !!o.withoutReuseaddr, json: !!o.json }, io));
    });

  program
    .command("free")
    .description(
      "show what would free PORT, and with --yes do it: destroy its TIME_WAIT/orphaned sockets (netlink SOCK_DESTROY, as ss -K), TERM then KILL the processes holding it (exit 0 bindable at the end, 1 not)",
    )
    .argument("<port>", "TCP port, 1-65535", (v) => portArg(v))
    .option("--host <addr>", "only sockets that conflict with a bind to this address", addressArg)
    .option("--yes", "do it (without: only say what would be done)")
    .option("--grace <seconds>", "between SIGTERM and SIGKILL", (v) => secondsArg(v, "--grace"), 5)
    .option("--json", "one JSON document on stdout")
    .action(async (port: number, o: { host?: string; yes?: boolean; grace: number; json?: boolean }) => {
      done(await runFree({ port, host: o.host, yes: !!o.yes, graceS: o.grace, json: !!o.json }, io));
    });

  const lsOptions = (c: Command) =>
    c
      .option("--port <port>", "only this local port", (v) => portArg(v))
      .option("--state <state>", "only sockets in this state (TIME_WAIT, ESTABLISHED, ...)", stateArg)
      .option("--top <n>", "show the N busiest ports", (v) => countArg(v, "--top"), 20)
      .option("--json", "JSON on stdout");

  lsOptions(program.command("ls").description("TCP sockets counted per local port and state, busiest first")).action(
    async (o: { port?: number; state?: ReturnType<typeof stateArg>; top: number; json?: boolean }) => {
      done(await runLs({ port: o.port, state: o.state, top: o.top, json: !!o.json }, io));
    },
  );

  lsOptions(program.command("watch").description("the same as ls, refreshed live (Ctrl-C stops)"))
    .option("--interval <seconds>", "seconds between refreshes", (v) => secondsArg(v, "--interval", { allowZero: false }), 1)
    .addOption(new Option("--count <n>", "stop after N refreshes (0 = until Ctrl-C)").argParser((v) => countArg(v, "--count", 0)).default(0))
    .action(async (o: { port?: number; state?: ReturnType<typeof stateArg>; top: number; json?: boolean; interval: number; count: number }) => {
      done(await runWatch({ port: o.port, state: o.state, top: o.top, json: !!o.json, intervalS: o.interval, count: o.count }, io));
    });

  program
    .command("tune")
    .description("read-only: the kernel settings behind TIME_WAIT and port exhaustion, what each really does, how to change it")
    .option("--json", "JSON on stdout")
    .action(async (o: { json?: boolean }) => {
      done(await runTune(!!o.json, io));
    });

  program
    .command("demo")
    .description("show `why` on a port this demo holds: a listener, then the TIME_WAIT it leaves")
    .option("--json", "JSON on stdout")
    .action(async (o: { json?: boolean }) => {
      done(await runWhyDemo(!!o.json, io));
    });
  registerLab(program, io, done);
  return program;
}

export async function main(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  let code = 0;
  try {
    assertLinux("addrinuse");
    // Before any command: a misspelt reader must not pass for a comparison of procfs with itself.
    const badTable = tableSourceProblem(io.env.ADDRINUSE_TABLE);
    if (badTable !== undefined) throw new UsageError(badTable);
    const program = buildProgram(io, (c) => (code = c));
    if (argv.length === 0) {
      program.outputHelp({ error: true });
      return 2;
    }
    await program.parseAsync([...argv], { from: "user" });
    return code;
  } catch (err) {
    return reportError("addrinuse", err, io);
  }
}

/** What `| head -c 100` does to us when the reader goes: exit as SIGPIPE would (141), quietly. */
const STDOUT_LOST_EXIT = 141;

export function run(): void {
  // A reader that goes away mid-document (`ls --json | head -c 50`) gives EPIPE. Unhandled, its error
  // event was thrown from inside the netlink addon's callback scope and aborted the process
  // ("terminate called ... Napi::Error"). Commands with something to clean up (lab) listen
  // themselves; this is the fallback for the rest.
  for (const s of [process.stdout, process.stderr]) {
    s.on("error", (e: NodeJS.ErrnoException) => {
      if (s.listenerCount("error") > 1) return;
      process.exit(e.code === "EPIPE" ? STDOUT_LOST_EXIT : 1);
    });
  }
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.exitCode = reportError("addrinuse", err, processIO());
    },
  );
}
