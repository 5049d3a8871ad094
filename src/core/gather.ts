/**
 * `-b`: hosts whose whole output is identical are printed once, under their folded host list
 * (ClusterShell's clubak / pdsh's dshbak -c). Pure.
 */
import { foldHosts } from "./hostlist.js";

export interface GatheredBlock {
  hosts: string[];
  folded: string;
  lines: string[];
}

export function gatherOutputs(outputs: ReadonlyMap<string, readonly string[]>, hostOrder: readonly string[]): GatheredBlock[] {
  const byText = new Map<string, GatheredBlock>();
  for (const host of hostOrder) {
    const lines = outputs.get(host) ?? [];
    const key = lines.join("\n");
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

export function formatGathered(blocks: readonly GatheredBlock[]): string {
  const out: string[] = [];
  for (const b of blocks) {
    const title = `${b.folded} (${b.hosts.length})`;
    const rule = "-".repeat(Math.min(Math.max(title.length, 15), 78));
    out.push(rule, title, rule, ...b.lines);
  }
  return out.length ? out.join("\n") + "\n" : "";
}
