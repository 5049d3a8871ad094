/**
 * Finds the group files multi-rsh reads for -g, @NAME and -a, in this order (the first source that
 * has a name wins):
 *   1. `--groups FILE`: YAML when it ends in .yaml/.yml (ClusterShell's groups.d format), else
 *      `name: nodeset` lines (ClusterShell's local source);
 *   2. ClusterShell: `$CLUSTERSHELL_CFGDIR` (default /etc/clustershell): `groups.d/*.yaml` (sorted),
 *      then the local source `groups` or `groups.d/local.cfg`; the default source named in
 *      groups.conf ([Main] default:) is asked first;
 *   3. pdsh's dshgroup: `~/.dsh/group/NAME`, then `$MULTI_RSH_DSH_DIR/group/NAME` (default /etc/dsh).
 * External upcalls in groups.conf (shell commands) are not run.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../../errors.js";
import { GroupError, GroupResolver, parseClusterShellYaml, parseDshGroup, parseGroupLines, type GroupSource } from "../../remote/hosts/groups.js";
import type { FileReader } from "../../remote/hosts/hostlist.js";

function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read group file '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, "AIU_GROUP");
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** groups.conf's [Main] default source, when it names one. */
function defaultSource(cfgdir: string): string | null {
  const conf = join(cfgdir, "groups.conf");
  if (!isFile(conf)) return null;
  let section = "";
  for (const raw of read(conf).split(/\r?\n/)) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const s = /^\[(.+)\]$/.exec(line);
    if (s) section = s[1]!.trim();
    else if (section === "Main") {
      const m = /^default\s*[:=]\s*(\S+)/.exec(line);
      if (m) return m[1]!;
    }
  }
  return null;
}

function fileSource(path: string): GroupSource[] {
  const text = read(path);
  return /\.ya?ml$/i.test(path) ? parseClusterShellYaml(text, path) : [parseGroupLines(text, path, "local")];
}

export function readGroupSources(env: Record<string, string | undefined>, groupsFile?: string): GroupSource[] {
  const sources: GroupSource[] = [];
  if (groupsFile !== undefined) {
    if (!existsSync(groupsFile)) throw new GroupError(`--groups '${groupsFile}': no such file`);
    sources.push(...fileSource(groupsFile));
  }
  const cfgdir = env.CLUSTERSHELL_CFGDIR || "/etc/clustershell";
  const cs: GroupSource[] = [];
  for (const f of listDir(join(cfgdir, "groups.d"))) {
    if (/\.ya?ml$/i.test(f) && isFile(join(cfgdir, "groups.d", f))) cs.push(...parseClusterShellYaml(read(join(cfgdir, "groups.d", f)), join(cfgdir, "groups.d", f)));
  }
  for (const local of [join(cfgdir, "groups"), join(cfgdir, "groups.d", "local.cfg")]) {
    if (isFile(local)) {
      cs.push(parseGroupLines(read(local), local, "local"));
      break;
    }
  }
  const def = defaultSource(cfgdir) ?? "local";
  cs.sort((a, b) => Number(b.name === def) - Number(a.name === def));
  sources.push(...cs);
  const dsh = new Map<string, string>();
  const dirs = [env.HOME ? join(env.HOME, ".dsh", "group") : null, join(env.MULTI_RSH_DSH_DIR || "/etc/dsh", "group")];
  for (const dir of dirs) {
    if (!dir) continue;
    for (const name of listDir(dir)) {
      if (!dsh.has(name) && isFile(join(dir, name))) dsh.set(name, parseDshGroup(read(join(dir, name))));
    }
  }
  if (dsh.size) sources.push({ name: "dsh", where: dirs.filter(Boolean).join(", "), groups: dsh });
  return sources;
}

export function groupResolver(env: Record<string, string | undefined>, groupsFile: string | undefined, readFile: FileReader): GroupResolver {
  return new GroupResolver(readGroupSources(env, groupsFile), readFile);
}
