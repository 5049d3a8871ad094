/**
 * Host lists as pdsh and ClusterShell users write them: comma lists, bracketed ranges
 * (`node[01-32]`, `10.0.0.[1-9]`, `r[1-2]n[1,3-4]`), `^FILE` for a file of hosts, and host files
 * with blank lines and `#` comments. Pure: files come in as text through a reader the caller gives.
 *
 * Zero padding follows pdsh: a range whose lower bound has a leading zero pads every number to that
 * width (`[01-10]` gives 01..10).
 */
import { HostListError } from "../errors.js";
import { oneLine } from "./untrusted.js";

/** Largest expansion we accept from one expression: a typo like [1-99999999] must not eat memory. */
export const MAX_HOSTS = 100_000;

const HOST_CHARS = /^[A-Za-z0-9._:%@\-[\],]+$/;

function expandRangeBody(body: string, where: string): string[] {
  const out: string[] = [];
  for (const part of body.split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new HostListError(`${where}bad range '[${body}]': expected numbers like [1-9] or [01-32,40]`);
    const lo = m[1]!;
    const hi = m[2] ?? lo;
    const a = Number(lo);
    const b = Number(hi);
    if (b < a) throw new HostListError(`${where}bad range '[${body}]': ${lo}-${hi} runs backwards`);
    if (b - a + 1 > MAX_HOSTS) throw new HostListError(`${where}range '[${body}]' has more than ${MAX_HOSTS} hosts`);
    const width = lo.length > 1 && lo.startsWith("0") ? lo.length : 0;
    for (let i = a; i <= b; i++) out.push(width ? String(i).padStart(width, "0") : String(i));
  }
  return out;
}

/** Expands one host expression (no top-level commas): `node[1-3]x[a]` style brackets. */
export function expandHostPattern(expr: string, where = ""): string[] {
  let results = [""];
  let i = 0;
  while (i < expr.length) {
    const open = expr.indexOf("[", i);
    if (open < 0) {
      const tail = expr.slice(i);
      if (tail.includes("]")) throw new HostListError(`${where}unbalanced ']' in '${expr}'`);
      results = results.map((r) => r + tail);
      break;
    }
    const close = expr.indexOf("]", open);
    if (close < 0) throw new HostListError(`${where}unbalanced '[' in '${expr}'`);
    const literal = expr.slice(i, open);
    if (literal.includes("]")) throw new HostListError(`${where}unbalanced ']' in '${expr}'`);
    const values = expandRangeBody(expr.slice(open + 1, close), where);
    if (results.length * values.length > MAX_HOSTS) {
      throw new HostListError(`${where}'${expr}' expands to more than ${MAX_HOSTS} hosts`);
    }
    const next: string[] = [];
    for (const r of results) for (const v of values) next.push(r + literal + v);
    results = next;
    i = close + 1;
  }
  return results;
}

/** Splits on commas outside brackets. */
export function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of text) {
    if (ch === "[") depth++;
    if (ch === "]") depth = Math.max(0, depth - 1);
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

export type FileReader = (path: string) => string;

/** `-w` / `-x` argument: comma list of patterns and `^FILE` entries. */
export function expandHostList(text: string, readFile?: FileReader): string[] {
  const out: string[] = [];
  for (const part of splitTopLevel(text)) {
    if (part.startsWith("^")) {
      if (!readFile) throw new HostListError(`'${part}': host files are not allowed here`);
      out.push(...parseHostFile(readFile(part.slice(1)), part.slice(1)));
      continue;
    }
    if (!HOST_CHARS.test(part)) throw new HostListError(`bad host '${part}': unexpected character`);
    out.push(...expandHostPattern(part));
  }
  return out;
}

/** A host file: one host or host pattern per line; blank lines and `#` comments allowed. */
export function parseHostFile(text: string, name: string): string[] {
  const out: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.replace(/#.*$/, "").trim();
    if (!line) continue;
    const where = `${name}:${n + 1}: `;
    // The line itself is not echoed: a file given by mistake (-l /etc/shadow, a key) would print
    // its secrets, NUL bytes or escape sequences to the terminal. Where and what is enough.
    const space = line.search(/\s/);
    if (space >= 0) throw new HostListError(`${where}bad line: one host per line (whitespace at column ${space + 1}; the line is not shown)`);
    const bad = line.search(/[^A-Za-z0-9._:%@\-[\]]/);
    if (bad >= 0) {
      throw new HostListError(`${where}bad host: unexpected character '${oneLine(line[bad]!)}' at column ${bad + 1} (the line is not shown)`);
    }
    out.push(...expandHostPattern(line, where));
  }
  return out;
}

/** Removes repeats, keeping first occurrences in order; returns the repeats for reporting. */
export function dedupeHosts(hosts: readonly string[]): { hosts: string[]; duplicates: string[] } {
  const seen = new Set<string>();
  const dup = new Set<string>();
  const out: string[] = [];
  for (const h of hosts) {
    if (seen.has(h)) dup.add(h);
    else {
      seen.add(h);
      out.push(h);
    }
  }
  return { hosts: out, duplicates: [...dup] };
}

/**
 * The inverse of expansion, for gathered output: `node01,node02,node03,10.0.0.1` becomes
 * `node[01-03],10.0.0.1`. Folds on the last number in each name, like ClusterShell's one-axis fold.
 */
export function foldHosts(hosts: readonly string[]): string {
  interface Group {
    prefix: string;
    suffix: string;
    width: number;
    nums: number[];
  }
  const groups = new Map<string, Group>();
  const order: (Group | string)[] = [];
  for (const h of hosts) {
    const m = /^(.*?)(\d+)(\D*)$/.exec(h);
    if (!m || h.includes("[")) {
      order.push(h);
      continue;
    }
    const digits = m[2]!;
    const width = digits.length > 1 && digits.startsWith("0") ? digits.length : 0;
    const key = `${m[1]}\u0000${m[3]}\u0000${width}`;
    // "node10" belongs with "node01".."node09": an unpadded number as wide as a padded group joins it.
    const paddedKey = `${m[1]}\u0000${m[3]}\u0000${digits.length}`;
    let g = width === 0 && groups.has(paddedKey) ? groups.get(paddedKey) : groups.get(key);
    if (!g) {
      g = { prefix: m[1]!, suffix: m[3]!, width, nums: [] };
      groups.set(key, g);
      order.push(g);
    }
    g.nums.push(Number(digits));
  }
  const fmt = (g: Group, n: number) => (g.width ? String(n).padStart(g.width, "0") : String(n));
  return order
    .map((g) => {
      if (typeof g === "string") return g;
      const nums = [...new Set(g.nums)].sort((a, b) => a - b);
      if (nums.length === 1) return g.prefix + fmt(g, nums[0]!) + g.suffix;
      const ranges: string[] = [];
      for (let i = 0; i < nums.length; ) {
        let j = i;
        while (j + 1 < nums.length && nums[j + 1] === nums[j]! + 1) j++;
        ranges.push(i === j ? fmt(g, nums[i]!) : `${fmt(g, nums[i]!)}-${fmt(g, nums[j]!)}`);
        i = j + 1;
      }
      return `${g.prefix}[${ranges.join(",")}]${g.suffix}`;
    })
    .join(",");
}
