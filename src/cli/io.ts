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
   * Did stdin bring data that a command might have been meant to read (a pipe, socket or file with
   * bytes in it; not a terminal, not /dev/null, not an empty or idle pipe)? Absent: no. Reads what is
   * there: ask only when nothing else will read stdin.
   */
  stdinHasData?(): Promise<boolean>;
}

/** How long stdinHasData() waits on a pipe whose writer neither writes nor closes. */
export const STDIN_PEEK_MS = 50;

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
    stdinHasData() {
      let st;
      try {
        st = fstatSync(0);
      } catch {
        return Promise.resolve(false);
      }
      if (st.isFile()) return Promise.resolve(st.size > 0);
      if (!st.isFIFO() && !st.isSocket()) return Promise.resolve(false);
      // A pipe: data already written is readable at once, as is its end; a writer that is still
      // there and silent (an idle ssh session's stdin, say) is given STDIN_PEEK_MS, no more.
      return new Promise<boolean>((resolve) => {
        const stdin = process.stdin;
        const done = (v: boolean) => {
          clearTimeout(timer);
          stdin.off("readable", onReadable);
          stdin.off("error", onError);
          stdin.pause();
          resolve(v);
        };
        const onReadable = () => done(stdin.read() !== null);
        const onError = () => done(false);
        const timer = setTimeout(() => done(false), STDIN_PEEK_MS);
        stdin.on("readable", onReadable);
        stdin.on("error", onError);
      });
    },
  };
}

/** Progress and countdowns go to stderr only when it is a terminal, and never when NO_PROGRESS is set. */
export function showsProgress(io: CliIO): boolean {
  return io.stderr.isTTY === true && !io.env.NO_PROGRESS;
}
