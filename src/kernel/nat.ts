/**
 * Destination NAT rules that send a port somewhere else. A port published by Docker or Podman (or
 * any DNAT rule) needs no socket on the host: `ss` shows nothing, a bind succeeds, and yet the
 * connections never reach the program that bound it, because PREROUTING (and OUTPUT, for the host's
 * own connections) rewrites their destination first.
 *
 * The rules are read with the tools that own them, each run once with a time limit, when present:
 * `nft list ruleset` (nftables, also where iptables-nft puts its rules) and `iptables-save -t nat`
 * (legacy iptables). Parsing is pure and line based; a rule is kept when it matches TCP destination
 * port PORT (or a range holding it) and DNATs or REDIRECTs it.
 */
import { spawnSync } from "node:child_process";

export interface NatRule {
  source: "nft" | "iptables";
  /** The rule as the tool printed it, trimmed (untrusted text: shown escaped). */
  rule: string;
  /** Where it sends the connections: ADDRESS:PORT, ADDRESS, or :PORT for a redirect. */
  to: string;
  /** nft table/chain or iptables chain the rule sits in. */
  chain: string;
}

function portMatches(spec: string, port: number): boolean {
  for (const part of spec.replace(/[{}\s]/g, "").split(",")) {
    const m = /^(\d+)(?:[-:](\d+))?$/.exec(part);
    if (m && port >= Number(m[1]) && port <= Number(m[2] ?? m[1])) return true;
  }
  return false;
}

/** `nft list ruleset` text: rules with `tcp dport P ... dnat to X` or `redirect to :P`. */
export function parseNftRules(text: string, port: number): NatRule[] {
  const out: NatRule[] = [];
  let table = "";
  let chain = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const t = /^table (\S+ \S+) \{/.exec(line);
    if (t) table = t[1]!;
    const c = /^chain (\S+) \{/.exec(line);
    if (c) chain = c[1]!;
    const d = /\btcp dport (\{[^}]*\}|\S+)/.exec(line);
    if (!d || !portMatches(d[1]!, port)) continue;
    const to = /\bdnat (?:ip6? )?to (\S+)/.exec(line) ?? /\bredirect to (\S+)/.exec(line);
    if (to) out.push({ source: "nft", rule: line, to: to[1]!, chain: `${table} ${chain}`.trim() });
  }
  return out;
}

/** `iptables-save -t nat` text: `-A CHAIN ... -p tcp ... --dport P ... -j DNAT --to-destination X`. */
export function parseIptablesSave(text: string, port: number): NatRule[] {
  const out: NatRule[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line.startsWith("-A ") || !/-p tcp\b/.test(line)) continue;
    const d = /--dports? (\S+)/.exec(line);
    if (!d || !portMatches(d[1]!, port)) continue;
    const dnat = /-j DNAT --to-destination (\S+)/.exec(line);
    const redirect = /-j REDIRECT --to-ports (\S+)/.exec(line);
    if (dnat || redirect) out.push({ source: "iptables", rule: line, to: dnat ? dnat[1]! : `:${redirect![1]}`, chain: line.split(" ")[1]! });
  }
  return out;
}

function run(argv: string[]): string | null {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", timeout: 3000, maxBuffer: 16 << 20 });
  return r.status === 0 ? r.stdout : null;
}

/** The NAT rules for `port` that this machine's tools show (none if no tool is installed or root is needed). */
export function readNatRules(port: number): { rules: NatRule[]; tools: string[] } {
  const rules: NatRule[] = [];
  const tools: string[] = [];
  const nft = run(["nft", "list", "ruleset"]);
  if (nft !== null) {
    tools.push("nft");
    rules.push(...parseNftRules(nft, port));
  }
  // iptables-nft's rules are in nft's ruleset already; legacy iptables' are only here.
  const ipt = run(["iptables-legacy-save", "-t", "nat"]) ?? (nft === null ? run(["iptables-save", "-t", "nat"]) : null);
  if (ipt !== null) {
    tools.push("iptables-save");
    rules.push(...parseIptablesSave(ipt, port));
  }
  return { rules, tools };
}
