/**
 * Reading host files (-l FILE, -l -, ^FILE in -w), bounded: `-l /dev/zero` or an endless stdin used
 * to be read whole (std::bad_alloc, a crash with no result). A host list of a million hosts is about
 * 16 MB; past HOST_FILE_MAX_BYTES it is not a host list, and the run stops with a usage error.
 */
import { closeSync, openSync, readSync } from "node:fs";
import type { Readable } from "node:stream";
import { UsageError } from "../../errors.js";
import { oneLine } from "../../core/untrusted.js";
import { readAtMost } from "../io.js";

export const HOST_FILE_MAX_BYTES = 64 * 1024 * 1024;

function tooBig(name: string): UsageError {
  return new UsageError(`host file '${oneLine(name, 100)}' is larger than ${HOST_FILE_MAX_BYTES / 1048576} MiB: not a host list`, "AIU_HOSTFILE");
}

export function readHostFile(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new UsageError(`cannot read host file '${oneLine(path, 100)}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "AIU_HOSTFILE");
  }
  try {
    const parts: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(1024 * 1024);
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        throw new UsageError(`cannot read host file '${oneLine(path, 100)}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "AIU_HOSTFILE");
      }
      if (n === 0) break;
      total += n;
      if (total > HOST_FILE_MAX_BYTES) throw tooBig(path);
      parts.push(buf.subarray(0, n));
    }
    return Buffer.concat(parts).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

export async function readHostStdin(stdin: Readable): Promise<string> {
  return (await readAtMost(stdin, HOST_FILE_MAX_BYTES, () => tooBig("-"))).toString("utf8");
}
