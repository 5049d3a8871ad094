/**
 * -R exec: run a local command per host, from a pdsh-style template: `%h` the host, `%u` the remote
 * user, `%%` a percent sign (other `%` sequences are left as they are), and the remote command
 * appended as the last argument, e.g. `-R exec -- docker exec %h sh -c` or
 * `-R exec -- kubectl exec %h -- sh -c`.
 *
 * The template is an argument vector, never a shell line: a host name full of `;` or `$(...)` lands in
 * one argument of the program and nowhere else. There is no TCP connection of ours, so closedBy is
 * null; the exit code is the local command's.
 *
 * Each child runs in its own process group (detached): a Ctrl-C at the terminal goes to the
 * multi-rsh process alone, which prints its status and carries on (the engine's rule), instead of
 * killing every child; an abort kills the whole group, so helpers the template started go too.
 * runLocalCommand() is shared with the openssh transport.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { UsageError, type ErrorCode } from "../../errors.js";
import type { RunRequest, Transport, TransportOptions, TransportResult } from "../transport.js";

/** Substitute %h, %u and %% in each template argument. */
export function expandTemplate(template: readonly string[], host: string, user: string): string[] {
  return template.map((arg) =>
    arg.replace(/%([%hu])/g, (_m, c: string) => (c === "%" ? "%" : c === "h" ? host : user)),
  );
}

export interface ChildHooks {
  /** Called once the child is running (before any output), with its pid. */
  onSpawn?(child: ChildProcess): void;
  /** Called before onStdout/onStderr for each chunk (openssh watches for the first byte). */
  onOutput?(): void;
  /**
   * Runs on abort before the group is killed (openssh resets ssh's connection here); the kill waits
   * for it, at most ABORT_HOOK_MS.
   */
  onAbort?(): Promise<void>;
  /** Every chunk of the child's own stderr, merged or not (openssh reads ssh's parting words). */
  onStderr?(chunk: Buffer): void;
  /** Turns the exit into a result (openssh reads its log here). Default: the child's own status. */
  finish?(code: number | null, signal: NodeJS.Signals | null, aborted: boolean): TransportResult | Promise<TransportResult>;
}

/** The longest an onAbort hook may delay the kill. */
export const ABORT_HOOK_MS = 1000;

function abortError(signal: AbortSignal): { code: ErrorCode; message: string } {
  return signal.reason === "timeout"
    ? { code: "ERR_COMMAND_TIMEOUT", message: "timed out: local command killed" }
    : { code: "ERR_CANCELLED", message: "cancelled: local command killed" };
}

/**
 * Spawn argv[0] with the rest as arguments (no shell), stdin at EOF, and resolve once it has exited
 * and its output pipes are drained. Never rejects.
 */
export function runLocalCommand(argv: readonly string[], req: RunRequest, hooks: ChildHooks = {}): Promise<TransportResult> {
  return new Promise((resolve) => {
    if (req.signal.aborted) {
      resolve({ exitCode: null, signal: null, closedBy: null, localPort: null, connected: false, error: abortError(req.signal) });
      return;
    }
    const [file, ...args] = argv;
    const child = spawn(file!, args, { stdio: ["ignore", "pipe", "pipe"], detached: true, shell: false });
    let spawned = false;
    let aborted = false;
    let settled = false;
    const killGroup = () => {
      // Even when the leader has exited: a helper it left behind may hold the output pipes open. The
      // group id cannot be reused while any member lives, and after `close` nothing is killed.
      if (child.pid === undefined || settled) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    };
    const kill = () => {
      aborted = true;
      if (!hooks.onAbort) return killGroup();
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((r) => (timer = setTimeout(r, ABORT_HOOK_MS)));
      void Promise.race([hooks.onAbort().catch(() => {}), bound]).then(() => {
        clearTimeout(timer);
        killGroup();
      });
    };
    req.signal.addEventListener("abort", kill, { once: true });
    const done = (r: TransportResult) => {
      if (settled) return;
      settled = true;
      req.signal.removeEventListener("abort", kill);
      resolve(r);
    };
    child.on("spawn", () => {
      spawned = true;
      hooks.onSpawn?.(child);
    });
    const errOut = req.separateStderr ? req.onStderr : req.onStdout;
    child.stdout!.on("data", (d: Buffer) => {
      hooks.onOutput?.();
      req.onStdout(d);
    });
    child.stderr!.on("data", (d: Buffer) => {
      hooks.onOutput?.();
      hooks.onStderr?.(d);
      errOut(d);
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      if (spawned) return;
      const why = e.code === "ENOENT" ? "not found" : e.code === "EACCES" ? "not executable" : e.message;
      done({
        exitCode: null,
        signal: null,
        closedBy: null,
        localPort: null,
        connected: false,
        error: { code: "ERR_TRANSPORT", message: `cannot run '${file}': ${why}` },
      });
    });
    child.on("close", (code, sig) => {
      if (!spawned) return;
      const finish = hooks.finish
        ? hooks.finish(code, sig, aborted)
        : {
            exitCode: code,
            signal: sig,
            closedBy: null,
            localPort: null,
            connected: true,
            error: aborted ? abortError(req.signal) : null,
          };
      void Promise.resolve(finish).then(done, (e: unknown) =>
        done({
          exitCode: code,
          signal: sig,
          closedBy: null,
          localPort: null,
          connected: true,
          error: { code: "ERR_TRANSPORT", message: String(e) },
        }),
      );
    });
  });
}

export class ExecTransport implements Transport {
  readonly name = "exec" as const;
  private readonly template: readonly string[];

  constructor(options: TransportOptions) {
    const template = options.template ?? [];
    if (template.length === 0 || template[0] === "") {
      throw new UsageError("-R exec needs a command template after --, e.g. -R exec -- docker exec %h sh -c");
    }
    this.template = template;
  }

  run(req: RunRequest): Promise<TransportResult> {
    const argv = [...expandTemplate(this.template, req.host, req.user || req.localUser), req.command];
    return runLocalCommand(argv, req, { onSpawn: () => req.onConnected({ localPort: null }) });
  }
}

export function createExecTransport(options: TransportOptions): Transport {
  return new ExecTransport(options);
}
