/**
 * Node groups as ClusterShell and pdsh users already keep them, parsed from text (the reader that
 * finds the files is cli/multi-rsh/groups-reader.ts):
 *
 *  - ClusterShell YAML (`groups.d/*.yaml`): a mapping of sources to groups, `source: {group: nodeset}`;
 *  - ClusterShell's local source (`groups`, `groups.d/local.cfg`, or `--groups FILE`): `name: nodeset` lines;
 *  - pdsh's dshgroup files (`~/.dsh/group/NAME`, `/etc/dsh/group/NAME`): one host or range a line.
 *
 * A node set is a comma list of hosts, ranges (`node[01-32]`) and `@group` (or `@source:group`)
 * references, with ClusterShell's `!` for "but not" (`@all!@gpu`). References resolve recursively;
 * a cycle or an unknown group is an error naming it.
 */
import { parse as parseYaml } from "yaml";
import { UsageError } from "../../errors.js";
import { expandHostList, splitTopLevel, type FileReader } from "./hostlist.js";

export interface GroupSource {
  /** ClusterShell's source name ("local", "roles", ...); "dsh" for dshgroup files. */
  name: string;
  /** Where it came from, for messages. */
  where: string;
  /** group name -> node set text */
  groups: Map<string, string>;
}

/** A group file or name the user gave that cannot be used (exit 2). */
export class GroupError extends UsageError {
  constructor(message: string) {
    super(message, "AIU_GROUP");
    this.name = "GroupError";
  }
}

const GROUP_NAME = /^[A-Za-z0-9_.+-][A-Za-z0-9_.+:-]*$/;

function nodesetText(v: unknown, where: string, group: string): string {
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  if (Array.isArray(v) && v.every((x) => typeof x === "string" || typeof x === "number")) return v.map(String).join(",");
  throw new GroupError(`${where}: group '${group}': expected a node set (text or a list of them)`);
}

/** A ClusterShell groups.d/*.yaml file: every top-level key is a source. */
export function parseClusterShellYaml(text: string, where: string): GroupSource[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new GroupError(`${where}: not YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (doc === null || doc === undefined) return [];
  if (typeof doc !== "object" || Array.isArray(doc)) throw new GroupError(`${where}: expected 'source: {group: nodeset}'`);
  const out: GroupSource[] = [];
  for (const [source, groups] of Object.entries(doc as Record<string, unknown>)) {
    if (groups === null || typeof groups !== "object" || Array.isArray(groups)) {
      throw new GroupError(`${where}: source '${source}': expected a mapping of groups to node sets`);
    }
    const map = new Map<string, string>();
    for (const [g, v] of Object.entries(groups as Record<string, unknown>)) map.set(g, nodesetText(v, where, g));
    out.push({ name: source, where, groups: map });
  }
  return out;
}

/** `name: nodeset` lines (ClusterShell's local source; blank lines and # comments allowed). */
export function parseGroupLines(text: string, where: string, source = "local"): GroupSource {
  const groups = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.replace(/#.*$/, "").trim();
    if (!line) continue;
    const m = /^([^:\s]+)\s*:\s*(.*)$/.exec(line);
    if (!m || !GROUP_NAME.test(m[1]!)) throw new GroupError(`${where}:${n + 1}: expected 'name: nodeset', got '${line}'`);
    groups.set(m[1]!, m[2]!.trim().split(/\s+/).join(","));
  }
  return { name: source, where, groups };
}

/** A dshgroup file: one host (or range) a line, # comments; as a node set. */
export function parseDshGroup(text: string): string {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*$/, "").trim())
    .filter(Boolean)
    .join(",");
}

/** Resolves group names against sources in order (the first that has the name wins). */
export class GroupResolver {
  constructor(
    private readonly sources: readonly GroupSource[],
    private readonly readFile?: FileReader,
  ) {}

  has(name: string): boolean {
    return this.find(name) !== null;
  }

  private find(name: string): { source: GroupSource; text: string } | null {
    const colon = name.indexOf(":");
    if (colon > 0) {
      const src = name.slice(0, colon);
      const g = name.slice(colon + 1);
      for (const s of this.sources) if (s.name === src && s.groups.has(g)) return { source: s, text: s.groups.get(g)! };
      return null;
    }
    for (const s of this.sources) if (s.groups.has(name)) return { source: s, text: s.groups.get(name)! };
    return null;
  }

  /** The hosts of one group (`name` or `source:name`). */
  resolve(name: string, seen: readonly string[] = []): string[] {
    const f = this.find(name);
    if (!f) throw new GroupError(`unknown group '${name}'${this.sources.length ? "" : " (no group files found)"}`);
    // Named with its source, so that `a` and `s:a` are seen as the same group.
    const full = `${f.source.name}:${name.includes(":") ? name.slice(name.indexOf(":") + 1) : name}`;
    if (seen.includes(full)) throw new GroupError(`group '${name}' includes itself (${[...seen, full].join(" -> ")})`);
    return this.expand(f.text, [...seen, full], f.source.name);
  }

  /** Every group's hosts: the group "all" when there is one, else the union of all groups. */
  all(): string[] {
    if (this.has("all")) return this.resolve("all");
    const out: string[] = [];
    for (const s of this.sources) for (const g of s.groups.keys()) out.push(...this.resolve(`${s.name}:${g}`));
    if (out.length === 0) throw new GroupError("-a: no group 'all' and no groups found");
    return [...new Set(out)];
  }

  /** A node set: hosts, ranges, ^FILE and @group items, with `!` for "but not". */
  expand(text: string, seen: readonly string[] = [], source?: string): string[] {
    const [first, ...minus] = text.split("!");
    const take = (part: string): string[] => {
      const out: string[] = [];
      for (const item of splitTopLevel(part)) {
        if (item.startsWith("@")) {
          const ref = item.slice(1);
          // Inside a source, a bare @name means a group of the same source first (ClusterShell's rule).
          const name = source && !ref.includes(":") && this.find(`${source}:${ref}`) ? `${source}:${ref}` : ref;
          out.push(...this.resolve(name, seen));
        } else out.push(...expandHostList(item, this.readFile));
      }
      return out;
    };
    const removed = new Set(minus.flatMap(take));
    return take(first ?? "").filter((h) => !removed.has(h));
  }
}

/** Does a -w/-x argument need groups (an @name item)? */
export function mentionsGroup(text: string): boolean {
  return splitTopLevel(text).some((p) => p.startsWith("@"));
}
