/**
 * One local program per host, for the transports that fork (-R exec, -R openssh), as pdsh's pipecmd
 * is for its exec and ssh modules: argv[0] with the rest as arguments (no shell), stdin at EOF (or
 * the run's input), stdout and stderr to the host's output, and the exit once the program has exited
 * and its output pipes are drained. What the exit means (a result, a log to read, a relay to close)
 * is the transport's.
 *
 * Each child runs in its own process group (detached): a Ctrl-C at the terminal goes to the
 * multi-rsh process alone, which prints its status and carries on (the engine's rule), instead of
 * killing every child; an abort kills the whole group, so helpers the program started go too.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { ABORTED, notStarted, writableStdin, type RunRequest, type TransportResult } from "./transport.js";

/** The longest `beforeKill` may delay the kill. */
export const ABORT_HOOK_MS = 1000;

export interface LocalCommandOptions {
  /** Once the program runs (before any output). */
  onSpawn?(child: ChildProcess): void;
  /** On abort, before the group is killed (openssh resets ssh's connection); the kill waits for it, at most ABORT_HOOK_MS. */
  beforeKill?(): Promise<void>;
}

/** How a local program ended: never started, or exited (by itself, or killed on abort). */
export type LocalExit =
  | { started: false; result: TransportResult }
  | { started: true; code: number | null; signal: NodeJS.Signals | null; aborted: boolean };

/**
 * Runs argv and resolves once it has exited and its output pipes are drained. Never rejects. The
 * output goes to `req.onStdout`/`req.onStderr` (merged into stdout unless `separateStderr`).
 */
export function runLocalCommand(argv: readonly string[], req: RunRequest, o: LocalCommandOptions = {}): Promise<LocalExit> {
  return new Promise((resolve) => {
    if (req.signal.aborted) return resolve({ started: false, result: notStarted("HOST_CANCELLED", "cancelled before the local command started") });
    const [file, ...args] = argv;
    const child = spawn(file!, args, { stdio: [req.input ? "pipe" : "ignore", "pipe", "pipe"], detached: true, shell: false });
    // A program that exits without reading all its input: EPIPE is its business, not an error here.
    child.stdin?.on("error", () => {});
    // Behind a slow reader the child blocks in write(2) on its full pipe instead of us buffering.
    const detach = [req.flow?.attach(child.stdout!), req.flow?.attach(child.stderr!)];
    let spawned = false;
    let aborted = false;
    let closed = false;
    const killGroup = () => {
      // Even when the leader has exited: a helper it left behind may hold the output pipes open. The
      // group id cannot be reused while any member lives, and after `close` nothing is killed.
      if (child.pid === undefined || closed) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    };
    const kill = () => {
      aborted = true;
      // A paused pipe would hold back the child's `close` (and so this host's result) until the
      // reader catches up: what is left in it is at most a pipe's worth, let it go.
      for (const d of detach) d?.();
      child.stdout?.resume();
      child.stderr?.resume();
      if (!o.beforeKill) return killGroup();
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((r) => (timer = setTimeout(r, ABORT_HOOK_MS)));
      void Promise.race([o.beforeKill().catch(() => {}), bound]).then(() => {
        clearTimeout(timer);
        killGroup();
      });
    };
    req.signal.addEventListener("abort", kill, { once: true });
    const done = (exit: LocalExit) => {
      closed = true;
      for (const d of detach) d?.();
      req.signal.removeEventListener("abort", kill);
      resolve(exit);
    };
    child.on("spawn", () => {
      spawned = true;
      o.onSpawn?.(child);
      if (req.input && child.stdin) req.input.start(writableStdin(child.stdin, () => child.stdin!.end()));
    });
    child.stdout!.on("data", (d: Buffer) => req.onStdout(d));
    const errOut = req.separateStderr ? req.onStderr : req.onStdout;
    child.stderr!.on("data", (d: Buffer) => errOut(d));
    child.on("error", (e: NodeJS.ErrnoException) => {
      if (spawned) return;
      const why = e.code === "ENOENT" ? "not found" : e.code === "EACCES" ? "not executable" : e.message;
      done({ started: false, result: notStarted("HOST_TRANSPORT", `cannot run '${file}': ${why}`) });
    });
    child.on("close", (code, signal) => {
      if (spawned) done({ started: true, code, signal, aborted });
    });
  });
}

/** The result of a program whose TCP connection (if any) is its own: its own exit status. */
export function exitResult(exit: LocalExit): TransportResult {
  if (!exit.started) return exit.result;
  return { exitCode: exit.code, signal: exit.signal, closedBy: null, localPort: null, connected: true, error: exit.aborted ? ABORTED : null };
}
