/** The streams a command writes to. Tests pass captured ones; `processIO()` is the real terminal. */
import { fstatSync } from "node:fs";
import type { Readable } from "node:stream";

export interface Out {
  /** Strings as UTF-8; bytes as they are (a host's output on a pipe). false: over the high-water
   * mark, wait for "drain" (a stream's backpressure). */
  write(chunk: string | Uint8Array): unknown;
  isTTY?: boolean;
  columns?: number;
  once?(event: "drain", listener: () => void): unknown;
  on?(event: "error", listener: (err: Error) => void): unknown;
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
    // A getter: process.stdin builds a stream on first use (3-4 ms) and makes a piped fd 0
    // non-blocking (libuv) while we run, for whoever else reads that pipe too; most runs never read it.
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

export type OutName = "stdout" | "stderr";

/**
 * The same streams, but one that fails (EPIPE from `| head -1`, EIO from a hung-up terminal) is
 * written to no more, instead of throwing or queueing into a pipe nobody reads; `onLost` hears of it
 * once per stream. Whoever waits for its "drain" is let go at once, or a paused run would wait
 * forever.
 */
export function guardOutput(io: CliIO, onLost: (stream: OutName, err: Error) => void): CliIO {
  const guard = (name: OutName, out: Out): Out => {
    let lost = false;
    let waiting: (() => void)[] = [];
    const release = () => {
      const w = waiting;
      waiting = [];
      for (const fn of w) fn();
    };
    out.on?.("error", (err: Error) => {
      if (lost) return;
      lost = true;
      release();
      onLost(name, err);
    });
    const g: Out = {
      write: (chunk: string | Uint8Array) => (lost ? true : out.write(chunk)),
      get isTTY() {
        return out.isTTY;
      },
      get columns() {
        return out.columns;
      },
    };
    if (out.once) {
      g.once = (_event: "drain", listener: () => void) => {
        if (lost) return listener();
        waiting.push(listener);
        if (waiting.length === 1) out.once?.("drain", release);
      };
    }
    return g;
  };
  const stdout = guard("stdout", io.stdout);
  const stderr = guard("stderr", io.stderr);
  return {
    stdout,
    stderr,
    // Still a getter: see processIO().
    get stdin() {
      return io.stdin;
    },
    env: io.env,
    signals: io.signals,
    ...(io.stdinHasData ? { stdinHasData: () => io.stdinHasData!() } : {}),
  };
}

/**
 * All of a stream, at most `limit` bytes: past that it is destroyed and `tooBig()` is thrown (a host
 * list or -I's input is kept in memory, so a stdin without end must not be).
 */
export async function readAtMost(stream: Readable, limit: number, tooBig: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(String(c));
    n += b.length;
    if (n > limit) {
      stream.destroy();
      throw tooBig();
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
