/**
 * Where multi-rsh's per-host output goes: `host: line` on stdout as lines complete (the default),
 * kept for the end (-b gathering, --json), or one record per host as it finishes (--ndjson).
 * Lines from many hosts never interleave mid-line, and the live progress line on stderr is cleared
 * before any output is written.
 */
import { LineSplitter } from "../core/lines.js";
import { formatGathered, gatherOutputs } from "../core/gather.js";
import type { HostResult } from "../remote/engine.js";
import type { StatusLine } from "./display.js";
import type { CliIO } from "./io.js";

export type OutputMode = "lines" | "gather" | "json" | "ndjson";

export class OutputSink {
  private readonly splitters = new Map<string, LineSplitter>();
  /** Kept lines per host (gather, json, ndjson); stderr lines kept apart only with --stderr. */
  private readonly kept = new Map<string, { out: string[]; err: string[] }>();

  constructor(
    private readonly io: CliIO,
    private readonly mode: OutputMode,
    private readonly prefix: boolean,
    private readonly status: StatusLine,
  ) {}

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
      s = new LineSplitter((line) => this.line(host, stream, line));
      this.splitters.set(key, s);
    }
    return s;
  }

  private line(host: string, stream: "stdout" | "stderr", line: string): void {
    if (this.mode === "lines") {
      // Gathered per chunk and written once by output()/finish(): one write per chunk, not per line.
      this.pending.push(this.prefix ? `${host}: ${line}\n` : `${line}\n`);
      return;
    }
    const k = this.keep(host);
    if (stream === "stderr" && this.mode !== "gather") k.err.push(line);
    else k.out.push(line);
  }

  private pending: string[] = [];

  private flushPending(stream: "stdout" | "stderr"): void {
    if (this.pending.length === 0) return;
    const text = this.pending.join("");
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

  record(r: HostResult): HostResult & { output: string[]; stderr?: string[] } {
    const k = this.kept.get(r.host);
    const rec: HostResult & { output: string[]; stderr?: string[] } = { ...r, output: k?.out ?? [] };
    if (k && k.err.length) rec.stderr = k.err;
    return rec;
  }

  /** At the end: the gathered blocks (-b). */
  flushGathered(hostOrder: readonly string[]): void {
    if (this.mode !== "gather") return;
    const outputs = new Map<string, string[]>();
    for (const h of hostOrder) outputs.set(h, this.kept.get(h)?.out ?? []);
    this.io.stdout.write(formatGathered(gatherOutputs(outputs, hostOrder)));
  }
}
