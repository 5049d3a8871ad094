/**
 * Random bytes from the kernel's pool (/dev/urandom), for ids a remote command must not guess (the
 * rsh exit marker). Read through node:fs, which every command has loaded already: node:crypto would
 * add ~2 ms to the start-up of every run, before the first connection. Bytes are read 512 at a time.
 */
import { closeSync, openSync, readSync } from "node:fs";

const POOL = 512;
let pool = Buffer.alloc(0);
let used = 0;

export function randomHex(bytes: number): string {
  if (used + bytes > pool.length) {
    pool = Buffer.alloc(Math.max(POOL, bytes));
    const fd = openSync("/dev/urandom", "r");
    try {
      let got = 0;
      while (got < pool.length) got += readSync(fd, pool, got, pool.length - got, null);
    } finally {
      closeSync(fd);
    }
    used = 0;
  }
  used += bytes;
  return pool.toString("hex", used - bytes, used);
}
