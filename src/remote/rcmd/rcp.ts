/**
 * The rcp protocol (the one `rcp -t`/`rcp -f` and `scp -t`/`scp -f` speak), as bytes in and bytes
 * out, with no I/O: multi-rsh `--copy` is its source side, `--rcopy` its sink side.
 *
 * The source sends control records, each one line: `T<mtime> 0 <atime> 0` (times of the next file or
 * directory, only with -p), `C<mode> <size> <name>` (a file; then `size` bytes and one status byte),
 * `D<mode> 0 <name>` (enter a directory, only with -r) and `E` (leave it). The sink answers every
 * record and every file's data with one status: \0 (fine), \1 + message + \n (this file failed, go
 * on) or \2 + message + \n (fatal, the sink exits). The source waits for each answer before it sends
 * data: a sink that refused a `C` record reads the next bytes as records, so file contents must never
 * be sent ahead of the answer.
 *
 * How the exchange ends matters for TCP here. The sink ends when it reads `E` at the top level (it
 * answers and exits), so the source never needs to send EOF: over rsh the client does not half-close,
 * the remote program exits, rshd closes first, and the TIME_WAIT stays on the host.
 *
 * The sink side treats everything from the host as untrusted (the bug class of CVE-2019-6111): names
 * must be one path component, sizes plain decimal, lines bounded, modes masked to permission bits.
 */

/** The longest control line accepted (rcp's own buffer is BUFSIZ, 8 KiB). */
export const MAX_RECORD_LINE = 8192;

function octalMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

export function timeRecord(mtimeSec: number, atimeSec: number): string {
  return `T${Math.floor(mtimeSec)} 0 ${Math.floor(atimeSec)} 0\n`;
}

export function fileRecord(mode: number, size: number, name: string): string {
  return `C${octalMode(mode & 0o777)} ${size} ${name}\n`;
}

export function dirRecord(mode: number, name: string): string {
  return `D${octalMode(mode & 0o777)} 0 ${name}\n`;
}

export const END_RECORD = "E\n";
/** The status byte for "fine". */
export const OK = Buffer.from([0]);

/** A status line for the other side: \1 (this file) or \2 (fatal) and a message without newlines. */
export function errorStatus(message: string, fatal = false): Buffer {
  return Buffer.from(`${fatal ? "\x02" : "\x01"}${message.replace(/[\r\n]+/g, " ")}\n`, "utf8");
}

/** Is this a name a host may give for a file or directory: one path component, printable. */
export function isSafeName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && name !== "." && name !== ".." && !/[/\0\n\r]/.test(name);
}

/** Control characters from a host are shown as `?`, so a message cannot drive the terminal. */
export function printable(text: string): string {
  return text.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "?").trim();
}

export type Status = { ok: true } | { ok: false; fatal: boolean; message: string };

export type StatusEvent = Status | { garbage: string };

/**
 * Reads the sink's answers, as the source does. A byte that is not a status starts "garbage" (e.g.
 * "sh: 1: rcp: not found" where the first \0 was expected): everything that follows is collected
 * as text for the error message.
 */
export class StatusReader {
  private line: Buffer[] = [];
  private lineBytes = 0;
  private inLine: 1 | 2 | 0 = 0;
  private garbage: string | null = null;

  push(chunk: Buffer): StatusEvent[] {
    const out: StatusEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.garbage !== null) {
        this.garbage += chunk.subarray(i).toString("utf8");
        if (this.garbage.length > 2000) this.garbage = this.garbage.slice(0, 2000);
        break;
      }
      if (this.inLine === 0) {
        const b = chunk[i]!;
        i++;
        if (b === 0) out.push({ ok: true });
        else if (b === 1 || b === 2) this.inLine = b;
        else {
          this.garbage = String.fromCharCode(b);
          out.push({ garbage: "" });
        }
        continue;
      }
      const nl = chunk.indexOf(0x0a, i);
      const end = nl < 0 ? chunk.length : nl;
      if (this.lineBytes < MAX_RECORD_LINE) this.line.push(chunk.subarray(i, end));
      this.lineBytes += end - i;
      i = nl < 0 ? chunk.length : nl + 1;
      if (nl >= 0) {
        out.push({ ok: false, fatal: this.inLine === 2, message: printable(Buffer.concat(this.line).toString("utf8")) });
        this.line = [];
        this.lineBytes = 0;
        this.inLine = 0;
      }
    }
    return out;
  }

  /** The text that came instead of a status, if any (printable). */
  garbageText(): string | null {
    return this.garbage === null ? null : printable(this.garbage);
  }
}

export type SinkEvent =
  | { kind: "time"; mtime: number; atime: number }
  | { kind: "file"; mode: number; size: number; name: string }
  | { kind: "data"; chunk: Buffer }
  /** The file's data is complete; `error` when the source said it could not read it all. */
  | { kind: "fileEnd"; error: string | null }
  | { kind: "dir"; mode: number; name: string }
  | { kind: "end" }
  | { kind: "warning"; message: string }
  | { kind: "fatal"; message: string }
  /** Not the protocol: the rest of the stream is ignored. */
  | { kind: "violation"; message: string };

/**
 * The sink side's parser: bytes from the source in, events out. The caller answers each record
 * (OK or errorStatus) before the source sends more, so the parser never sees data it was not
 * told to expect.
 */
export class SinkParser {
  private line: Buffer[] = [];
  private lineBytes = 0;
  private dataLeft = 0;
  private inData = false;
  private awaitingTrailer = false;
  private trailerLine: Buffer[] | null = null;
  private broken = false;

  push(chunk: Buffer): SinkEvent[] {
    const out: SinkEvent[] = [];
    let i = 0;
    while (i < chunk.length && !this.broken) {
      if (this.inData) {
        const n = Math.min(this.dataLeft, chunk.length - i);
        if (n > 0) out.push({ kind: "data", chunk: chunk.subarray(i, i + n) });
        this.dataLeft -= n;
        i += n;
        if (this.dataLeft === 0) {
          this.inData = false;
          this.awaitingTrailer = true;
        }
        continue;
      }
      if (this.awaitingTrailer) {
        if (this.trailerLine === null) {
          const b = chunk[i]!;
          i++;
          if (b === 0) {
            this.awaitingTrailer = false;
            out.push({ kind: "fileEnd", error: null });
          } else if (b === 1 || b === 2) {
            this.trailerLine = [];
          } else {
            this.broken = true;
            out.push({ kind: "violation", message: "expected a status byte after the file's data" });
          }
          continue;
        }
        const nl = chunk.indexOf(0x0a, i);
        const end = nl < 0 ? chunk.length : nl;
        this.trailerLine.push(chunk.subarray(i, end));
        i = nl < 0 ? chunk.length : nl + 1;
        if (nl >= 0) {
          out.push({ kind: "fileEnd", error: printable(Buffer.concat(this.trailerLine).toString("utf8")) || "read error on the host" });
          this.trailerLine = null;
          this.awaitingTrailer = false;
        }
        continue;
      }
      const nl = chunk.indexOf(0x0a, i);
      const end = nl < 0 ? chunk.length : nl;
      this.line.push(chunk.subarray(i, end));
      this.lineBytes += end - i;
      i = nl < 0 ? chunk.length : nl + 1;
      if (this.lineBytes > MAX_RECORD_LINE) {
        this.broken = true;
        out.push({ kind: "violation", message: `a control line longer than ${MAX_RECORD_LINE} bytes` });
        break;
      }
      if (nl < 0) continue;
      const text = Buffer.concat(this.line).toString("utf8");
      this.line = [];
      this.lineBytes = 0;
      const ev = this.record(text);
      out.push(ev);
      if (ev.kind === "violation") this.broken = true;
      if (ev.kind === "file") {
        this.dataLeft = ev.size;
        this.inData = ev.size > 0;
        this.awaitingTrailer = ev.size === 0;
      }
    }
    return out;
  }

  /** The sink refused the file just announced: the source sends neither its data nor its status. */
  skipData(): void {
    this.inData = false;
    this.dataLeft = 0;
    this.awaitingTrailer = false;
  }

  private record(text: string): SinkEvent {
    const type = text[0];
    if (type === "\x01") return { kind: "warning", message: printable(text.slice(1)) };
    if (type === "\x02") return { kind: "fatal", message: printable(text.slice(1)) };
    if (text === "E") return { kind: "end" };
    if (type === "T") {
      const m = /^T(\d{1,15}) (\d{1,9}) (\d{1,15}) (\d{1,9})$/.exec(text);
      if (!m) return { kind: "violation", message: `bad time record '${printable(text)}'` };
      return { kind: "time", mtime: Number(m[1]), atime: Number(m[3]) };
    }
    if (type === "C" || type === "D") {
      const m = /^[CD]([0-7]{4}) (\d{1,15}) (.*)$/.exec(text);
      if (!m) return { kind: "violation", message: `bad ${type === "C" ? "file" : "directory"} record '${printable(text)}'` };
      const size = Number(m[2]);
      const name = m[3]!;
      if (!isSafeName(name)) return { kind: "violation", message: `unsafe name '${printable(name)}' (one path component only)` };
      if (!Number.isSafeInteger(size)) return { kind: "violation", message: "file size out of range" };
      const mode = parseInt(m[1]!, 8) & 0o777;
      return type === "C" ? { kind: "file", mode, size, name } : { kind: "dir", mode, name };
    }
    return { kind: "violation", message: `expected a control record, got '${printable(text).slice(0, 80)}'` };
  }
}

/** A word for a POSIX shell command line, single-quoted. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
