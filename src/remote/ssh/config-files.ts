/**
 * Reading the ssh configuration files as ssh does: the -F file alone, or the user's then the
 * system's, each `Include` inlined (globs allowed; relative paths from ~/.ssh for the user's config,
 * /etc/ssh for the system's). This is exact for the usual top-level `Include config.d/*`; inside a
 * Host block the included file's own Host lines end that block, where OpenSSH would resume it
 * afterwards. What the text means is config.ts's.
 */
import { readdirSync, readFileSync } from "node:fs";
import type SSHConfig from "ssh-config";
import { AddrinuseError } from "../../errors.js";
import { needsSshG, parseSshConfigs } from "./config.js";

export interface ConfigReader {
  /** File text, or null when it cannot be read (a missing Include is skipped, as ssh does). */
  read(path: string): string | null;
  /** Names in a directory, or [] when it cannot be listed. */
  list(dir: string): string[];
}

/** The real filesystem, for the transports; tests pass their own reader. */
export const fsConfigReader: ConfigReader = {
  read: (p) => {
    try {
      return readFileSync(p, "utf8");
    } catch {
      return null;
    }
  },
  list: (d) => {
    try {
      return readdirSync(d);
    } catch {
      return [];
    }
  },
};

const MAX_INCLUDE_DEPTH = 16;

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]");
  return new RegExp(`^${body}$`);
}

/** The files one Include argument names, sorted as glob(3) returns them. */
function includeTargets(arg: string, baseDir: string, home: string, reader: ConfigReader): string[] {
  let p = arg.startsWith("~/") ? home + arg.slice(1) : arg;
  if (!p.startsWith("/")) p = `${baseDir}/${p}`;
  if (!/[*?]/.test(p)) return [p];
  const slash = p.lastIndexOf("/");
  const dir = p.slice(0, slash) || "/";
  if (/[*?]/.test(dir)) return []; // globs in directory parts: not followed
  const re = globToRegExp(p.slice(slash + 1));
  return reader
    .list(dir)
    .filter((n) => re.test(n))
    .sort()
    .map((n) => `${dir}/${n}`);
}

/** Replace each `Include` line with the text of the files it names (recursively, bounded). */
export function inlineIncludes(text: string, baseDir: string, home: string, reader: ConfigReader, depth = 0): string {
  if (depth > MAX_INCLUDE_DEPTH) throw new AddrinuseError("AIU_USAGE", `ssh config: Include nested deeper than ${MAX_INCLUDE_DEPTH}`);
  return text
    .split("\n")
    .map((line) => {
      const m = /^\s*include(?:\s*=\s*|\s+)(.+?)\s*$/i.exec(line);
      if (!m) return line;
      return m[1]!
        .split(/\s+/)
        .flatMap((arg) => includeTargets(arg.replace(/^"|"$/g, ""), baseDir, home, reader))
        .map((file) => {
          const t = reader.read(file);
          return t === null ? "" : inlineIncludes(t, baseDir, home, reader, depth + 1);
        })
        .join("\n");
    })
    .join("\n");
}

/**
 * The config texts ssh reads, in its order, Includes inlined: the -F file alone, or the user's
 * ~/.ssh/config then the system file (null: none). Relative Include paths: from ~/.ssh in a user
 * config (-F too), from /etc/ssh in the system one. A -F file that cannot be read is a usage error
 * (ssh: "Can't open user config file").
 */
export function readSshConfigTexts(reader: ConfigReader, home: string, file: string | undefined, systemFile: string | null): string[] {
  const texts: string[] = [];
  const userDir = `${home}/.ssh`;
  if (file !== undefined) {
    const t = reader.read(file);
    if (t === null) throw new AddrinuseError("AIU_USAGE", `cannot read ssh config file '${file}'`);
    texts.push(inlineIncludes(t, userDir, home, reader));
  } else {
    const user = reader.read(`${userDir}/config`);
    if (user !== null) texts.push(inlineIncludes(user, userDir, home, reader));
    const system = systemFile === null ? null : reader.read(systemFile);
    if (system !== null) texts.push(inlineIncludes(system, "/etc/ssh", home, reader));
  }
  return texts;
}

/**
 * The configuration the system ssh would read, for planning its relay in-process: the files read
 * once per run per -F value, a command line's own -o lines put first. null when only ssh -G
 * resolves it exactly (needsSshG), or it cannot be read or parsed: ssh -G, and then ssh itself,
 * will say what is wrong.
 */
export class PlanningConfigs {
  private readonly texts = new Map<string, string[] | null>();
  private readonly parsed = new Map<string, SSHConfig[] | null>();

  constructor(private readonly home: string) {}

  for(file: string | undefined, commandLine: readonly string[] = []): SSHConfig[] | null {
    const key = file ?? "";
    if (commandLine.length === 0 && this.parsed.has(key)) return this.parsed.get(key)!;
    if (!this.texts.has(key)) {
      try {
        this.texts.set(key, readSshConfigTexts(fsConfigReader, this.home, file, "/etc/ssh/ssh_config"));
      } catch {
        this.texts.set(key, null);
      }
    }
    const files = this.texts.get(key);
    const texts = files ? [...(commandLine.length ? [commandLine.join("\n")] : []), ...files] : null;
    let configs: SSHConfig[] | null = null;
    try {
      if (texts && !needsSshG(texts)) configs = parseSshConfigs(texts);
    } catch {
      configs = null;
    }
    if (commandLine.length === 0) this.parsed.set(key, configs);
    return configs;
  }
}

