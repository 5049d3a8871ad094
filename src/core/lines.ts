/**
 * Turns a host's byte stream into whole lines, so parallel hosts never interleave mid-line (pdsh's
 * "line-atomic" output). Lines are never truncated or split however long; a last line without a
 * newline is still delivered at the end. UTF-8 sequences cut between chunks are kept whole.
 */
import { StringDecoder } from "node:string_decoder";

export class LineSplitter {
  private readonly decoder = new StringDecoder("utf8");
  private partial = "";
  constructor(private readonly onLine: (line: string, newline: boolean) => void) {}

  push(chunk: Buffer): void {
    const text = this.partial + this.decoder.write(chunk);
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl < 0) break;
      this.onLine(text.slice(start, nl), true);
      start = nl + 1;
    }
    this.partial = text.slice(start);
  }

  /** Delivers whatever is left as a final line without newline. */
  end(): void {
    const rest = this.partial + this.decoder.end();
    this.partial = "";
    if (rest.length > 0) this.onLine(rest, false);
  }
}
