/**
 * Text we did not write (a remote host's refusal, a line of a file given with -l) on its way into a
 * one-line message: bounded, and with control characters escaped, so that NUL bytes, terminal escape
 * sequences or a 700 MB "message" cannot garble the operator's terminal, break the one-line rule or
 * exhaust the heap. Pure.
 */

/** Control characters (C0, DEL, C1) and line/paragraph separators, shown as \xNN / \uNNNN. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** `text` on one line: control characters escaped, at most `max` characters kept (then "..."). */
export function oneLine(text: string, max = 300): string {
  const cut = text.length > max ? text.slice(0, max) : text;
  const shown = cut.replace(CONTROL, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u${n.toString(16).padStart(4, "0")}`;
  });
  return text.length > max ? `${shown}... (${text.length - max} more characters)` : shown;
}

/**
 * Keeps the first `keep` bytes of a stream and counts the rest: for a message the remote side sends,
 * which it might never end. `over` tells when more than `limit` bytes came, time to stop reading.
 */
export class BoundedBytes {
  private readonly parts: Buffer[] = [];
  private kept = 0;
  total = 0;

  constructor(
    readonly keep: number,
    readonly limit: number,
  ) {}

  push(chunk: Buffer): void {
    this.total += chunk.length;
    if (this.kept < this.keep) {
      const part = chunk.subarray(0, this.keep - this.kept);
      this.parts.push(Buffer.from(part));
      this.kept += part.length;
    }
  }

  get over(): boolean {
    return this.total > this.limit;
  }

  /** What was kept, as text (UTF-8), and how many bytes were not kept. */
  text(): { text: string; dropped: number } {
    return { text: Buffer.concat(this.parts).toString("utf8"), dropped: this.total - this.kept };
  }
}
