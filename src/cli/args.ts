/** Parsers for option values, shared by the commands; each throws a UsageError naming the problem. */
import { isIP } from "node:net";
import { parsePort } from "../core/address.js";
import { UsageError } from "../errors.js";
import { MAX_TIMER_S } from "../core/timer.js";

export function portArg(text: string, what = "port"): number {
  const p = parsePort(text.trim());
  if (p === undefined) throw new UsageError(`bad ${what} '${text}': expected an integer from 1 to 65535`, "AIU_BAD_PORT");
  return p;
}

export function addressArg(text: string): string {
  const t = text.replace(/^\[(.*)\]$/, "$1");
  if (isIP(t) === 0) {
    throw new UsageError(`bad address '${text}': expected an IPv4 or IPv6 address (names are not looked up)`, "AIU_BAD_ADDRESS");
  }
  return t;
}

/**
 * A time in seconds, at most MAX_TIMER_S (about 24.8 days: a Node timer cannot wait longer, and a
 * longer one would fire at once). Turn it into milliseconds with core/timer.ts secondsToMs, which
 * never makes a positive time 0 (= none).
 */
export function secondsArg(text: string, what: string, { allowZero = true } = {}): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    throw new UsageError(`bad ${what} '${text}': expected a number of seconds${allowZero ? "" : " above 0"}`);
  }
  if (n > MAX_TIMER_S) {
    throw new UsageError(`bad ${what} '${text}': at most ${MAX_TIMER_S} seconds (24.8 days, the longest timer Node can set)${allowZero ? "; 0 = none" : ""}`);
  }
  return n;
}

export function countArg(text: string, what: string, min = 1, max = 1_000_000): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`bad ${what} '${text}': expected a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`bad ${what} '${text}': expected ${min} to ${max}`);
  return n;
}
