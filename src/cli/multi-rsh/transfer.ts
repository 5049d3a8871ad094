/**
 * The glue between multi-rsh's options and remote/copy.ts: --copy, --rcopy and -I turn into a remote
 * command, an input for each host, a filter on the host's stdout (protocol bytes are not output) and
 * a rewrite of each host's result (a command that ran but whose file failed is not "done"). Every
 * check on the user's input happens here, before any host is contacted.
 */
import { statSync } from "node:fs";
import type { Readable } from "node:stream";
import { UsageError } from "../../errors.js";
import type { HostResult } from "../../remote/engine.js";
import { CopySource, copyFromCommand, copyToCommand, planCopy, stdinInput, type CopyPlan, type RcpProgram } from "../../remote/copy.js";
import { CopyToSession } from "../../remote/copy-to-host.js";
import { CopyFromSession } from "../../remote/copy-from-host.js";
import type { RemoteInput } from "../../remote/transport.js";
import { readAtMost, type CliIO } from "../io.js";
import type { Opts } from "./options.js";

/** -I keeps stdin in memory once (every host is sent the same buffer): at most this much. */
export const MAX_STDIN_BYTES = 64 * 1024 * 1024;

export type TransferOptions = Pick<Opts, "copy" | "rcopy" | "dest" | "r" | "preserve" | "I" | "rcpPath">;

export interface Transfer {
  kind: "copy" | "rcopy" | "stdin";
  /** The remote command for --copy/--rcopy; null: the user's command (-I). */
  command: string | null;
  inputFor(host: string): RemoteInput;
  /** True when the bytes were the protocol's, not output to show. */
  onStdout(host: string, chunk: Buffer): boolean;
  result(r: HostResult): HostResult;
  /** One line for the summary. */
  describe(results: readonly HostResult[]): string;
  json(results: readonly HostResult[]): Record<string, unknown>;
}

function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} B`;
}

/** Throws a UsageError for a combination that cannot work; null when no transfer was asked for. */
export function checkTransferOptions(o: TransferOptions, hostfileFromStdin: boolean, commandWords: number): void {
  const copying = o.copy !== undefined || o.rcopy !== undefined;
  if (o.copy && o.rcopy) throw new UsageError("--copy and --rcopy: choose one");
  if (copying && o.dest === undefined) throw new UsageError(`${o.copy ? "--copy" : "--rcopy"} needs --dest DIR`);
  if (!copying && o.dest !== undefined) throw new UsageError("--dest goes with --copy or --rcopy");
  if (!copying && o.rcpPath !== undefined) throw new UsageError("--rcp-path goes with --copy or --rcopy");
  if (o.rcpPath !== undefined && !/^[A-Za-z0-9_./+-]+$/.test(o.rcpPath)) throw new UsageError(`--rcp-path '${o.rcpPath}': a program name or path, without spaces or shell characters`);
  if (!copying && (o.r || o.preserve)) throw new UsageError(`${o.r ? "-r" : "--preserve"} goes with --copy or --rcopy`);
  if (copying && commandWords > 0) throw new UsageError(`${o.copy ? "--copy" : "--rcopy"} runs no command: put the files after it and the hosts in -w/-l/-g`);
  if (o.I && copying) throw new UsageError("-I sends stdin to a command; --copy sends files: choose one");
  if (o.I && hostfileFromStdin) throw new UsageError("-I and -l -: stdin can carry the input or the host list, not both");
}

export async function readStdinForAll(stdin: Readable, limit = MAX_STDIN_BYTES): Promise<Buffer> {
  if ((stdin as { isTTY?: boolean }).isTTY) {
    throw new UsageError("-I sends stdin to every host, but stdin is a terminal: pipe or redirect it (... | multi-rsh -I ...)", "AIU_STDIN");
  }
  return readAtMost(stdin, limit, () => new UsageError(`-I: stdin is larger than ${mib(limit)}, which is what -I keeps in memory to send to every host (use --copy for files)`, "AIU_STDIN"));
}

/** What a copy keeps per host: its input, what it makes of the host's stdout, and its verdict. */
interface HostSession {
  readonly input: RemoteInput;
  onStdout(chunk: Buffer): void;
  close(): void;
  result(r: HostResult): HostResult;
}

/** One session per host, made as the host starts; a host's result is adjusted once, however often asked. */
function perHostSessions<S extends HostSession>(make: (host: string) => S, ended?: (s: S) => void): Pick<Transfer, "inputFor" | "onStdout" | "result"> {
  const sessions = new Map<string, S>();
  const adjusted = new Map<string, HostResult>();
  return {
    inputFor: (host) => {
      const s = make(host);
      sessions.set(host, s);
      return s.input;
    },
    onStdout: (host, chunk) => {
      sessions.get(host)?.onStdout(chunk);
      return true;
    },
    result: (r) => {
      const have = adjusted.get(r.host);
      if (have) return have;
      const s = sessions.get(r.host);
      s?.close();
      const out = s ? s.result(r) : r;
      if (s) ended?.(s);
      adjusted.set(r.host, out);
      return out;
    },
  };
}

export function planTransfer(o: TransferOptions, program: RcpProgram, stdinBytes: Buffer | null): Transfer {
  if (o.I) {
    const bytes = stdinBytes ?? Buffer.alloc(0);
    return {
      kind: "stdin",
      command: null,
      inputFor: () => stdinInput(bytes),
      onStdout: () => false,
      result: (r) => r,
      describe: (results) => `multi-rsh: -I: ${mib(bytes.length)} of stdin sent to ${results.filter((r) => r.state === "done").length} of ${results.length} hosts\n`,
      json: () => ({ stdinBytes: bytes.length }),
    };
  }
  const flags = { recursive: !!o.r, preserve: !!o.preserve };
  const dest = o.dest!;
  if (dest.trim() === "") throw new UsageError("--dest: empty");
  if (o.copy) {
    const plan: CopyPlan = planCopy(o.copy, flags);
    const source = new CopySource(plan);
    const command = copyToCommand(program, plan, dest);
    return {
      kind: "copy",
      command,
      ...perHostSessions(() => new CopyToSession(plan, source, program)),
      describe: (results) =>
        `multi-rsh: --copy: ${plan.files} file${plan.files === 1 ? "" : "s"} (${mib(plan.bytes)}) to ${dest} on ${results.filter((r) => r.state === "done").length} of ${results.length} hosts\n`,
      json: (results) => ({
        copy: { sources: o.copy, dest, files: plan.files, bytes: plan.bytes, hostsDone: results.filter((r) => r.state === "done").length },
      }),
    };
  }
  try {
    if (!statSync(dest).isDirectory()) throw new Error("not a directory");
  } catch {
    throw new UsageError(`--rcopy --dest '${dest}': not a directory here (files land as DIR/NAME.HOST)`, "AIU_COPY");
  }
  const sources = o.rcopy!;
  if (sources.length === 0) throw new UsageError("--rcopy needs at least one remote path", "AIU_COPY");
  const command = copyFromCommand(program, sources, flags);
  let files = 0;
  let bytes = 0;
  return {
    kind: "rcopy",
    command,
    ...perHostSessions(
      (host) => new CopyFromSession(host, dest, sources, flags, program),
      (s) => {
        const oc = s.outcome();
        files += oc.files;
        bytes += oc.bytes;
      },
    ),
    describe: (results) => `multi-rsh: --rcopy: ${files} file${files === 1 ? "" : "s"} (${mib(bytes)}) into ${dest} from ${results.filter((r) => r.state === "done").length} of ${results.length} hosts\n`,
    json: (results) => ({ rcopy: { sources, dest, files, bytes, hostsDone: results.filter((r) => r.state === "done").length } }),
  };
}

/**
 * --copy, --rcopy and -I, checked (and -I's stdin read) before any host is contacted; null when none
 * was asked for. A copy takes as long as its bytes do, so -t applies only when given; connecting
 * still has a bound (10 s, clush's and pdsh's), or a host that never answers would hold the run.
 */
export async function transferFor(o: Opts, words: readonly string[], io: CliIO, given: (name: string) => boolean): Promise<Transfer | null> {
  if (!(o.copy || o.rcopy || o.I || o.dest !== undefined || o.r || o.preserve || o.rcpPath !== undefined)) return null;
  // Words that would be a command (with -R exec every word is the template).
  checkTransferOptions(o, o.hostfile === "-", o.R === "exec" ? 0 : words.length);
  // io.stdin only now: touching process.stdin makes a piped fd 0 non-blocking (see io.ts).
  const stdinBytes = o.I ? await readStdinForAll(io.stdin) : null;
  const transfer = planTransfer(o, o.rcpPath ?? (o.R === "rsh" ? "rcp" : "scp"), stdinBytes);
  if (transfer.kind !== "stdin" && !given("t")) {
    o.t = 0;
    if (!given("connectTimeout")) o.connectTimeout = 10;
  }
  return transfer;
}
