/**
 * `-b`: hosts whose whole output is identical are printed once, under their folded host list
 * (ClusterShell's clubak / pdsh's dshbak -c). Pure. Outputs are compared as the bytes the hosts sent
 * (two outputs that differ only in bytes that are not valid UTF-8 are not the same output), and shown
 * through `show`, which escapes them for a terminal unless the operator asked for --raw.
 */
import { foldHosts } from "../hosts/hostlist.js";
import { escapeForTerminal } from "../../core/terminal-safe.js";

export interface GatheredBlock {
  hosts: string[];
  folded: string;
  lines: Buffer[];
}

export function gatherOutputs(outputs: ReadonlyMap<string, readonly Buffer[]>, hostOrder: readonly string[]): GatheredBlock[] {
  const byText = new Map<string, GatheredBlock>();
  for (const host of hostOrder) {
    const lines = outputs.get(host) ?? [];
    // latin1 maps each byte to one char: the key is the exact bytes, with the line breaks.
    const key = lines.map((l) => l.toString("latin1")).join("\n");
    let b = byText.get(key);
    if (!b) {
      b = { hosts: [], folded: "", lines: [...lines] };
      byText.set(key, b);
    }
    b.hosts.push(host);
  }
  const blocks = [...byText.values()];
  for (const b of blocks) b.folded = foldHosts(b.hosts);
  // Largest group first, as an operator scans for the odd ones out.
  return blocks.sort((a, b) => b.hosts.length - a.hosts.length);
}

export function formatGathered(blocks: readonly GatheredBlock[], show: (line: Buffer) => string = escapeForTerminal): string {
  const out: string[] = [];
  for (const b of blocks) {
    const title = `${b.folded} (${b.hosts.length})`;
    const rule = "-".repeat(Math.min(Math.max(title.length, 15), 78));
    out.push(rule, title, rule, ...b.lines.map(show));
  }
  return out.length ? out.join("\n") + "\n" : "";
}
