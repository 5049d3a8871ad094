/**
 * The one place where errors become a one-line message and an exit code. A user mistake never shows
 * a stack trace; an error that is not ours is a bug, and says so.
 */
import { CommanderError } from "commander";
import { AddrinuseError, UsageError } from "../errors.js";
import type { CliIO } from "./io.js";
import { oneLine } from "../core/untrusted.js";

/** The longest error message printed, in characters. */
const MESSAGE_MAX = 1000;

export const EXIT_OK = 0;
export const EXIT_FAIL = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

const USAGE_CODES = new Set([
  "AIU_USAGE",
  "AIU_BAD_PORT",
  "AIU_BAD_ADDRESS",
  "AIU_BAD_ARGUMENT",
  "AIU_NOT_LINUX",
  "AIU_NOT_ROOT",
  "AIU_HOSTLIST_SYNTAX",
  "AIU_HOSTFILE",
]);

/**
 * Commander's output through `io`, its errors as one line of ours (`prog: message`; commander puts
 * "(Did you mean ...?)" on a line of its own). `reword` may say more about a message.
 */
export function commanderOutput(prog: string, io: CliIO, reword: (text: string) => string = (t) => t) {
  return {
    writeOut: (s: string) => io.stdout.write(s),
    writeErr: (s: string) => io.stderr.write(s),
    outputError: (s: string, write: (str: string) => void) => write(`${prog}: ${reword(s.trim().replace(/^error: /, "").replace(/\n+/g, " "))}\n`),
  };
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  // A UsageError is a user mistake whatever its code (AIU_COPY for a missing source, AIU_GROUP...).
  if (err instanceof UsageError) return EXIT_USAGE;
  if (err instanceof AddrinuseError) return USAGE_CODES.has(err.code) ? EXIT_USAGE : EXIT_FAIL;
  return EXIT_FAIL;
}

export function reportError(prog: string, err: unknown, io: CliIO): number {
  const code = exitCodeFor(err);
  if (err instanceof CommanderError) {
    // Commander already wrote its message through configureOutput (or it was --help/--version).
    return code;
  }
  if (err instanceof AddrinuseError) {
    // One line, whatever a message quotes (a file's bytes, a host's words): control characters
    // escaped, length bounded (core/untrusted.ts).
    io.stderr.write(`${prog}: ${oneLine(err.message, MESSAGE_MAX)}\n`);
    return code;
  }
  const e = err as Error;
  io.stderr.write(`${prog}: internal error (a bug, please report it): ${e?.stack ?? String(err)}\n`);
  return EXIT_FAIL;
}
