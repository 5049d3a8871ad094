/**
 * Turns a host's byte stream into whole lines, so parallel hosts never interleave mid-line (pdsh's
 * "line-atomic" output). Lines are bytes, exactly as the host sent them (the display decides how to
 * show them); a last line without a newline is still delivered at the end.
 *
 * Linear in the bytes however long a line is: each chunk is searched for newlines once, and the
 * start of a line that has not ended yet is kept as a list of pieces, joined once when it ends. (The
 * earlier version re-joined and re-searched the whole pending text on every chunk: 50 MB without a
 * newline took 15 s.)
 *
 * `maxLineBytes` bounds the memory a host without newlines can take: a line that grows past it is
 * delivered in pieces of at most that many bytes (`newline` false), cut before a UTF-8 sequence
 * rather than inside one. Nothing is dropped; the pieces joined are the line. 0 = no bound, for the
 * modes that keep every byte until the end anyway.
 */

/** The bound multi-rsh uses for live output: 1 MiB per line and stream of a host. */
export const MAX_LINE_BYTES = 1 << 20;

export class LineSplitter {
  private parts: Buffer[] = [];
  private partBytes = 0;
  constructor(
    private readonly onLine: (line: Buffer, newline: boolean) => void,
    private readonly maxLineBytes = 0,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      if (this.partBytes > 0 || this.parts.length > 0) {
        this.parts.push(piece);
        const line = Buffer.concat(this.parts);
        this.parts = [];
        this.partBytes = 0;
        this.onLine(line, true);
      } else {
        this.onLine(piece, true);
      }
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.parts.push(rest);
      this.partBytes += rest.length;
      if (this.maxLineBytes > 0 && this.partBytes >= this.maxLineBytes) this.cut();
    }
  }

  /** Delivers pieces of at most maxLineBytes until less than that is left pending. */
  private cut(): void {
    let all = Buffer.concat(this.parts);
    while (all.length >= this.maxLineBytes) {
      let at = this.maxLineBytes;
      // Back off to the start of a UTF-8 sequence (at most 3 continuation bytes), so that a piece
      // shown on its own is still valid text.
      for (let k = 0; k < 3 && at > 1 && (all[at]! & 0xc0) === 0x80; k++) at--;
      if ((all[at]! & 0xc0) === 0x80) at = this.maxLineBytes;
      this.onLine(all.subarray(0, at), false);
      all = all.subarray(at);
    }
    this.parts = all.length ? [all] : [];
    this.partBytes = all.length;
  }

  /** Delivers whatever is left as a final line without newline. */
  end(): void {
    const rest = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts = [];
    this.partBytes = 0;
    if (rest.length > 0) this.onLine(rest, false);
  }
}
