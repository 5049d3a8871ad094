/** Captured streams for calling a CLI's main(argv, io) in-process. */
import { EventEmitter } from "node:events";
import { Readable } from "node:stream";
import type { CliIO } from "../../src/cli/io.js";

export interface Captured extends CliIO {
  out(): string;
  err(): string;
  /** stdout's exact bytes (a host's output on a pipe is written as bytes). */
  outBytes(): Buffer;
  signals: EventEmitter;
}

export function captureIO(opts: { stdin?: string; tty?: boolean; env?: Record<string, string> } = {}): Captured {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const signals = new EventEmitter();
  const bytes = (c: string | Uint8Array) => (typeof c === "string" ? Buffer.from(c) : Buffer.from(c));
  return {
    stdout: { write: (c: string | Uint8Array) => (out.push(bytes(c)), true), isTTY: opts.tty ?? false },
    stderr: { write: (c: string | Uint8Array) => (err.push(bytes(c)), true), isTTY: opts.tty ?? false, columns: 100 },
    stdin: Readable.from(opts.stdin === undefined ? [] : [opts.stdin]),
    env: { ...(opts.env ?? {}) },
    signals,
    out: () => Buffer.concat(out).toString("utf8"),
    err: () => Buffer.concat(err).toString("utf8"),
    outBytes: () => Buffer.concat(out),
  };
}
