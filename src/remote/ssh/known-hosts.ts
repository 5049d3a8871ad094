/**
 * OpenSSH known_hosts files, as text in and decisions out (no I/O), for the built-in ssh transport.
 *
 * A line is `[@marker] patterns keytype base64-blob [comment]` (sshd(8) "SSH_KNOWN_HOSTS FILE
 * FORMAT"). `patterns` is either a comma list of host patterns (`*`, `?`, a leading `!` negates) or
 * one hashed name `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, which can only be tested, never
 * read back. A host on a port other than 22 is written `[host]:port`.
 *
 * The decision follows OpenSSH's check_host_key(): a key of the same type but another blob is a
 * *changed* key (the "REMOTE HOST IDENTIFICATION HAS CHANGED" case) and fails whatever the policy;
 * a host with no key of that type is *unknown* (strict: fail; accept-new: add it; off: go on).
 * `@revoked` wins over everything; `@cert-authority` lines are skipped (host certificates are not
 * supported by ssh2, so they can never vouch for a plain key).
 */
import { createHash, createHmac, randomBytes } from "node:crypto";

export interface KnownHostEntry {
  /** Where it came from, for messages ("~/.ssh/known_hosts:12"). */
  file: string;
  line: number;
  marker: "revoked" | "cert-authority" | null;
  /** Plain patterns, or null when the name is hashed. */
  patterns: string[] | null;
  hashed: { salt: Buffer; hash: Buffer } | null;
  keyType: string;
  key: Buffer;
}

export type HostKeyVerdict =
  | { kind: "match"; entry: KnownHostEntry }
  | { kind: "changed"; entry: KnownHostEntry }
  | { kind: "revoked"; entry: KnownHostEntry }
  | { kind: "unknown"; otherTypes: string[] };

/** The name a host is filed under: `host` on port 22, else `[host]:port` (OpenSSH put_host_port). */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** Parse one file's text; bad lines are skipped, as ssh does (it only logs them). */
export function parseKnownHosts(text: string, file = "known_hosts"): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === "" || raw.startsWith("#")) continue;
    const fields = raw.split(/[ \t]+/);
    let marker: KnownHostEntry["marker"] = null;
    if (fields[0] === "@revoked" || fields[0] === "@cert-authority") {
      marker = fields[0] === "@revoked" ? "revoked" : "cert-authority";
      fields.shift();
    } else if (fields[0]!.startsWith("@")) {
      continue;
    }
    const [names, keyType, b64] = fields;
    if (names === undefined || keyType === undefined || b64 === undefined) continue;
    const key = decodeBase64(b64);
    if (key === null || key.length === 0) continue;
    let patterns: string[] | null = null;
    let hashed: KnownHostEntry["hashed"] = null;
    if (names.startsWith("|1|")) {
      const parts = names.split("|");
      const salt = parts[2] !== undefined ? decodeBase64(parts[2]) : null;
      const hash = parts[3] !== undefined ? decodeBase64(parts[3]) : null;
      if (salt === null || hash === null || salt.length === 0 || hash.length !== 20) continue;
      hashed = { salt, hash };
    } else if (names.startsWith("|")) {
      continue; // an unknown hash format
    } else {
      patterns = names.split(",").filter((p) => p !== "");
    }
    out.push({ file, line: i + 1, marker, patterns, hashed, keyType, key });
  }
  return out;
}

function decodeBase64(s: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(s)) return null;
  return Buffer.from(s, "base64");
}

/** OpenSSH match_pattern(): `*` any run, `?` any one character, case-insensitive for host names. */
export function matchPattern(name: string, pattern: string): boolean {
  const n = name.toLowerCase();
  const p = pattern.toLowerCase();
  // Iterative glob with one backtrack point: linear in practice, no regex built from user input.
  let ni = 0;
  let pi = 0;
  let star = -1;
  let mark = 0;
  while (ni < n.length) {
    if (pi < p.length && (p[pi] === "?" || p[pi] === n[ni])) {
      ni++;
      pi++;
    } else if (pi < p.length && p[pi] === "*") {
      star = pi++;
      mark = ni;
    } else if (star !== -1) {
      pi = star + 1;
      ni = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === "*") pi++;
  return pi === p.length;
}

/** OpenSSH match_hostname(): any negated pattern that matches vetoes; else any positive match. */
export function matchHostPatterns(name: string, patterns: readonly string[]): boolean {
  let positive = false;
  for (const pat of patterns) {
    if (pat.startsWith("!")) {
      if (matchPattern(name, pat.slice(1))) return false;
    } else if (matchPattern(name, pat)) {
      positive = true;
    }
  }
  return positive;
}

export function entryMatchesHost(entry: KnownHostEntry, name: string): boolean {
  if (entry.hashed) {
    const mac = createHmac("sha1", entry.hashed.salt).update(name).digest();
    return mac.equals(entry.hashed.hash);
  }
  return entry.patterns !== null && matchHostPatterns(name, entry.patterns);
}

/** The key type named inside an SSH public key blob (RFC 4253 §6.6: string type, then data). */
export function keyTypeOfBlob(blob: Buffer): string | null {
  if (blob.length < 4) return null;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return null;
  return blob.subarray(4, 4 + len).toString("latin1");
}

/** Decide on a key offered by the server filed under `name` (see knownHostsName). */
export function checkHostKey(entries: readonly KnownHostEntry[], name: string, key: Buffer): HostKeyVerdict {
  const keyType = keyTypeOfBlob(key);
  // A revoked key is refused for every host, whatever names its line carries (sshd(8)).
  for (const e of entries) {
    if (e.marker === "revoked" && e.key.equals(key)) return { kind: "revoked", entry: e };
  }
  let changed: KnownHostEntry | null = null;
  const otherTypes = new Set<string>();
  for (const e of entries) {
    if (e.marker !== null || !entryMatchesHost(e, name)) continue;
    if (e.key.equals(key)) return { kind: "match", entry: e };
    if (e.keyType === keyType) changed ??= e;
    else otherTypes.add(e.keyType);
  }
  if (changed) return { kind: "changed", entry: changed };
  return { kind: "unknown", otherTypes: [...otherTypes] };
}

/** What to do with a server's key: go on (and file it, under accept-new), or refuse it and say why. */
export type HostKeyDecision = { accept: true; file: boolean } | { accept: false; problem: string };

/**
 * The policy (StrictHostKeyChecking: strict, accept-new, off) applied to checkHostKey's verdict;
 * `target` names the host in the messages (user@host:port).
 */
export function decideHostKey(policy: "strict" | "accept-new" | "off", entries: readonly KnownHostEntry[], name: string, key: Buffer, target: string): HostKeyDecision {
  if (policy === "off") return { accept: true, file: false };
  const v = checkHostKey(entries, name, key);
  switch (v.kind) {
    case "match":
      return { accept: true, file: false };
    case "revoked":
      return { accept: false, problem: `${target}: the host key ${fingerprint(key)} is marked @revoked (${v.entry.file}:${v.entry.line})` };
    case "changed":
      return {
        accept: false,
        problem:
          `${target}: HOST KEY CHANGED for ${name}: the server offers ${fingerprint(key)}, ` +
          `${v.entry.file}:${v.entry.line} has another ${v.entry.keyType} key; if the change is expected, ` +
          `remove it with ssh-keygen -R '${name}' -f ${v.entry.file}`,
      };
    case "unknown": {
      if (policy === "accept-new") return { accept: true, file: true };
      const others = v.otherTypes.length ? ` (known_hosts has only ${v.otherTypes.join(", ")} keys for it)` : "";
      return {
        accept: false,
        problem: `${target}: unknown host key ${fingerprint(key)} for ${name}${others}; add it to known_hosts or run with --host-key-checking accept-new`,
      };
    }
  }
}

/**
 * The key types known for a host, to offer first in the key exchange, as OpenSSH does
 * (order_hostkeyalgs): otherwise the server may pick a type we have no line for and a host we know
 * would look unknown.
 */
export function knownKeyTypes(entries: readonly KnownHostEntry[], name: string): string[] {
  const types: string[] = [];
  for (const e of entries) {
    if (e.marker !== null || types.includes(e.keyType)) continue;
    if (entryMatchesHost(e, name)) types.push(e.keyType);
  }
  return types;
}

/** Host key algorithm names a known_hosts key type stands for in the key exchange (RFC 8332 for RSA). */
export function hostKeyAlgorithmsFor(keyType: string): string[] {
  return keyType === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [keyType];
}

/** A line to append for a newly accepted key; hashed when the config asks (HashKnownHosts yes). */
export function formatKnownHostsLine(name: string, key: Buffer, hash: boolean, salt: Buffer = randomBytes(20)): string {
  const keyType = keyTypeOfBlob(key) ?? "unknown";
  const filed = hash
    ? `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`
    : name;
  return `${filed} ${keyType} ${key.toString("base64")}\n`;
}

/** SHA256 fingerprint as ssh-keygen -l prints it (unpadded base64), for error messages. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

/**
 * The lines of a run's known_hosts files, indexed once, so that a host's lookup costs its own lines
 * plus the lines that can only be tested (wildcards, negations, hashed names), not the whole file
 * per host: a fan-out to N hosts with a known_hosts of N lines was N² pattern matches.
 */
export class KnownHostsIndex {
  /** Lines whose every pattern is a plain positive name, under each lower-cased name. */
  private readonly byName = new Map<string, KnownHostEntry[]>();
  /** Lines that must be tested against each name: patterns with `*`, `?` or `!`, and hashed names. */
  private readonly tested: KnownHostEntry[] = [];
  /** @revoked lines: they refuse a key for every host, whatever names they carry. */
  private readonly revoked: KnownHostEntry[] = [];
  private readonly order = new Map<KnownHostEntry, number>();

  constructor(entries: readonly KnownHostEntry[] = []) {
    this.add(entries);
  }

  add(entries: readonly KnownHostEntry[]): void {
    for (const e of entries) {
      this.order.set(e, this.order.size);
      if (e.marker === "revoked") {
        this.revoked.push(e);
      } else if (e.marker !== null) {
        continue; // @cert-authority: never vouches for a plain key (see the top comment)
      } else if (e.patterns !== null && e.patterns.every((p) => !/[*?!]/.test(p))) {
        for (const name of new Set(e.patterns.map((p) => p.toLowerCase()))) {
          const list = this.byName.get(name);
          if (list) list.push(e);
          else this.byName.set(name, [e]);
        }
      } else {
        this.tested.push(e);
      }
    }
  }

  /**
   * What checkHostKey and knownKeyTypes need for `name`: every @revoked line, then the lines that
   * match the name, in file order (the first line of a type is the one a "changed" message cites).
   */
  forHost(name: string): KnownHostEntry[] {
    const own = this.byName.get(name.toLowerCase()) ?? [];
    const matched = this.tested.filter((e) => entryMatchesHost(e, name));
    const hits = matched.length === 0 ? own : [...own, ...matched].sort((a, b) => this.order.get(a)! - this.order.get(b)!);
    return this.revoked.length === 0 ? hits : [...this.revoked, ...hits];
  }
}
