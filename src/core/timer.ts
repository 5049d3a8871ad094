/**
 * Timer delays from user input. Node keeps a timer's delay as a signed 32-bit count of milliseconds:
 * a longer one (`-t 3000000`, 3e9 ms) is replaced by 1 ms with a TimeoutOverflowWarning, so a
 * "very long" timeout fired at once and, in closeAfterPeer, made us close first. And a timeout in
 * seconds rounded to whole milliseconds turned `-t 0.0001` into 0, which means "none".
 *
 * So: the CLIs refuse more than MAX_TIMER_S (exit 2) and never round a positive time to 0; the
 * library clamps a longer delay to MAX_TIMER_MS (24.8 days, "no limit" in practice, never "at
 * once") and refuses negative and NaN ones.
 */
import { ArgumentError } from "../errors.js";

/** The longest delay a Node timer holds: 2^31 - 1 ms, about 24.8 days. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The longest time, in whole seconds, the CLIs take for a timeout or an interval. */
export const MAX_TIMER_S = Math.floor(MAX_TIMER_MS / 1000);

/**
 * A library option in milliseconds as a setTimeout delay: 0 stays 0 (none, for the caller to skip),
 * a fraction is rounded up (never to 0), Infinity and anything past MAX_TIMER_MS become MAX_TIMER_MS.
 */
export function timerDelay(ms: number, name: string): number {
  if (typeof ms !== "number" || Number.isNaN(ms) || ms < 0) {
    throw new ArgumentError(`${name} must be a number of milliseconds >= 0 (0 = none), not ${String(ms)}`);
  }
  if (ms === 0) return 0;
  return Math.min(MAX_TIMER_MS, Math.ceil(ms));
}

/** Seconds (as the CLIs take them) to milliseconds: rounded, but a positive time is at least 1 ms. */
export function secondsToMs(s: number): number {
  if (s <= 0) return 0;
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.round(s * 1000)));
}
