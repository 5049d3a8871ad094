/**
 * ~/.ssh/config resolution for the built-in ssh transport: parsed text in, one host's settings out.
 * The only I/O is inlineIncludes(), through the reader it is given; the transport reads the files
 * once per run, not once per host.
 *
 * Parsing and Host/Match selection are the `ssh-config` package's; this module applies OpenSSH's
 * rules on top (ssh_config(5)): the first value obtained for a keyword wins, in the order user config
 * then system config (unless -F names the only file); IdentityFile accumulates; tokens %d %u %r %h %n
 * %p %% and a leading ~ are expanded; `Match exec` is never run (it would run a shell per host).
 * ProxyCommand and ProxyJump are reported in `unsupported` so the transport can say to use
 * `-R openssh` rather than silently connect straight to the host. `Include` is followed by inlining
 * the files it names (globs allowed; relative paths from ~/.ssh for the user's config, /etc/ssh for
 * the system's), which is exact for the usual top-level `Include config.d/*`; inside a Host block
 * the included file's own Host lines end that block, where OpenSSH would resume it afterwards.
 */
import { readdirSync, readFileSync } from "node:fs";
import SSHConfig from "ssh-config";
import { AddrinuseError } from "../../errors.js";
import { secondsToMs } from "../../core/timer.js";
import { matchPattern } from "./known-hosts.js";

export type HostKeyPolicy = "strict" | "accept-new" | "off";

export interface SshHostConfig {
  /** The host as the user wrote it (OpenSSH's %n). */
  alias: string;
  /** Where to connect (HostName, default the alias). */
  hostName: string;
  port: number;
  user: string;
  /** Expanded paths, in the order to try. */
  identityFiles: string[];
  identitiesOnly: boolean;
  /** ConnectTimeout in ms; 0 = not set. */
  connectTimeoutMs: number;
  /** StrictHostKeyChecking from the config; null when not set there. */
  hostKeyChecking: HostKeyPolicy | null;
  userKnownHostsFiles: string[];
  globalKnownHostsFiles: string[];
  hashKnownHosts: boolean;
  /** Name to look up in known_hosts instead of the host name (HostKeyAlias). */
  hostKeyAlias: string | null;
  /** Ciphers, KexAlgorithms and MACs as written (OpenSSH list syntax), or null when not set. */
  algorithms: { ciphers: string | null; kex: string | null; macs: string | null };
  /** Keywords set for this host that only `-R openssh` honours. */
  unsupported: string[];
}

/**
 * The algorithm list an OpenSSH-style spec asks for (ssh_config(5) Ciphers, KexAlgorithms, MACs):
 * `a,b` is the list, `+a,b` appends, `-a,*b*` removes (wildcards allowed), `^a,b` puts first. Names
 * outside `supported` are dropped (they can only be OpenSSH's own). The defaults when there is no spec.
 */
export function applyAlgorithmSpec(defaults: readonly string[], supported: readonly string[], spec: string | null): string[] {
  if (spec === null || spec.trim() === "") return [...defaults];
  const op = spec[0] === "+" || spec[0] === "-" || spec[0] === "^" ? spec[0] : "";
  const names = spec
    .slice(op ? 1 : 0)
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "");
  const known = names.filter((n) => supported.includes(n));
  switch (op) {
    case "+":
      return [...new Set([...defaults, ...known])];
    case "^":
      return [...new Set([...known, ...defaults])];
    case "-":
      return defaults.filter((d) => !names.some((pat) => matchPattern(d, pat)));
    default:
      return [...new Set(known)];
  }
}


export interface ResolveContext {
  home: string;
  localUser: string;
  /** A user given on the command line (-u); beats the config's User, as `ssh -l` does. */
  user?: string | null;
}

const DEFAULT_IDENTITIES = ["id_rsa", "id_ecdsa", "id_ed25519", "id_dsa"];

// Keywords that change where or through what the connection goes: connecting directly instead
// would reach the wrong place, so the host fails with a pointer to -R openssh.
const UNSUPPORTED = ["proxycommand", "proxyjump"];

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
  if (depth > MAX_INCLUDE_DEPTH) throw new AddrinuseError("ERR_USAGE", `ssh config: Include nested deeper than ${MAX_INCLUDE_DEPTH}`);
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
    if (t === null) throw new AddrinuseError("ERR_USAGE", `cannot read ssh config file '${file}'`);
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
 * The first value in any block (Host, Match or none) that can never be right: a Port that is not a
 * port number, a ConnectTimeout that is not a number of seconds. Found before the run, so that a bad
 * file is one usage error (exit 2), not the same failure repeated for every host its block matches.
 */
export function badSshConfigValue(configs: readonly SSHConfig[]): string | null {
  type Line = { type: number; param?: string; value?: unknown; config?: Line[] };
  const walk = (lines: readonly Line[]): string | null => {
    for (const l of lines) {
      const v = typeof l.value === "string" ? l.value : null;
      const param = l.param?.toLowerCase();
      if (param === "port" && v !== null && !/^\d+$/.test(v)) return `ssh config: Port '${v}' is not a port number`;
      if (param === "port" && v !== null && (Number(v) < 1 || Number(v) > 65535)) return `ssh config: Port '${v}' is not within 1-65535`;
      if (param === "connecttimeout" && v !== null && v.toLowerCase() !== "none" && !(Number.isFinite(Number(v)) && Number(v) >= 0)) {
        return `ssh config: ConnectTimeout '${v}' is not a number of seconds`;
      }
      const inner = l.config ? walk(l.config) : null;
      if (inner) return inner;
    }
    return null;
  };
  for (const c of configs) {
    const bad = walk(c as unknown as Line[]);
    if (bad) return bad;
  }
  return null;
}

/** Parse the text of each config file, in reading order (user's first, or only -F's). */
export function parseSshConfigs(texts: readonly string[]): SSHConfig[] {
  return texts.map((t) => SSHConfig.parse(t));
}

type Computed = Record<string, string | string[]>;

function first(c: Computed, key: string): string | undefined {
  const v = c[key];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v[0] : v;
}

function all(c: Computed, key: string): string[] {
  const v = c[key];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

function yesNo(v: string | undefined, keyword: string): boolean | undefined {
  if (v === undefined) return undefined;
  const l = v.toLowerCase();
  if (l === "yes" || l === "true") return true;
  if (l === "no" || l === "false") return false;
  throw new AddrinuseError("ERR_USAGE", `ssh config: ${keyword} must be yes or no, not '${v}'`);
}

function hostKeyPolicy(v: string | undefined): HostKeyPolicy | null {
  if (v === undefined) return null;
  switch (v.toLowerCase()) {
    case "yes":
    case "true":
    case "ask": // we never prompt: "ask" is as strict as "yes"
      return "strict";
    case "accept-new":
      return "accept-new";
    case "no":
    case "off":
    case "false":
      return "off";
    default:
      throw new AddrinuseError("ERR_USAGE", `ssh config: StrictHostKeyChecking '${v}' is not one of yes, accept-new, no, ask`);
  }
}

/** Expand ssh_config(5) TOKENS and a leading ~ in a path-like value. */
export function expandTokens(value: string, t: { home: string; localUser: string; user: string; hostName: string; alias: string; port: number }): string {
  let v = value.startsWith("~/") || value === "~" ? t.home + value.slice(1) : value;
  v = v.replace(/%([%dhnpru])/g, (_m, c: string) => {
    switch (c) {
      case "%":
        return "%";
      case "d":
        return t.home;
      case "h":
        return t.hostName;
      case "n":
        return t.alias;
      case "p":
        return String(t.port);
      case "r":
        return t.user;
      default:
        return t.localUser;
    }
  });
  return v;
}

/** One host's effective settings from the parsed configs (first obtained value wins). */
export function resolveSshConfig(configs: readonly SSHConfig[], host: string, ctx: ResolveContext): SshHostConfig {
  const merged: Computed = {};
  const identityFiles: string[] = [];
  for (const cfg of configs) {
    const query: { Host: string; User?: string } = { Host: host };
    if (ctx.user) query.User = ctx.user;
    const c = cfg.compute(query, { ignoreCase: true, matchExec: false }) as Computed;
    for (const [k, v] of Object.entries(c)) {
      if (k === "identityfile") identityFiles.push(...(Array.isArray(v) ? v : [v]));
      else if (!(k in merged)) merged[k] = v;
    }
  }

  const portText = first(merged, "port");
  const port = portText === undefined ? 22 : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new AddrinuseError("ERR_USAGE", `ssh config: Port '${portText}' for ${host} is not a port number`);
  }
  const user = ctx.user || first(merged, "user") || ctx.localUser;
  const hostNameRaw = first(merged, "hostname");
  const hostName = hostNameRaw === undefined ? host : hostNameRaw.replace(/%([%h])/g, (_m, c: string) => (c === "%" ? "%" : host));
  const tokens = { home: ctx.home, localUser: ctx.localUser, user, hostName, alias: host, port };

  const timeoutText = first(merged, "connecttimeout");
  let connectTimeoutMs = 0;
  if (timeoutText !== undefined && timeoutText.toLowerCase() !== "none") {
    const s = Number(timeoutText);
    if (!Number.isFinite(s) || s < 0) throw new AddrinuseError("ERR_USAGE", `ssh config: ConnectTimeout '${timeoutText}' is not a number of seconds`);
    // Clamped and never rounded to 0 (= none): a Node timer past 2^31-1 ms would fire at once.
    connectTimeoutMs = secondsToMs(s);
  }

  const splitFiles = (key: string, fallback: string[]): string[] => {
    const vals = all(merged, key).flatMap((v) => v.split(/\s+/)).filter((v) => v !== "" && v.toLowerCase() !== "none");
    return (all(merged, key).length ? vals : fallback).map((p) => expandTokens(p, tokens));
  };

  const files = identityFiles.filter((f) => f.toLowerCase() !== "none");
  const alias = first(merged, "hostkeyalias");
  return {
    alias: host,
    hostName,
    port,
    user,
    identityFiles: (identityFiles.length ? files : DEFAULT_IDENTITIES.map((n) => `~/.ssh/${n}`)).map((p) => expandTokens(p, tokens)),
    identitiesOnly: yesNo(first(merged, "identitiesonly"), "IdentitiesOnly") ?? false,
    connectTimeoutMs,
    hostKeyChecking: hostKeyPolicy(first(merged, "stricthostkeychecking")),
    userKnownHostsFiles: splitFiles("userknownhostsfile", ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]),
    globalKnownHostsFiles: splitFiles("globalknownhostsfile", ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]),
    hashKnownHosts: yesNo(first(merged, "hashknownhosts"), "HashKnownHosts") ?? false,
    hostKeyAlias: alias ?? null,
    algorithms: { ciphers: first(merged, "ciphers") ?? null, kex: first(merged, "kexalgorithms") ?? null, macs: first(merged, "macs") ?? null },
    unsupported: UNSUPPORTED.filter((k) => {
      const v = first(merged, k);
      return v !== undefined && v.toLowerCase() !== "none";
    }),
  };
}
