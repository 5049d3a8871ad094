/**
 * How a multi-rsh run is stopped. Ctrl-C once: a status line, and the run goes on; twice within a
 * second, or Ctrl-\: stop now. SIGTERM and SIGHUP (a closed terminal, a supervisor, `timeout`) are a
 * cancel, as the second Ctrl-C: every host still gets its one result, exec children are ended, temp
 * files removed. stdout gone (EPIPE) too, quietly: nobody reads what we would say.
 *
 * Until a run starts there is nothing to cancel: stdout lost then only keeps the run from starting,
 * and SIGTERM and SIGHUP keep their default action (nothing of ours is left to clean up).
 */
import { constants as osConstants } from "node:os";
import type { RunStatus } from "../../remote/engine.js";
import type { CliIO } from "../io.js";

/** What ends a run early besides Ctrl-C: a signal to stop (as a cancel), or stdout gone (EPIPE). */
export type Stop = "SIGTERM" | "SIGHUP" | "EPIPE";

export const STOP_EXIT: Record<Stop, number> = {
  SIGTERM: 128 + osConstants.signals.SIGTERM,
  SIGHUP: 128 + osConstants.signals.SIGHUP,
  // As if SIGPIPE had killed us, the way `yes | head -1` ends (Node ignores SIGPIPE and sees EPIPE).
  EPIPE: 128 + osConstants.signals.SIGPIPE,
};

/** After a stop, how long the output still queued for a pipe may delay the exit. */
export const STOP_FLUSH_MS = 2000;

/** How the last run was stopped, if it was (for run(), which then bounds its wait for stdout). */
let lastStop: Stop | null = null;

export function lastRunStop(): Stop | null {
  return lastStop;
}

/** The running hosts, as far as stopping them goes. */
export interface Stoppable {
  cancel(): void;
  status(): RunStatus;
}

export class RunStops {
  /** Set by the first stop; the run's exit code is then STOP_EXIT's. */
  stop: Stop | null = null;
  /** Cancelled by the user or a stop: exit 130 unless a stop says otherwise. */
  interrupted = false;
  private run: Stoppable | null = null;
  private io: CliIO | null = null;
  private clearStatus: () => void = () => {};
  private resumeOutput: () => void = () => {};
  private lastInt = 0;
  private readonly onInt = () => this.interrupt();
  private readonly onQuit = () => this.abort();
  private readonly onTerm = () => this.request("SIGTERM");
  private readonly onHup = () => this.request("SIGHUP");

  /** A stop from outside: before the run starts it only keeps the run from starting. */
  request(why: Stop): void {
    if (this.run === null || this.io === null) {
      this.stop ??= why;
      return;
    }
    if (this.stop) return;
    this.stop = why;
    lastStop = why;
    this.interrupted = true;
    this.clearStatus();
    if (why !== "EPIPE") this.io.stderr.write(`multi-rsh: ${why}: resetting running connections, cancelling the rest\n`);
    this.run.cancel();
    // Hosts held back for a reader that went away must not wait for it.
    this.resumeOutput();
  }

  /** From the start of the run; `clearStatus` wipes the progress line before anything is said. */
  watch(io: CliIO, run: Stoppable, output: { clearStatus(): void; resume(): void }): void {
    this.io = io;
    this.run = run;
    this.clearStatus = () => output.clearStatus();
    this.resumeOutput = () => output.resume();
    io.signals.on("SIGINT", this.onInt);
    io.signals.on("SIGQUIT", this.onQuit);
    io.signals.on("SIGTERM", this.onTerm);
    io.signals.on("SIGHUP", this.onHup);
  }

  /** Every host has its result: Ctrl-C is Node's again. */
  hostsDone(): void {
    this.io?.signals.off("SIGINT", this.onInt);
    this.io?.signals.off("SIGQUIT", this.onQuit);
  }

  /** SIGTERM and SIGHUP are held until main returns, so a stop while the ledger is read still ends with the summary. */
  release(): void {
    this.io?.signals.off("SIGTERM", this.onTerm);
    this.io?.signals.off("SIGHUP", this.onHup);
  }

  private abort(): void {
    this.interrupted = true;
    this.clearStatus();
    this.io!.stderr.write("multi-rsh: interrupted: resetting running connections, cancelling the rest\n");
    this.run!.cancel();
  }

  private interrupt(): void {
    const now = Date.now();
    if (now - this.lastInt < 1000) return this.abort();
    this.lastInt = now;
    const s = this.run!.status();
    this.clearStatus();
    const active = [...s.connecting, ...s.running];
    this.io!.stderr.write(
      `multi-rsh: ${s.finished.length} done, ${active.length} running${active.length ? ` (${active.slice(0, 20).join(" ")}${active.length > 20 ? " ..." : ""})` : ""}, ${s.queued.length} waiting. Ctrl-C again within 1 s to stop.\n`,
    );
  }
}
