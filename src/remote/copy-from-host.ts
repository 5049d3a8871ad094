/**
 * One host's --rcopy session: we are the rcp sink for the host's `rcp -f` (or `scp -f`), and write
 * what it sends under the destination folder. Apart from copy.ts, which holds what every host
 * shares, because this is the side that writes local files from a host's bytes: it decides where
 * each name lands (DEST/NAME.HOST), refuses names it did not ask for, and turns local failures into
 * that host's result.
 */
import { closeSync, fstatSync, futimesSync, mkdirSync, openSync, statSync, utimesSync, writeSync } from "node:fs";
import { basename, join } from "node:path";
import { OK, SinkParser, errorStatus } from "./rcmd/rcp.js";
import type { HostResult } from "./engine.js";
import type { RemoteInput, RemoteStdin, HostErrorCode } from "./transport.js";
import { applyOutcome, hostFileTag, why, type CopyFlags, type CopyOutcome, type RcpProgram } from "./copy.js";

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
