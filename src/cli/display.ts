/** Text layout shared by the commands: aligned columns, and a status line that rewrites itself on a TTY. */
import type { Out } from "./io.js";

export function table(rows: readonly (readonly string[])[], indent = ""): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd())
    .join("\n");
}

/** One line on stderr that is overwritten in place; cleared before anything else is printed. */
export class StatusLine {
  private shown = false;
  constructor(private readonly out: Out, private readonly enabled: boolean) {}
  set(text: string): void {
    if (!this.enabled) return;
    // A terminal may report 0 columns (a pty nobody sized): that means unknown, not no room.
    const width = (this.out.columns || 80) - 1;
    this.out.write(`\r\x1b[K${text.length > width ? text.slice(0, width) : text}`);
    this.shown = true;
  }
  clear(): void {
    if (this.enabled && this.shown) this.out.write("\r\x1b[K");
    this.shown = false;
  }
}

export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}
