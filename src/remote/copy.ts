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
 *
 * This file holds what every host shares: the plan, the commands, the file source and the rule for a
 * host's result. Each host's session is in copy-to-host.ts (--copy) or copy-from-host.ts (--rcopy).
 */
import { closeSync, openSync, readdirSync, readSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { UsageError } from "../errors.js";
import { isSafeName, shellQuote } from "./rcmd/rcp.js";
import type { HostResult } from "./engine.js";
import type { RemoteInput, HostErrorCode } from "./transport.js";

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

/** A file operation's failure in words, for a UsageError or the host's result. */
export function why(e: unknown): string {
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

/**
 * node:fs/promises, loaded on the first copy: importing it at start-up loads Node's readline, watch
 * and dir internals too (measured: ~3 ms of every multi-rsh run, copy or not).
 */
async function openFile(path: string, flags: string) {
  const { open } = await import("node:fs/promises");
  return open(path, flags);
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
export function applyOutcome(r: HostResult, o: CopyOutcome, finished: boolean, program: string): HostResult {
  if (r.state !== "done") return r;
  let error = o.error;
  if (!error && !finished) error = { code: "HOST_COPY", message: `the connection ended before the copy finished` };
  if (!error && r.exitCode !== null && r.exitCode !== 0) error = { code: "HOST_COPY", message: `${program} on the host exited with ${r.exitCode}` };
  return error ? { ...r, state: "failed", error } : r;
}

/** A host name as part of a local file name: nothing that could leave the folder. */
export function hostFileTag(host: string): string {
  return host.replace(/[/\0]/g, "_").replace(/^\.+$/, (m) => "_".repeat(m.length));
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
