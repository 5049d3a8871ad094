/**
 * Host lists as pdsh and ClusterShell users write them. Pure: files come in as text through a reader
 * the caller gives, node groups through a resolver the caller gives.
 *
 * One `-w` argument is a comma list of terms (commas inside brackets do not split), as pdsh reads
 * them (pdsh(1), "-w TARGETS"):
 *
 *   node[01-32]     a pattern: bracketed ranges, several per name (`r[1-2]n[1,3-4]`)
 *   user@node[1-2]  the same hosts, run as `user` there
 *   [::1]           an IPv6 literal in brackets (pdsh and nodeset refuse it as a bad range)
 *   ^FILE           the hosts of a host file
 *   -TERM           excluded from the final list (`-node10`, `-^FILE`, `-@group`)
 *   /REGEX/         keep only hosts that match (the trailing `/` is optional); several must all match
 *   -/REGEX/        drop hosts that match
 *   @NAME           a node group, when the caller gives a resolver
 *
 * Exclusions and filters apply to the whole selection, wherever they stand in it, as in pdsh:
 * `-foo10,foo[9-11]` is `foo9,foo11`. Regular expressions are JavaScript's, matched anywhere in the
 * name (pdsh uses POSIX extended ones with regexec, also unanchored; simple ones mean the same).
 *
 * Numbers are digit strings and BigInt, never `Number`: above 2^53 a Number loop never advances and
 * folding would print a different host. Zero padding follows pdsh: a range whose lower bound has a
 * leading zero pads every number to that width (`[01-10]` gives 01..10).
 */
import { dirname, isAbsolute, join } from "node:path";
import { HostListError } from "../../errors.js";
import { oneLine } from "../../core/untrusted.js";

/** Largest expansion we accept from one expression: a typo like [1-99999999] must not eat memory. */
export const MAX_HOSTS = 100_000;
/** `#include` nesting deeper than this is a loop or a mistake. */
const MAX_INCLUDE_DEPTH = 16;

const HOST_CHARS = /^[A-Za-z0-9._:%\-[\],]+$/;
/** What may stand inside brackets as an IPv6 literal (with an optional zone, `%eth0`). */
const IPV6_LITERAL = /^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9._-]+)?$/;
/** pdsh's `rcmd_type:` prefixes: we take the transport from -R for every host instead. */
const RCMD_PREFIX = /^(rsh|ssh|exec|mrsh|krb4|qsh|mqsh|xcpu):(?!:)/;
const USER = /^[A-Za-z0-9._][A-Za-z0-9._-]*$/;

export type FileReader = (path: string) => string;

export interface HostListOptions {
  /** Reads `^FILE` and `#include FILE`; without it those are refused. */
  readFile?: FileReader;
  /** `@NAME`: the group's hosts; without it `@NAME` is refused. */
  resolveGroup?: (name: string) => readonly string[];
}

/** What a host list selects, before exclusions and filters are applied (see `selectHosts`). */
export interface HostSelection {
  /** Hosts named, in order, repeats kept (dedupeHosts reports them). */
  include: string[];
  /** Hosts named with `-`, or by `-x`. */
  exclude: string[];
  /** `/REGEX/`: a host is kept only if it matches every one. */
  keep: RegExp[];
  /** `-/REGEX/`, or `/REGEX/` in `-x`: a host that matches any one is dropped. */
  drop: RegExp[];
  /** `user@host`: the remote user for that host. */
  users: Map<string, string>;
}

export function emptySelection(): HostSelection {
  return { include: [], exclude: [], keep: [], drop: [], users: new Map() };
}

function bad(where: string, body: string, why: string): HostListError {
  return new HostListError(`${where}bad range '[${body}]': ${why}`);
}

function expandRangeBody(body: string, where: string): string[] {
  const out: string[] = [];
  for (const part of body.split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw bad(where, body, "expected numbers like [1-9] or [01-32,40]");
    const lo = m[1]!;
    const hi = m[2] ?? lo;
    const a = BigInt(lo);
    const b = BigInt(hi);
    if (b < a) throw bad(where, body, `${lo}-${hi} runs backwards`);
    if (b - a + 1n > BigInt(MAX_HOSTS)) throw new HostListError(`${where}range '[${body}]' has more than ${MAX_HOSTS} hosts`);
    const width = lo.length > 1 && lo.startsWith("0") ? lo.length : 0;
    for (let i = a; i <= b; i++) out.push(width ? i.toString().padStart(width, "0") : i.toString());
  }
  return out;
}

/** Expands one host expression (no top-level commas): `node[1-3]x[a]` style brackets. */
export function expandHostPattern(expr: string, where = ""): string[] {
  // `[::1]`, `[fe80::1%eth0]`: a whole-name IPv6 literal, the address without its brackets.
  const v6 = /^\[([^\]]*)\]$/.exec(expr);
  if (v6 && IPV6_LITERAL.test(v6[1]!)) return [v6[1]!];
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
    const body = expr.slice(open + 1, close);
    if (body.includes(":")) {
      throw new HostListError(`${where}bad range '[${body}]' in '${expr}': an IPv6 address in brackets must be the whole name, as in [::1]`);
    }
    const values = expandRangeBody(body, where);
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

function regexOf(term: string, where: string): RegExp {
  let src = term.slice(1);
  if (src.endsWith("/") && src.length > 0) src = src.slice(0, -1);
  if (!src) throw new HostListError(`${where}empty regular expression '${term}'`);
  try {
    return new RegExp(src);
  } catch (e) {
    throw new HostListError(`${where}bad regular expression '${term}': ${(e as Error).message}`);
  }
}

/** `user@pattern` -> the user and the pattern; a plain pattern -> user "". */
function splitUser(term: string, where: string): { user: string; pattern: string } {
  const at = term.indexOf("@");
  if (at <= 0) return { user: "", pattern: term };
  const user = term.slice(0, at);
  const pattern = term.slice(at + 1);
  if (!USER.test(user)) throw new HostListError(`${where}bad user '${user}' in '${term}'`);
  if (!pattern || pattern.startsWith("^") || pattern.startsWith("@") || pattern.startsWith("/")) {
    throw new HostListError(`${where}'${term}': user@ takes host names or ranges, as in user@node[1-2]`);
  }
  return { user, pattern };
}

function hostsOfPattern(pattern: string, term: string, where: string): string[] {
  if (!HOST_CHARS.test(pattern)) throw new HostListError(`${where}bad host '${term}': unexpected character`);
  return expandHostPattern(pattern, where);
}

interface Context extends HostListOptions {
  depth: number;
  /** Files being read, for `#include` loops. */
  open: string[];
}

function readHosts(path: string, ctx: Context, where: string): string[] {
  if (!ctx.readFile) throw new HostListError(`${where}'^${path}': host files are not allowed here`);
  if (ctx.depth >= MAX_INCLUDE_DEPTH || ctx.open.includes(path)) {
    throw new HostListError(`${where}'${path}' includes itself (through ${ctx.open.join(" -> ")})`);
  }
  const text = ctx.readFile(path);
  return hostFile(text, path, { ...ctx, depth: ctx.depth + 1, open: [...ctx.open, path] }, dirname(path));
}

/** `@NAME`, or ClusterShell's `@NAME!ITEM!...` (the group but not these hosts or `@groups`). */
function groupHosts(spec: string, ctx: Context, where: string): string[] {
  const [name = "", ...minus] = spec.split("!");
  if (!/^[A-Za-z0-9._:-]+$/.test(name)) throw new HostListError(`${where}bad group name '@${name}'`);
  if (!ctx.resolveGroup) throw new HostListError(`${where}'@${name}': node groups are not available here`);
  const hosts = [...ctx.resolveGroup(name)];
  if (minus.length === 0) return hosts;
  const removed = new Set(minus.flatMap((m) => (m.startsWith("@") ? groupHosts(m.slice(1), ctx, where) : hostsOfPattern(m, m, where))));
  return hosts.filter((h) => !removed.has(h));
}

/** One term of a `-w` list, added to `sel`. */
function addTerm(term: string, sel: HostSelection, ctx: Context, where: string): void {
  if (term === "-") throw new HostListError(`${where}'-w -' (hosts on stdin) is written '-l -' here`);
  if (RCMD_PREFIX.test(term)) {
    throw new HostListError(`${where}'${term}': a per-host rcmd type is not supported; -R chooses the transport for every host`);
  }
  if (term.startsWith("-")) {
    const rest = term.slice(1);
    if (rest.startsWith("/")) sel.drop.push(regexOf(rest, where));
    else if (rest.startsWith("^")) sel.exclude.push(...readHosts(rest.slice(1), ctx, where));
    else if (rest.startsWith("@")) sel.exclude.push(...groupHosts(rest.slice(1), ctx, where));
    else if (rest.startsWith("-")) throw new HostListError(`${where}bad host '${term}': one '-' excludes`);
    else {
      const { user, pattern } = splitUser(rest, where);
      if (user) throw new HostListError(`${where}'${term}': exclude by host name, without user@`);
      sel.exclude.push(...hostsOfPattern(pattern, term, where));
    }
    return;
  }
  if (term.startsWith("/")) return void sel.keep.push(regexOf(term, where));
  if (term.startsWith("^")) return void sel.include.push(...readHosts(term.slice(1), ctx, where));
  if (term.startsWith("@")) return void sel.include.push(...groupHosts(term.slice(1), ctx, where));
  const { user, pattern } = splitUser(term, where);
  const hosts = hostsOfPattern(pattern, term, where);
  sel.include.push(...hosts);
  if (user) {
    for (const h of hosts) {
      const had = sel.users.get(h);
      if (had !== undefined && had !== user) throw new HostListError(`${where}host '${h}' given with two users: ${had}@ and ${user}@`);
      sel.users.set(h, user);
    }
  }
}

function asOptions(o: FileReader | HostListOptions | undefined): HostListOptions {
  return typeof o === "function" ? { readFile: o } : (o ?? {});
}

/** Adds one `-w` argument (or a positional host list) to `sel`; returns `sel`. */
export function parseHostSelection(text: string, o?: FileReader | HostListOptions, sel: HostSelection = emptySelection()): HostSelection {
  const ctx: Context = { ...asOptions(o), depth: 0, open: [] };
  for (const term of splitTopLevel(text)) addTerm(term, sel, ctx, "");
  return sel;
}

/**
 * Adds one `-x` argument to `sel`: its hosts, files and groups are excluded, its `/REGEX/` drop
 * what matches (pdsh(1): "as if they had been given to -w and preceded with the minus").
 */
export function parseExclusion(text: string, o?: FileReader | HostListOptions, sel: HostSelection = emptySelection()): HostSelection {
  const x = parseHostSelection(text, o);
  if (x.exclude.length || x.drop.length) {
    throw new HostListError(`-x '${text}': a '-' inside -x would exclude from the exclusions; -x already excludes`);
  }
  if (x.users.size) throw new HostListError(`-x '${text}': exclude by host name, without user@`);
  sel.exclude.push(...x.include);
  sel.drop.push(...x.keep);
  return sel;
}

/** The hosts a selection ends with: included, minus exclusions, through every filter; in order. */
export function selectHosts(sel: HostSelection): string[] {
  const excluded = new Set(sel.exclude);
  return sel.include.filter(
    (h) => !excluded.has(h) && sel.keep.every((r) => r.test(h)) && !sel.drop.some((r) => r.test(h)),
  );
}

/**
 * One host list (`-w` / `-x` argument, a positional host list): the hosts it selects, with its own
 * exclusions and filters applied. `o` is a reader for `^FILE` or the full options.
 */
export function expandHostList(text: string, o?: FileReader | HostListOptions): string[] {
  return selectHosts(parseHostSelection(text, o));
}

function hostFile(text: string, name: string, ctx: Context, dir: string): string[] {
  const out: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n]!;
    const where = `${name}:${n + 1}: `;
    // pdsh: `#include FILE` at the very start of a line; relative names are next to this file.
    const inc = /^#include(\s+(\S+)\s*|.*)$/.exec(raw);
    if (inc) {
      const path = inc[2];
      if (!path) throw new HostListError(`${where}bad line '${oneLine(raw.trim())}': write '#include FILE'`);
      out.push(...readHosts(isAbsolute(path) || dir === "" ? path : join(dir, path), ctx, where));
      continue;
    }
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) continue;
    // The line itself is not echoed: a file given by mistake (-l /etc/shadow, a key) would print
    // its secrets, NUL bytes or escape sequences to the terminal. Where and what is enough.
    const bad = line.search(/[^A-Za-z0-9._:%@\-[\],^/ \t]/);
    if (bad >= 0) {
      throw new HostListError(`${where}bad host: unexpected character '${oneLine(line[bad]!)}' at column ${bad + 1} (the line is not shown)`);
    }
    // pdsh reads `a,b` and `a b` on one line as two hosts.
    for (const word of line.split(/\s+/)) {
      for (const part of splitTopLevel(word)) {
        if (/^[-^/@]/.test(part) || part.includes("@")) {
          throw new HostListError(`${where}bad host '${part}': a host file lists hosts; '-', '^', '/' and '@' forms go in -w`);
        }
        out.push(...hostsOfPattern(part, part, where));
      }
    }
  }
  return out;
}

/**
 * A host file: host patterns, one or more per line (split by commas or blanks); blank lines, `#`
 * comments and `#include FILE` lines (read through `readFile`, relative to this file) allowed.
 */
export function parseHostFile(text: string, name: string, readFile?: FileReader): string[] {
  // A file read from stdin has no directory: its includes are relative to the working directory.
  const dir = name === "stdin" ? "" : dirname(name);
  return hostFile(text, name, { readFile, depth: 1, open: name === "stdin" ? [] : [name] }, dir);
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
 * `node[01-03],10.0.0.1`. Folds on the last number in each name, like ClusterShell's one-axis fold,
 * whatever order the names come in (`foo10,foo01` is `foo[01,10]`, as nodeset and pdsh give);
 * groups keep the order of their first member.
 */
export function foldHosts(hosts: readonly string[]): string {
  interface Group {
    prefix: string;
    suffix: string;
    width: number;
    nums: Set<bigint>;
  }
  interface Name {
    prefix: string;
    suffix: string;
    digits: string;
  }
  const parsed: (Name | string)[] = hosts.map((h) => {
    const m = /^(.*?)(\d+)(\D*)$/.exec(h);
    return !m || h.includes("[") ? h : { prefix: m[1]!, suffix: m[3]!, digits: m[2]! };
  });
  const widthOf = (d: string) => (d.length > 1 && d.startsWith("0") ? d.length : 0);
  const keyOf = (n: Name, width: number) => `${n.prefix}\u0000${n.suffix}\u0000${width}`;
  // First pass: which padded groups exist. "node10" belongs with "node01".."node09" wherever it stands:
  // an unpadded number as wide as a padded group joins it.
  const padded = new Set<string>();
  for (const n of parsed) if (typeof n !== "string" && widthOf(n.digits)) padded.add(keyOf(n, n.digits.length));
  const groups = new Map<string, Group>();
  const order: (Group | string)[] = [];
  for (const n of parsed) {
    if (typeof n === "string") {
      order.push(n);
      continue;
    }
    let width = widthOf(n.digits);
    if (width === 0 && padded.has(keyOf(n, n.digits.length))) width = n.digits.length;
    const key = keyOf(n, width);
    let g = groups.get(key);
    if (!g) {
      g = { prefix: n.prefix, suffix: n.suffix, width, nums: new Set() };
      groups.set(key, g);
      order.push(g);
    }
    g.nums.add(BigInt(n.digits));
  }
  const fmt = (g: Group, n: bigint) => (g.width ? n.toString().padStart(g.width, "0") : n.toString());
  return order
    .map((g) => {
      if (typeof g === "string") return g;
      const nums = [...g.nums].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      if (nums.length === 1) return g.prefix + fmt(g, nums[0]!) + g.suffix;
      const ranges: string[] = [];
      for (let i = 0; i < nums.length; ) {
        let j = i;
        while (j + 1 < nums.length && nums[j + 1] === nums[j]! + 1n) j++;
        ranges.push(i === j ? fmt(g, nums[i]!) : `${fmt(g, nums[i]!)}-${fmt(g, nums[j]!)}`);
        i = j + 1;
      }
      return `${g.prefix}[${ranges.join(",")}]${g.suffix}`;
    })
    .join(",");
}
