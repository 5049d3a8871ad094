/** The streams a command writes to. Tests pass captured ones; `processIO()` is the real terminal. */
import { fstatSync } from "node:fs";
import type { Readable } from "node:stream";

export interface Out {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface CliIO {
  stdout: Out;
  stderr: Out;
  stdin: Readable;
  env: Record<string, string | undefined>;
  /** Where SIGINT/SIGQUIT arrive; tests emit on their own emitter. */
  signals: NodeJS.EventEmitter;
  /**
   * Does stdin bring data a user may expect a command to read (a pipe, a socket, a non-empty file;
   * not a terminal, not /dev/null)? Absent: no.
   */
  stdinPiped?(): boolean;
}

export function processIO(): CliIO {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    // A getter: process.stdin builds a stream on first use (~2 ms), and most runs never read it.
    get stdin() {
      return process.stdin;
    },
    env: process.env,
    signals: process,
    stdinPiped() {
      try {
        const st = fstatSync(0);
        return st.isFIFO() || st.isSocket() || (st.isFile() && st.size > 0);
      } catch {
        return false;
      }
    },
  };
}

/** Progress and countdowns go to stderr only when it is a terminal, and never when NO_PROGRESS is set. */
export function showsProgress(io: CliIO): boolean {
  return io.stderr.isTTY === true && !io.env.NO_PROGRESS;
}
