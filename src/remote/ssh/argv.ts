/**
 * How an ssh argument vector is read, the way ssh itself reads it (ssh.c's getopt, restarted after
 * the host): whether an -R exec template may go through the relay, and what its options say about
 * where it connects. Pure.
 */
import { basename } from "node:path";

/** ssh's options that take an argument (ssh.c's getopt string), to walk a template like ssh does. */
const SSH_OPTS_WITH_ARG = new Set("BbcDEeFIiJLlmOoPpQRSWw".split(""));

/**
 * Why an exec template gets no relay, or null when it does (pure): only an `ssh` program (by its
 * base name: a foreign command's TCP is its own), and not when the template itself proxies (-J,
 * -W, or -o ProxyCommand/ProxyJump; the configuration's own are seen by ssh -G later), or asks
 * ssh for something other than a command (-G, -V, -Q, -O, -N, -f).
 */
export function execTemplateOptOut(argv: readonly string[]): string | null {
  if (argv.length === 0 || basename(argv[0]!) !== "ssh") return "the template's program is not ssh";
  // ssh parses options before and after the host (it restarts getopt after the host), up to the command.
  let host = false;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      if (host) break;
      host = true;
      i++;
      continue;
    }
    if (!a.startsWith("-") || a === "-") {
      if (host) break;
      host = true;
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      if (SSH_OPTS_WITH_ARG.has(c)) {
        const value = j + 1 < a.length ? a.slice(j + 1) : argv[++i] ?? "";
        if (c === "J") return "the template has -J";
        if (c === "W") return "the template has -W";
        if (c === "Q" || c === "O") return `the template has -${c}`;
        if (c === "o" && /^\s*(proxycommand|proxyjump)\b/i.test(value)) return "the template sets ProxyCommand or ProxyJump";
        break;
      }
      if ("GVNf".includes(c)) return `the template has -${c}`;
    }
  }
  return null;
}

/** What an ssh command line says about where it connects, for planning without ssh -G. */
export interface SshCommandLine {
  host: string;
  /** -F */
  configFile?: string;
  /** -p */
  port?: number;
  /** -o options, -4/-6 and -b as config lines: ssh reads them before any file (first value wins). */
  configLines: string[];
}

/** Flags without an argument that do not touch the connection's target. */
const TARGET_NEUTRAL_FLAGS = new Set("1246AaCgKkqsTtvXxYy".split(""));
/** Options with an argument that do not touch the connection's target either. */
const TARGET_NEUTRAL_OPTIONS = new Set("cDEeIiLlmRw".split(""));

/**
 * An ssh argument vector read the way ssh reads it, when every option in it is one this knows
 * (pure); null otherwise (then ssh -G decides). The remote command after the host is not read.
 */
export function parseSshCommandLine(argv: readonly string[]): SshCommandLine | null {
  const out: SshCommandLine = { host: "", configLines: [] };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--" || !a.startsWith("-") || a === "-") {
      if (out.host) break;
      const h = a === "--" ? argv[++i] : a;
      if (h === undefined) return null;
      out.host = h;
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      if (TARGET_NEUTRAL_FLAGS.has(c)) {
        if (c === "4") out.configLines.push("AddressFamily inet");
        if (c === "6") out.configLines.push("AddressFamily inet6");
        continue;
      }
      if (!SSH_OPTS_WITH_ARG.has(c)) return null;
      const value = j + 1 < a.length ? a.slice(j + 1) : argv[++i];
      if (value === undefined) return null;
      if (c === "F") out.configFile = value;
      else if (c === "p") {
        const port = Number(value);
        if (!Number.isInteger(port) || port < 1 || port > 65535) return null;
        out.port = port;
      } else if (c === "b") out.configLines.push(`BindAddress ${value}`);
      else if (c === "o") {
        const m = /^\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*)$/.exec(value);
        if (!m) return null;
        out.configLines.push(`${m[1]} ${m[2]}`);
      } else if (!TARGET_NEUTRAL_OPTIONS.has(c)) return null;
      break;
    }
  }
  return out.host ? out : null;
}

