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
 *
 * Backpressure: when stdout (or stderr) stops accepting writes, the run's OutputGate is paused until
 * it drains, so the hosts wait (remote/flow.ts) instead of this process queueing everything they
 * send: every byte arrives, and memory stays bounded, however slow the reader.
 *
 * What is kept for the end (-b, --json, --ndjson) is capped, so a host that sends gigabytes cannot
 * take the heap down with every other host's result: KEEP_PER_HOST_BYTES per host and
 * KEEP_TOTAL_BYTES for the run; lines past the cap are dropped and counted (`outputDroppedBytes` in
 * the host's record, a notice on stderr). The text mode keeps nothing and has no cap.
 */
import { isUtf8 } from "node:buffer";
import { LineSplitter, MAX_LINE_BYTES } from "../../remote/output/lines.js";
import { formatGathered, gatherOutputs } from "../../remote/output/gather.js";
import { escapeForTerminal } from "../../core/terminal-safe.js";
import type { HostResult } from "../../remote/engine.js";
import type { OutputGate } from "../../remote/flow.js";
import type { StatusLine } from "../display.js";
import type { CliIO } from "../io.js";

export type OutputMode = "lines" | "gather" | "json" | "ndjson";

/**
 * The caps on output kept in memory, in bytes of the kept lines. 256 MiB in all keeps a --json
 * document's parts well below V8's longest string (2^29 - 24 code units; ERR_STRING_TOO_LONG).
 */
export const KEEP_PER_HOST_BYTES = 128 * 1024 * 1024;
export const KEEP_TOTAL_BYTES = 256 * 1024 * 1024;

interface Kept {
  out: Buffer[];
  err: Buffer[];
  bytes: number;
  dropped: number;
}

export interface HostRecord extends HostResult {
  output: string[];
  stderr?: string[];
  outputBase64?: string[];
  stderrBase64?: string[];
  outputDroppedBytes?: number;
}

const NEWLINE = Buffer.from("\n");

/** JSON.stringify(value, null, 2), handed out in pieces (plain data: no toJSON, no cycles). */
export function writeJson(v: unknown, depth: number, w: (s: string) => void): void {
  const pad = (d: number) => "\n" + "  ".repeat(d);
  if (Array.isArray(v)) {
    if (v.length === 0) return w("[]");
    w("[");
    v.forEach((x, i) => {
      w((i ? "," : "") + pad(depth + 1));
      // As JSON.stringify: a value with no JSON form is null inside an array.
      if (x === undefined || typeof x === "function") w("null");
      else writeJson(x, depth + 1, w);
    });
    return w(pad(depth) + "]");
  }
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined && typeof x !== "function");
    if (entries.length === 0) return w("{}");
    w("{");
    entries.forEach(([k, x], i) => {
      w((i ? "," : "") + pad(depth + 1) + JSON.stringify(k) + ": ");
      writeJson(x, depth + 1, w);
    });
    return w(pad(depth) + "}");
  }
  w(JSON.stringify(v) ?? "null");
}

export class OutputSink {
  private readonly splitters = new Map<string, LineSplitter>();
  /** Kept lines per host (gather, json, ndjson); stderr lines kept apart only with --stderr. */
  private readonly kept = new Map<string, Kept>();
  private keptTotal = 0;
  private droppedHosts = new Set<string>();
  /** Which of our streams refused a write and has not drained yet. */
  private readonly full = { stdout: false, stderr: false };
  private readonly prefixes = new Map<string, Buffer>();
  /** Per destination: escape for a terminal (a TTY, and not --raw). */
  private readonly escapeOut: boolean;
  private readonly escapeErr: boolean;
  private readonly gate: OutputGate | null;
  private readonly raw: boolean;

  constructor(
    private readonly io: CliIO,
    private readonly mode: OutputMode,
    private readonly prefix: boolean,
    private readonly status: StatusLine,
    o: { gate?: OutputGate | null; raw?: boolean } = {},
  ) {
    this.gate = o.gate ?? null;
    this.raw = o.raw ?? false;
    this.escapeOut = !this.raw && io.stdout.isTTY === true;
    this.escapeErr = !this.raw && io.stderr.isTTY === true;
  }

  private keep(host: string): Kept {
    let k = this.kept.get(host);
    if (!k) {
      k = { out: [], err: [], bytes: 0, dropped: 0 };
      this.kept.set(host, k);
    }
    return k;
  }

  droppedNotice(d: { hosts: number; bytes: number }): string {
    return `output kept for the end is capped at ${KEEP_PER_HOST_BYTES / 1048576} MiB per host and ${KEEP_TOTAL_BYTES / 1048576} MiB in all: ${d.bytes} bytes of ${d.hosts} host${d.hosts === 1 ? "" : "s"} dropped`;
  }

  /** Write, and pause the hosts while the stream's buffer is over its high-water mark. */
  private write(stream: "stdout" | "stderr", data: string | Uint8Array): void {
    const out = this.io[stream];
    if (out.write(data) !== false || !this.gate || !out.once || this.full[stream]) return;
    this.full[stream] = true;
    this.gate.pause();
    out.once("drain", () => {
      this.full[stream] = false;
      if (!this.full.stdout && !this.full.stderr) this.gate?.resume();
    });
  }

  /** Lines dropped past the caps, for the notice at the end; null when nothing was dropped. */
  dropped(): { hosts: number; bytes: number } | null {
    if (this.droppedHosts.size === 0) return null;
    let bytes = 0;
    for (const k of this.kept.values()) bytes += k.dropped;
    return { hosts: this.droppedHosts.size, bytes };
  }

  private splitter(host: string, stream: "stdout" | "stderr"): LineSplitter {
    const key = `${stream}\u0000${host}`;
    let s = this.splitters.get(key);
    if (!s) {
      // Live lines are bounded (a host without newlines cannot fill memory); kept ones are whole
      // (and capped by KEEP_PER_HOST_BYTES).
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
    const size = line.length + 1;
    if (k.bytes + size > KEEP_PER_HOST_BYTES || this.keptTotal + size > KEEP_TOTAL_BYTES) {
      k.dropped += size;
      this.droppedHosts.add(host);
      return;
    }
    k.bytes += size;
    this.keptTotal += size;
    if (stream === "stderr" && this.mode !== "gather") k.err.push(line);
    else k.out.push(line);
  }

  private pending: Buffer[] = [];

  private flushPending(stream: "stdout" | "stderr"): void {
    if (this.pending.length === 0) return;
    const data = Buffer.concat(this.pending);
    this.pending = [];
    this.status.clear();
    this.write(stream, data);
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
      this.write("stdout", JSON.stringify(this.record(result)) + "\n");
      const k = this.kept.get(result.host);
      if (k) {
        // Written: what it held no longer counts against the run's cap.
        this.keptTotal -= k.bytes;
        k.out = [];
        k.err = [];
        k.bytes = 0;
      }
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
    if (k && k.dropped) rec.outputDroppedBytes = k.dropped;
    return rec;
  }

  /**
   * The --json document, written in parts of about a MiB: one string for all of it (or for one
   * host's output, where every character may need a six-character escape) could pass V8's longest
   * string. The text is what JSON.stringify(doc, null, 2) with `results` in it would give.
   */
  writeDocument(fields: Record<string, unknown>, results: readonly HostResult[]): void {
    let part = "";
    const w = (s: string) => {
      part += s;
      if (part.length >= 1 << 20) {
        this.write("stdout", part);
        part = "";
      }
    };
    writeJson({ ...fields, results: results.map((r) => this.record(r)) }, 0, w);
    this.write("stdout", part + "\n");
  }

  /** At the end: the gathered blocks (-b). */
  flushGathered(hostOrder: readonly string[]): void {
    if (this.mode !== "gather") return;
    const outputs = new Map<string, Buffer[]>();
    for (const h of hostOrder) outputs.set(h, this.kept.get(h)?.out ?? []);
    // -b shows the gathered lines escaped wherever they go, unless --raw.
    const show = this.raw ? (l: Buffer) => l.toString("utf8") : escapeForTerminal;
    this.write("stdout", formatGathered(gatherOutputs(outputs, hostOrder), show));
  }
}
