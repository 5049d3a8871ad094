/**
 * multi-rsh --copy and --rcopy: files to and from every host over the same transports as commands,
 * with the rcp protocol (remote/rcmd/rcp.ts) spoken to `rcp` (over rsh, as rcp(1) itself does) or `scp`
 * (over ssh and the system's ssh) in its server mode on the host.
 *
 * Why this keeps the remote closing first: the exchange ends inside the protocol, not with our EOF.
 * For --copy we are the source and end with a top-level `E`, which makes `rcp -t` answer and exit;
 * for --rcopy the host's `rcp -f` exits once its files are sent. Over rsh the connection is the
 * program's stdin and stdout (RemoteInput framing "protocol"), so the client never half-closes; the
 * remote shell exits, rshd closes, and the TIME_WAIT stays on the host.
 *
 * One plan (sources stat'ed, trees walked, bad input refused before any host is contacted) is shared
 * by every host; each host has its own session, which answers for that host only: a host where a file
 * fails (no space, permission, no rcp) gets its own result with the reason and the others go on.
 */
import { closeSync, fstatSync, futimesSync, mkdirSync, openSync, readdirSync, readSync, statSync, utimesSync, writeSync } from "node:fs";
import { open as openFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { UsageError } from "../errors.js";
import {
  END_RECORD,
  OK,
  SinkParser,
  StatusReader,
  dirRecord,
  errorStatus,
  fileRecord,
  isSafeName,
  shellQuote,
  timeRecord,
  type StatusEvent,
} from "./rcmd/rcp.js";
import type { HostResult } from "./engine.js";
import type { RemoteInput, RemoteStdin, HostErrorCode } from "./transport.js";

/** Files whose total is at most this are read once and sent from memory to every host. */
export const COPY_CACHE_BYTES = 256 * 1024 * 1024;
const CHUNK = 1024 * 1024;

export interface CopyEntry {
  kind: "file" | "dir";
  path: string;
  name: string;
  mode: number;
  size: number;
  mtimeSec: number;
  atimeSec: number;
  children: CopyEntry[];
}

export interface CopyPlan {
  entries: CopyEntry[];
  files: number;
  bytes: number;
  recursive: boolean;
  preserve: boolean;
}

export interface CopyFlags {
  recursive: boolean;
  preserve: boolean;
}

function why(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === "ENOENT" ? "no such file or directory" : code === "EACCES" ? "permission denied" : (code ?? (e as Error).message);
}

/**
 * Stats every source (following symbolic links, as rcp does) and walks directories. Throws a
 * UsageError for a missing, unreadable or special source, or a directory without -r: nothing has
 * been sent anywhere yet.
 */
export function planCopy(sources: readonly string[], flags: CopyFlags): CopyPlan {
  if (sources.length === 0) throw new UsageError("--copy needs at least one source file", "AIU_COPY");
  const plan: CopyPlan = { entries: [], files: 0, bytes: 0, ...flags };
  const visit = (path: string, name: string, top: boolean): CopyEntry => {
    let st;
    try {
      st = statSync(path);
    } catch (e) {
      throw new UsageError(`cannot copy '${path}': ${why(e)}`, "AIU_COPY");
    }
    const base = { path, name, mode: st.mode & 0o777, size: 0, mtimeSec: Math.floor(st.mtimeMs / 1000), atimeSec: Math.floor(st.atimeMs / 1000), children: [] };
    if (st.isDirectory()) {
      if (!flags.recursive) throw new UsageError(`cannot copy '${path}': a directory (add -r)`, "AIU_COPY");
      let names: string[];
      try {
        names = readdirSync(path).sort();
      } catch (e) {
        throw new UsageError(`cannot copy '${path}': ${why(e)}`, "AIU_COPY");
      }
      const entry: CopyEntry = { ...base, kind: "dir" };
      for (const n of names) {
        if (!isSafeName(n)) throw new UsageError(`cannot copy '${join(path, n)}': the name has a newline`, "AIU_COPY");
        entry.children.push(visit(join(path, n), n, false));
      }
      return entry;
    }
    if (!st.isFile()) throw new UsageError(`cannot copy '${path}': not a regular file or directory`, "AIU_COPY");
    // Open and read a byte now: "permission denied" belongs before the first host, not on every host.
    try {
      const fd = openSync(path, "r");
      try {
        readSync(fd, Buffer.alloc(1), 0, 1, 0);
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      throw new UsageError(`cannot copy '${path}': ${why(e)}`, "AIU_COPY");
    }
    void top;
    plan.files++;
    plan.bytes += st.size;
    return { ...base, kind: "file", size: st.size };
  };
  for (const s of sources) {
    const name = basename(s);
    if (!isSafeName(name)) throw new UsageError(`cannot copy '${s}': no file name in it`, "AIU_COPY");
    plan.entries.push(visit(s, name, true));
  }
  return plan;
}

/** The program on the host: `rcp` over rsh (rcp(1) runs it there the same way), `scp` otherwise, or the user's (--rcp-path). */
export type RcpProgram = string;

export function copyToCommand(program: RcpProgram, plan: CopyPlan, dest: string): string {
  const flags = [plan.recursive ? "-r" : "", plan.preserve ? "-p" : "", "-d"].filter(Boolean);
  return [program, ...flags, "-t", "--", shellQuote(dest)].join(" ");
}

export function copyFromCommand(program: RcpProgram, sources: readonly string[], flags: CopyFlags): string {
  const f = [flags.recursive ? "-r" : "", flags.preserve ? "-p" : ""].filter(Boolean);
  return [program, ...f, "-f", "--", ...sources.map(shellQuote)].join(" ");
}

/** File contents shared by every host while the plan is small enough to keep in memory. */
export class CopySource {
  private readonly cache = new Map<string, Promise<Buffer>>();
  constructor(private readonly plan: CopyPlan) {}

  /** Calls `send` with the file's bytes, `size` of them in all; the promise says whether it was read whole. */
  async stream(entry: CopyEntry, send: (b: Buffer) => Promise<boolean>): Promise<{ sent: number; readError: string | null; aborted: boolean }> {
    if (this.plan.bytes <= COPY_CACHE_BYTES) {
      let p = this.cache.get(entry.path);
      if (!p) {
        p = openFile(entry.path, "r").then(async (fh) => {
          try {
            const buf = Buffer.alloc(entry.size);
            let at = 0;
            while (at < entry.size) {
              const { bytesRead } = await fh.read(buf, at, entry.size - at, at);
              if (bytesRead === 0) break;
              at += bytesRead;
            }
            return at === entry.size ? buf : buf.subarray(0, at);
          } finally {
            await fh.close();
          }
        });
        this.cache.set(entry.path, p);
      }
      let buf: Buffer;
      try {
        buf = await p;
      } catch (e) {
        return this.pad(entry.size, 0, why(e), send);
      }
      for (let at = 0; at < buf.length; at += CHUNK) {
        if (!(await send(buf.subarray(at, Math.min(buf.length, at + CHUNK))))) return { sent: at, readError: null, aborted: true };
      }
      return buf.length === entry.size ? { sent: buf.length, readError: null, aborted: false } : this.pad(entry.size, buf.length, "the file shrank while being copied", send);
    }
    let fh;
    try {
      fh = await openFile(entry.path, "r");
    } catch (e) {
      return this.pad(entry.size, 0, why(e), send);
    }
    const buf = Buffer.alloc(Math.min(CHUNK, Math.max(1, entry.size)));
    let at = 0;
    try {
      while (at < entry.size) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await fh.read(buf, 0, Math.min(buf.length, entry.size - at), at));
        } catch (e) {
          // The record promised `size` bytes: keep the protocol in step and let the host report the file.
          return await this.pad(entry.size, at, why(e), send);
        }
        if (bytesRead === 0) return await this.pad(entry.size, at, "the file shrank while being copied", send);
        // A copy: the buffer is reused for the next read while the transport may still hold this one.
        if (!(await send(Buffer.from(buf.subarray(0, bytesRead))))) return { sent: at, readError: null, aborted: true };
        at += bytesRead;
      }
      return { sent: at, readError: null, aborted: false };
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /** The record promised `size` bytes: send zeros for the rest and say why (the sink reports the file as failed). */
  private async pad(size: number, from: number, readError: string, send: (b: Buffer) => Promise<boolean>) {
    for (let at = from; at < size; at += CHUNK) {
      if (!(await send(Buffer.alloc(Math.min(CHUNK, size - at))))) return { sent: at, readError, aborted: true };
    }
    return { sent: size, readError, aborted: false };
  }
}

export interface CopyOutcome {
  error: { code: HostErrorCode; message: string } | null;
  files: number;
  bytes: number;
}

/** The host's result as the copy saw it: a command that ran is not "done" if a file failed. */
function applyOutcome(r: HostResult, o: CopyOutcome, finished: boolean, program: string): HostResult {
  if (r.state !== "done") return r;
  let error = o.error;
  if (!error && !finished) error = { code: "HOST_COPY", message: `the connection ended before the copy finished` };
  if (!error && r.exitCode !== null && r.exitCode !== 0) error = { code: "HOST_COPY", message: `${program} on the host exited with ${r.exitCode}` };
  return error ? { ...r, state: "failed", error } : r;
}

/** One host's --copy: we are the rcp source. */
export class CopyToSession {
  readonly input: RemoteInput;
  private readonly reader = new StatusReader();
  private readonly queue: StatusEvent[] = [];
  private waiter: ((s: StatusEvent | null) => void) | null = null;
  private closed = false;
  private finished = false;
  private fatal: string | null = null;
  private garbage = false;
  private readonly warnings: string[] = [];
  private files = 0;
  private bytes = 0;

  constructor(
    private readonly plan: CopyPlan,
    private readonly source: CopySource,
    private readonly program: RcpProgram,
  ) {
    this.input = {
      framing: "protocol",
      start: (stdin) =>
        void this.run(stdin).catch((e: unknown) => {
          // Not expected (file errors are sent as the file's status); the host still gets one result.
          this.fatal ??= `multi-rsh: ${(e as Error)?.message ?? String(e)}`;
          stdin.end();
        }),
    };
  }

  onStdout(chunk: Buffer): void {
    for (const ev of this.reader.push(chunk)) this.deliver(ev);
  }

  /** The transport is done with this host: anything still waiting for an answer gets none. */
  close(): void {
    this.closed = true;
    this.deliver(null);
  }

  private deliver(ev: StatusEvent | null): void {
    if (ev) this.queue.push(ev);
    const w = this.waiter;
    if (!w) return;
    if (this.queue.length) {
      this.waiter = null;
      w(this.queue.shift()!);
    } else if (this.closed) {
      this.waiter = null;
      w(null);
    }
  }

  private next(): Promise<StatusEvent | null> {
    if (this.queue.length) return Promise.resolve(this.queue.shift()!);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** "ok" to go on, "skip" this entry (the host refused it and said why), "stop" the host. */
  private async answer(what: string): Promise<"ok" | "skip" | "stop"> {
    const s = await this.next();
    if (s === null) return "stop";
    if ("garbage" in s) {
      this.garbage = true;
      return "stop";
    }
    if (s.ok) return "ok";
    if (s.fatal) {
      this.fatal = s.message || `the host gave up at ${what}`;
      return "stop";
    }
    this.warnings.push(s.message || `the host refused ${what}`);
    return "skip";
  }

  private async run(stdin: RemoteStdin): Promise<void> {
    if ((await this.answer("the start")) !== "ok") return;
    for (const e of this.plan.entries) if (!(await this.send(stdin, e))) return;
    await stdin.write(Buffer.from(END_RECORD));
    if ((await this.answer("the end")) !== "ok") return;
    this.finished = true;
    stdin.end();
  }

  private async send(stdin: RemoteStdin, e: CopyEntry): Promise<boolean> {
    if (this.plan.preserve) {
      await stdin.write(Buffer.from(timeRecord(e.mtimeSec, e.atimeSec)));
      const a = await this.answer(e.name);
      if (a !== "ok") return a === "skip";
    }
    if (e.kind === "dir") {
      await stdin.write(Buffer.from(dirRecord(e.mode, e.name)));
      const a = await this.answer(e.name);
      if (a !== "ok") return a === "skip";
      for (const c of e.children) if (!(await this.send(stdin, c))) return false;
      await stdin.write(Buffer.from(END_RECORD));
      return (await this.answer(`the end of ${e.name}`)) !== "stop";
    }
    await stdin.write(Buffer.from(fileRecord(e.mode, e.size, e.name)));
    const a = await this.answer(e.name);
    if (a !== "ok") return a === "skip";
    const r = await this.source.stream(e, (b) => stdin.write(b));
    if (r.aborted) return false;
    await stdin.write(r.readError ? errorStatus(`${e.path}: ${r.readError}`) : OK);
    const b = await this.answer(e.name);
    if (b === "ok") {
      this.files++;
      this.bytes += r.sent;
    }
    return b !== "stop";
  }

  outcome(): CopyOutcome {
    let error: CopyOutcome["error"] = null;
    if (this.garbage) {
      const text = this.reader.garbageText() ?? "";
      error = /not found|No such file/i.test(text)
        ? { code: "HOST_COPY", message: `no ${this.program} on the host: ${text.split("\n")[0]}` }
        : { code: "HOST_PROTOCOL", message: `not the rcp protocol from the host: '${text.slice(0, 120)}'` };
    } else if (this.fatal) error = { code: "HOST_COPY", message: this.fatal };
    else if (this.warnings.length) error = { code: "HOST_COPY", message: this.warnings.join("; ") };
    return { error, files: this.files, bytes: this.bytes };
  }

  result(r: HostResult): HostResult {
    return applyOutcome(r, this.outcome(), this.finished, this.program);
  }
}

/** A host name as part of a local file name: nothing that could leave the folder. */
export function hostFileTag(host: string): string {
  return host.replace(/[/\0]/g, "_").replace(/^\.+$/, (m) => "_".repeat(m.length));
}

/**
 * One host's --rcopy: we are the rcp sink. Each top-level name lands as DEST/NAME.HOST (clush's
 * naming), so hosts never write over each other; the host may only send the names asked for.
 */
export class CopyFromSession {
  readonly input: RemoteInput;
  private readonly parser = new SinkParser();
  private stdin: RemoteStdin | null = null;
  private readonly allowed: Set<string>;
  private readonly stack: { path: string; mtime?: number; atime?: number }[] = [];
  private times: { mtime: number; atime: number } | null = null;
  private fd: number | null = null;
  private filePath = "";
  private fileTimes: { mtime: number; atime: number } | null = null;
  private writeError: string | null = null;
  private readonly errors: string[] = [];
  private broken: string | null = null;
  private files = 0;
  private bytes = 0;
  readonly written: string[] = [];

  constructor(
    private readonly host: string,
    private readonly dest: string,
    sources: readonly string[],
    private readonly flags: CopyFlags,
    private readonly program: RcpProgram,
  ) {
    this.allowed = new Set(sources.map((s) => basename(s)));
    this.input = {
      framing: "protocol",
      start: (stdin) => {
        this.stdin = stdin;
        void stdin.write(OK);
      },
    };
  }

  private reply(b: Buffer): void {
    void this.stdin?.write(b);
  }

  private local(name: string): string {
    return this.stack.length === 0 ? join(this.dest, `${name}.${hostFileTag(this.host)}`) : join(this.stack[this.stack.length - 1]!.path, name);
  }

  private violate(message: string): void {
    this.broken = message;
    this.reply(errorStatus(`multi-rsh: ${message}`, true));
  }

  onStdout(chunk: Buffer): void {
    if (this.broken !== null) return;
    try {
      this.take(chunk);
    } catch (e) {
      // A local file operation we did not foresee failing: this host stops, the others go on.
      this.errors.push(`${this.filePath || this.dest}: ${why(e)}`);
      this.broken = "";
      this.reply(errorStatus(`multi-rsh: ${why(e)}`, true));
    }
  }

  private take(chunk: Buffer): void {
    for (const ev of this.parser.push(chunk)) {
      if (this.broken !== null) return;
      switch (ev.kind) {
        case "time":
          this.times = { mtime: ev.mtime, atime: ev.atime };
          this.reply(OK);
          break;
        case "file": {
          if (this.stack.length === 0 && !this.allowed.has(ev.name)) return this.violate(`the host sent '${ev.name}', which was not asked for`);
          this.filePath = this.local(ev.name);
          this.fileTimes = this.times;
          this.times = null;
          this.writeError = null;
          try {
            this.fd = openSync(this.filePath, "w", ev.mode | 0o200);
          } catch (e) {
            this.fd = null;
            this.errors.push(`${this.filePath}: ${why(e)}`);
            // \1: the source skips this file's data and goes on with the next.
            this.parser.skipData();
            this.reply(errorStatus(`${this.filePath}: ${why(e)}`));
            break;
          }
          this.reply(OK);
          break;
        }
        case "data":
          if (this.fd !== null && this.writeError === null) {
            try {
              let at = 0;
              while (at < ev.chunk.length) at += writeSync(this.fd, ev.chunk, at);
              this.bytes += ev.chunk.length;
            } catch (e) {
              this.writeError = why(e);
            }
          }
          break;
        case "fileEnd": {
          if (this.fd !== null) {
            try {
              if (this.flags.preserve && this.fileTimes) futimesSync(this.fd, this.fileTimes.atime, this.fileTimes.mtime);
              if (fstatSync(this.fd).isFile()) this.written.push(this.filePath);
            } catch (e) {
              this.writeError ??= why(e);
            }
            closeSync(this.fd);
            this.fd = null;
          }
          if (ev.error) this.errors.push(`${this.filePath}: ${ev.error}`);
          if (this.writeError) {
            this.errors.push(`${this.filePath}: ${this.writeError}`);
            this.reply(errorStatus(`${this.filePath}: ${this.writeError}`));
          } else {
            this.files++;
            this.reply(OK);
          }
          break;
        }
        case "dir": {
          if (!this.flags.recursive) return this.violate(`the host sent a directory '${ev.name}' without -r`);
          if (this.stack.length === 0 && !this.allowed.has(ev.name)) return this.violate(`the host sent '${ev.name}', which was not asked for`);
          const path = this.local(ev.name);
          try {
            mkdirSync(path, { mode: ev.mode | 0o700 });
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "EEXIST" || !statSync(path).isDirectory()) {
              this.errors.push(`${path}: ${why(e)}`);
              this.reply(errorStatus(`${path}: ${why(e)}`));
              // The source skips the directory; but the parser has no depth of its own to skip.
              break;
            }
          }
          this.stack.push({ path, ...(this.times ? { mtime: this.times.mtime, atime: this.times.atime } : {}) });
          this.times = null;
          this.reply(OK);
          break;
        }
        case "end": {
          const d = this.stack.pop();
          if (!d) return this.violate("an end of directory outside any directory");
          if (this.flags.preserve && d.mtime !== undefined) {
            try {
              utimesSync(d.path, d.atime!, d.mtime);
            } catch {
              // A time not kept is not worth failing the host over.
            }
          }
          this.reply(OK);
          break;
        }
        case "warning":
          this.errors.push(ev.message);
          break;
        case "fatal":
          this.errors.push(ev.message);
          break;
        case "violation":
          return this.violate(ev.message);
      }
    }
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
      this.errors.push(`${this.filePath}: the connection ended in the middle of the file`);
    }
  }

  outcome(): CopyOutcome {
    // broken === "": stopped for a local error, which is in errors.
    const error = this.broken
      ? { code: "HOST_PROTOCOL" as HostErrorCode, message: `not the rcp protocol from the host: ${this.broken}` }
      : this.errors.length
        ? { code: "AIU_COPY" as HostErrorCode, message: this.errors.join("; ") }
        : null;
    return { error, files: this.files, bytes: this.bytes };
  }

  result(r: HostResult): HostResult {
    const o = this.outcome();
    const finished = o.error !== null || this.files > 0 || this.written.length > 0;
    return applyOutcome(r, { ...o, error: o.error ?? (finished ? null : { code: "HOST_COPY", message: "the host sent no file" }) }, true, this.program);
  }
}

/** -I: the same bytes for every host, length-delimited so rsh's client never half-closes. */
export function stdinInput(bytes: Buffer): RemoteInput {
  return {
    framing: { length: bytes.length },
    start: (stdin) => {
      void (async () => {
        for (let at = 0; at < bytes.length; at += CHUNK) {
          if (!(await stdin.write(bytes.subarray(at, Math.min(bytes.length, at + CHUNK))))) return;
        }
        stdin.end();
      })();
    },
  };
}
