/**
 * multi-rsh -o DIR / -e DIR (pssh's --outdir/--errdir): each host's output in DIR/HOST, written as it
 * arrives. Writes are synchronous and unbuffered on our side, so what a host sent is in its file the
 * moment it arrived: a Ctrl-C (or two) leaves every file complete up to that point. Each host's file
 * is created when its first output arrives or when it finishes, so every host of the run has one,
 * and closed with the host's result (one open file per running host, never one per host of the run).
 */
import { closeSync, mkdirSync, openSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../../errors.js";
import { hostFileTag } from "../../remote/copy.js";

export type Stream = "stdout" | "stderr";

/** Checks (and creates) the folder before any host is contacted; a file in the way is a usage error. */
export function prepareOutputDir(dir: string, flag: string): string {
  try {
    mkdirSync(dir, { recursive: true });
    if (!statSync(dir).isDirectory()) throw new Error("not a directory");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`${flag} '${dir}': ${code === "EEXIST" || code === "ENOTDIR" ? "not a directory" : (code ?? (e as Error).message)}`);
  }
  return dir;
}

export class OutputDirs {
  private readonly open = new Map<string, number>();
  /** Files we could not write, said once each at the end. */
  readonly problems: string[] = [];

  constructor(private readonly dirs: { stdout?: string; stderr?: string }) {}

  /** Does this stream go to a folder (and so not to the terminal)? */
  takes(stream: Stream): boolean {
    return this.dirs[stream] !== undefined;
  }

  private fd(host: string, stream: Stream): number | null {
    const key = `${stream}\0${host}`;
    const have = this.open.get(key);
    if (have !== undefined) return have;
    const dir = this.dirs[stream];
    if (dir === undefined) return null;
    const path = join(dir, hostFileTag(host));
    try {
      const fd = openSync(path, "w", 0o644);
      this.open.set(key, fd);
      return fd;
    } catch (e) {
      this.problems.push(`cannot write '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      this.open.set(key, -1);
      return -1;
    }
  }

  /** Writes the chunk to the host's file; false when this stream is not sent to a folder. */
  output(host: string, stream: Stream, chunk: Buffer): boolean {
    const fd = this.fd(host, stream);
    if (fd === null) return false;
    if (fd < 0) return true;
    try {
      let at = 0;
      while (at < chunk.length) at += writeSync(fd, chunk, at);
    } catch (e) {
      this.problems.push(`cannot write output of ${host}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return true;
  }

  /** The host is done: its files exist (empty when it said nothing) and are closed. */
  finish(host: string): void {
    for (const stream of ["stdout", "stderr"] as const) {
      const fd = this.fd(host, stream);
      if (fd === null) continue;
      if (fd >= 0) closeSync(fd);
      this.open.set(`${stream}\0${host}`, -2);
    }
  }

  closeAll(): void {
    for (const [key, fd] of this.open) {
      if (fd >= 0) closeSync(fd);
      this.open.set(key, -2);
    }
  }
}
