/** Captured streams for calling a CLI's main(argv, io) in-process. */
import { EventEmitter } from "node:events";
import { Readable } from "node:stream";
import type { CliIO } from "../../src/cli/io.js";

export interface Captured extends CliIO {
  out(): string;
  err(): string;
  signals: EventEmitter;
}

export function captureIO(opts: { stdin?: string; tty?: boolean; env?: Record<string, string> } = {}): Captured {
  let out = "";
  let err = "";
  const signals = new EventEmitter();
  return {
    stdout: { write: (s: string) => ((out += s), true), isTTY: opts.tty ?? false },
    stderr: { write: (s: string) => ((err += s), true), isTTY: opts.tty ?? false, columns: 100 },
    stdin: Readable.from(opts.stdin === undefined ? [] : [opts.stdin]),
    env: { ...(opts.env ?? {}) },
    signals,
    out: () => out,
    err: () => err,
  };
}
