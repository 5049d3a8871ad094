/** Medians over rounds: the numbers every bench table quotes. */

/** The median, rounded to an integer (ms, bytes, counts); 0 for no samples. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return 0;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : Math.round((s[m - 1]! + s[m]!) / 2);
}

