/**
 * Where multi-rsh's per-host output goes: `host: line` on stdout as lines complete (the default),
 * kept for the end (-b gathering, --json), or one record per host as it finishes (--ndjson).
 * Lines from many hosts never interleave mid-line, and the live progress line on stderr is cleared
 * before any output is written.
 *
 * A host's bytes are not trusted (see core/terminal-safe.ts): written to a terminal they are
 * escaped, so every line on screen starts with the true host prefix; written to a pipe or file they
 * are kept as they are, after our prefix; --raw trusts the hosts and writes them as they are
 * everywhere. --json/--ndjson carry each line as a string, and, for a host with any line that is not
 * valid UTF-8, every line's exact bytes in base64 beside it (`outputBase64`, `stderrBase64`).
 */
import { isUtf8 } from "node:buffer";
import { LineSplitter, MAX_LINE_BYTES } from "../core/lines.js";
import { formatGathered, gatherOutputs } from "../core/gather.js";
import { escapeForTerminal } from "../core/terminal-safe.js";
import type { HostResult } from "../remote/engine.js";
import type { StatusLine } from "./display.js";
import type { CliIO } from "./io.js";

export type OutputMode = "lines" | "gather" | "json" | "ndjson";

export interface HostRecord extends HostResult {
  output: string[];
  stderr?: string[];
  outputBase64?: string[];
  stderrBase64?: string[];
}

const NEWLINE = Buffer.from("\n");

export class OutputSink {
  private readonly splitters = new Map<string, LineSplitter>();
  /** Kept lines per host (gather, json, ndjson); stderr lines kept apart only with --stderr. */
  private readonly kept = new Map<string, { out: Buffer[]; err: Buffer[] }>();
  private readonly prefixes = new Map<string, Buffer>();
  /** Per destination: escape for a terminal (a TTY, and not --raw). */
  private readonly escapeOut: boolean;
  private readonly escapeErr: boolean;

  constructor(
    private readonly io: CliIO,
    private readonly mode: OutputMode,
    private readonly prefix: boolean,
    private readonly status: StatusLine,
    private readonly raw = false,
  ) {
    this.escapeOut = !raw && io.stdout.isTTY === true;
    this.escapeErr = !raw && io.stderr.isTTY === true;
  }

  private keep(host: string) {
    let k = this.kept.get(host);
    if (!k) {
      k = { out: [], err: [] };
      this.kept.set(host, k);
    }
    return k;
  }

  private splitter(host: string, stream: "stdout" | "stderr"): LineSplitter {
    const key = `${stream}\u0000${host}`;
    let s = this.splitters.get(key);
    if (!s) {
      // Live lines are bounded (a host without newlines cannot fill memory); kept ones are whole.
      s = new LineSplitter((line) => this.line(host, stream, line), this.mode === "lines" ? MAX_LINE_BYTES : 0);
      this.splitters.set(key, s);
    }
    return s;
  }

  private hostPrefix(host: string): Buffer {
    let p = this.prefixes.get(host);
    if (!p) {
      p = Buffer.from(this.prefix ? `${host}: ` : "");
      this.prefixes.set(host, p);
    }
    return p;
  }

  private line(host: string, stream: "stdout" | "stderr", line: Buffer): void {
    if (this.mode === "lines") {
      // Gathered per chunk and written once by output()/finish(): one write per chunk, not per line.
      // The prefix is ours and starts every line: the line itself holds no newline.
      const escape = stream === "stderr" ? this.escapeErr : this.escapeOut;
      this.pending.push(this.hostPrefix(host), escape ? Buffer.from(escapeForTerminal(line)) : line, NEWLINE);
      return;
    }
    const k = this.keep(host);
    if (stream === "stderr" && this.mode !== "gather") k.err.push(line);
    else k.out.push(line);
  }

  private pending: Buffer[] = [];

  private flushPending(stream: "stdout" | "stderr"): void {
    if (this.pending.length === 0) return;
    const text = Buffer.concat(this.pending);
    this.pending = [];
    this.status.clear();
    if (stream === "stderr") this.io.stderr.write(text);
    else this.io.stdout.write(text);
  }

  output(host: string, stream: "stdout" | "stderr", chunk: Buffer): void {
    this.splitter(host, stream).push(chunk);
    this.flushPending(stream);
  }

  /** The host is finished: flush its last partial lines; in --ndjson, write its record. */
  finish(result: HostResult): void {
    for (const stream of ["stdout", "stderr"] as const) {
      const key = `${stream}\u0000${result.host}`;
      this.splitters.get(key)?.end();
      this.splitters.delete(key);
      this.flushPending(stream);
    }
    if (this.mode === "ndjson") {
      this.status.clear();
      this.io.stdout.write(JSON.stringify(this.record(result)) + "\n");
      this.kept.delete(result.host);
    }
  }

  record(r: HostResult): HostRecord {
    const k = this.kept.get(r.host);
    const text = (lines: readonly Buffer[]) => lines.map((l) => l.toString("utf8"));
    const exact = (lines: readonly Buffer[]) => (lines.every((l) => isUtf8(l)) ? null : lines.map((l) => l.toString("base64")));
    const rec: HostRecord = { ...r, output: text(k?.out ?? []) };
    if (k && k.err.length) rec.stderr = text(k.err);
    const outB64 = k ? exact(k.out) : null;
    if (outB64) rec.outputBase64 = outB64;
    const errB64 = k && k.err.length ? exact(k.err) : null;
    if (errB64) rec.stderrBase64 = errB64;
    return rec;
  }

  /** At the end: the gathered blocks (-b). */
  flushGathered(hostOrder: readonly string[]): void {
    if (this.mode !== "gather") return;
    const outputs = new Map<string, Buffer[]>();
    for (const h of hostOrder) outputs.set(h, this.kept.get(h)?.out ?? []);
    // -b shows the gathered lines escaped wherever they go, unless --raw.
    const show = this.raw ? (l: Buffer) => l.toString("utf8") : escapeForTerminal;
    this.io.stdout.write(formatGathered(gatherOutputs(outputs, hostOrder), show));
  }
}
