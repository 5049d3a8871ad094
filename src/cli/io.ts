/** The streams a command writes to. Tests pass captured ones; `processIO()` is the real terminal. */
import type { Readable } from "node:stream";

export interface Out {
  /** Strings as UTF-8; bytes as they are (a host's output on a pipe). */
  write(chunk: string | Uint8Array): unknown;
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
  };
}

/** Progress and countdowns go to stderr only when it is a terminal, and never when NO_PROGRESS is set. */
export function showsProgress(io: CliIO): boolean {
  return io.stderr.isTTY === true && !io.env.NO_PROGRESS;
}
