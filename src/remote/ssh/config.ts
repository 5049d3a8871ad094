/**
 * ~/.ssh/config resolution, the one reading of it: parsed text in, one host's settings out, for the
 * built-in ssh transport (resolveSshConfig) and for the relay of the system ssh (planFromSshConfig,
 * planFromSshG: where ssh would connect, and whether it may go through us). No I/O: the files are
 * read by config-files.ts, once per run, not once per host.
 *
 * Parsing and Host/Match selection are the `ssh-config` package's; this module applies OpenSSH's
 * rules on top (ssh_config(5)): the first value obtained for a keyword wins, in the order user config
 * then system config (unless -F names the only file); IdentityFile accumulates; tokens %d %u %r %h %n
 * %p %% and a leading ~ are expanded; `Match exec` is never run (it would run a shell per host).
 * ProxyCommand and ProxyJump are reported in `unsupported` so the transport can say to use
 * `-R openssh` rather than silently connect straight to the host.
 */
import SSHConfig from "ssh-config";
import { AddrinuseError } from "../../errors.js";
import { secondsToMs } from "../../core/timer.js";

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
  /** AddressFamily: 0 = any. */
  addressFamily: 0 | 4 | 6;
  /** BindAddress, or null. */
  bindAddress: string | null;
  /**
   * Why ssh would not itself open a TCP connection to hostName:port (its own ProxyCommand, a
   * ProxyJump, a shared connection, BindInterface), or null when it would.
   */
  notDirect: string | null;
}

/** Where ssh would connect (the relay's target). */
export interface SshTarget {
  hostName: string;
  port: number;
  /** AddressFamily: 0 = any. */
  family: 0 | 4 | 6;
  /** BindAddress, or null. */
  localAddress: string | null;
  /** ConnectTimeout in ms; 0 = none. */
  connectTimeoutMs: number;
}

export type RelayPlan = { relay: true; target: SshTarget } | { relay: false; why: string };

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
  throw new AddrinuseError("AIU_USAGE", `ssh config: ${keyword} must be yes or no, not '${v}'`);
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
      throw new AddrinuseError("AIU_USAGE", `ssh config: StrictHostKeyChecking '${v}' is not one of yes, accept-new, no, ask`);
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
    throw new AddrinuseError("AIU_USAGE", `ssh config: Port '${portText}' for ${host} is not a port number`);
  }
  const user = ctx.user || first(merged, "user") || ctx.localUser;
  const hostNameRaw = first(merged, "hostname");
  const hostName = hostNameRaw === undefined ? host : hostNameRaw.replace(/%([%h])/g, (_m, c: string) => (c === "%" ? "%" : host));
  const tokens = { home: ctx.home, localUser: ctx.localUser, user, hostName, alias: host, port };

  const timeoutText = first(merged, "connecttimeout");
  let connectTimeoutMs = 0;
  if (timeoutText !== undefined && timeoutText.toLowerCase() !== "none") {
    const s = Number(timeoutText);
    if (!Number.isFinite(s) || s < 0) throw new AddrinuseError("AIU_USAGE", `ssh config: ConnectTimeout '${timeoutText}' is not a number of seconds`);
    // Clamped and never rounded to 0 (= none): a Node timer past 2^31-1 ms would fire at once.
    connectTimeoutMs = secondsToMs(s);
  }

  const splitFiles = (key: string, fallback: string[]): string[] => {
    const vals = all(merged, key).flatMap((v) => v.split(/\s+/)).filter((v) => v !== "" && v.toLowerCase() !== "none");
    return (all(merged, key).length ? vals : fallback).map((p) => expandTokens(p, tokens));
  };

  const files = identityFiles.filter((f) => f.toLowerCase() !== "none");
  const set = (k: string): string | null => {
    const v = first(merged, k);
    return v !== undefined && v !== "" && v.toLowerCase() !== "none" ? v : null;
  };
  const af = (first(merged, "addressfamily") ?? "any").toLowerCase();
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
    addressFamily: af === "inet" ? 4 : af === "inet6" ? 6 : 0,
    bindAddress: set("bindaddress"),
    notDirect: notDirect(set, (first(merged, "controlmaster") ?? "false").toLowerCase()),
  };
}

function notDirect(set: (k: string) => string | null, master: string): string | null {
  if (set("proxycommand")) return "the ssh configuration has its own ProxyCommand";
  if (set("proxyjump")) return "the ssh configuration has a ProxyJump";
  // A shared (multiplexed) connection is the master's: it may exist already, or outlive this command.
  if (master !== "false" && master !== "no" && set("controlpath")) return "the ssh configuration shares connections (ControlMaster)";
  if (set("bindinterface")) return "the ssh configuration sets BindInterface";
  return null;
}

/**
 * Whether the configuration holds something only ssh itself resolves exactly (Match blocks, host
 * name canonicalisation): then ask `ssh -G`. Otherwise planFromSshConfig's answer is ssh's. Pure.
 */
export function needsSshG(texts: readonly string[]): boolean {
  return texts.some((t) => /^\s*(match|canonicalizehostname|canonicaldomains)\b/im.test(t));
}

/**
 * Whether the system ssh may go through the relay, and where it would connect: resolveSshConfig's
 * answer, with the command line's own settings first as ssh puts them (-p, -o ConnectTimeout, in
 * whole seconds). A configuration it refuses plans no relay: ssh itself will say what is wrong.
 * Only for configurations that need no ssh -G (needsSshG). Pure.
 */
export function planFromSshConfig(configs: readonly SSHConfig[], host: string, cmdline: { port?: number; connectTimeoutMs: number }): RelayPlan {
  let cfg: SshHostConfig;
  try {
    cfg = resolveSshConfig(configs, host, { home: "", localUser: "" });
  } catch (e) {
    return { relay: false, why: (e as Error).message };
  }
  if (cfg.notDirect) return { relay: false, why: cfg.notDirect };
  if (!cfg.hostName) return { relay: false, why: "ssh -G named no host name and port" };
  const timeoutMs = cmdline.connectTimeoutMs > 0 ? Math.max(1, Math.ceil(cmdline.connectTimeoutMs / 1000)) * 1000 : cfg.connectTimeoutMs;
  return {
    relay: true,
    target: { hostName: cfg.hostName, port: cmdline.port ?? cfg.port, family: cfg.addressFamily, localAddress: cfg.bindAddress, connectTimeoutMs: timeoutMs },
  };
}

/**
 * The same plan from the text `ssh -G` prints: one "keyword value" per line, which is ssh_config
 * syntax, so the one resolver reads it (the first value is the one in force). Pure.
 */
export function planFromSshG(text: string): RelayPlan {
  if (!/^port\s/im.test(text)) return { relay: false, why: "ssh -G named no host name and port" };
  let configs: SSHConfig[];
  try {
    configs = parseSshConfigs([text]);
  } catch (e) {
    return { relay: false, why: `ssh -G: ${(e as Error).message}` };
  }
  // Its first line, "host ALIAS", reads as a Host block: the alias is the host it is for.
  return planFromSshConfig(configs, /^host\s+(\S+)/im.exec(text)?.[1] ?? "", { connectTimeoutMs: 0 });
}
