/**
 * `addrinuse why PORT`: bind it like a Node server, read who holds it, say what to do.
 *
 * The common case (a port with a listener, or thousands of TIME_WAIT) is one bind, one netlink dump
 * filtered to the port, and an owner walk that stops at the first match. Explanations that cost more
 * (other network namespaces, NAT rules, systemd units) run only when that leaves the port
 * unexplained, in why-more.ts.
 */
import { diagnose, ownerLabel, parsePortRanges, printableCommand, seconds, type Diagnosis, type SocketRow } from "../../diagnosis/diagnose.js";
import { addressesOverlap, formatEndpoint } from "../../core/address.js";
import { BOUND_INACTIVE_STATES } from "../../kernel/inet-diag.js";
import { readTcpTableAsync, tableSourceNamed, type TableSource } from "../../kernel/read.js";
import { readPortSettings } from "../../kernel/sysctl.js";
import { tryBind } from "../../net/probe.js";
import { lookup } from "node:dns/promises";
import { explainFurther, type Further } from "./why-more.js";
import { table } from "../display.js";
import type { CliIO } from "../io.js";

export interface WhyOptions {
  port: number;
  host?: string;
  json: boolean;
}

export interface LocalhostNote {
  resolvesTo: string[];
  nodeBinds: string;
}

export interface WhyReport extends Diagnosis {
  /** With --host localhost: what it resolves to and which address Node's listen() takes. */
  localhost: LocalhostNote | null;
  /** Beyond the port's table (why-more.ts): containers, namespaces, NAT, socket units. */
  further: Further;
  /** Processes whose sockets we could not look into (not root). */
  unreadableProcesses: number;
  /** How the kernel table was read: netlink sock_diag, or procfs text when netlink is unavailable. */
  source: TableSource;
}

/** Sockets listed per state in the text report; the rest are counted. */
const SHOWN_PER_STATE = 20;

export interface WhyReportOptions {
  source?: "auto" | TableSource;
  /**
   * List every socket (--json). Otherwise ownerless sockets past the first SHOWN_PER_STATE per state
   * and local address are only counted, which at 50,000 TIME_WAIT sockets spares 50,000 objects.
   */
  complete?: boolean;
  /** Where ADDRINUSE_DOCKER_ROOT and ADDRINUSE_SYSTEMD_UNIT_PATH come from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export async function whyReport(port: number, asked: string | undefined, options: WhyReportOptions = {}): Promise<WhyReport> {
  // `localhost` is what people type, and it is two addresses: Node's listen() looks it up
  // (dns.lookup, /etc/hosts order, Node 17+ keeps it) and binds only the first one.
  let host = asked;
  let localhost: LocalhostNote | undefined;
  if (asked === "localhost") {
    const all = await lookup("localhost", { all: true }).catch(() => [] as { address: string; family: number }[]);
    const first = all[0]?.address ?? "127.0.0.1";
    host = first;
    localhost = { resolvesTo: all.map((a) => a.address), nodeBinds: first };
  }
  const bind = await tryBind(port, host);
  const source = options.source ?? "auto";
  const snapshot = await readTcpTableAsync({
    localPort: port,
    source,
    ownerlessSample: options.complete === false ? SHOWN_PER_STATE : undefined,
  });
  // A socket bound but never listened or connected holds its port too; the kernel lists those only
  // on request, from its bind hash (TCP_BOUND_INACTIVE, Linux 6.5+). Asked only when the bind failed
  // and the table shows nothing that overlaps, so a busy port never pays for that walk.
  let boundInactiveListed = false;
  if (!bind.ok && bind.errno === "EADDRINUSE" && snapshot.source === "netlink" && !snapshot.sockets.some((r) => addressesOverlap(r.localAddress, host ?? "::"))) {
    const bound = await readTcpTableAsync({ localPort: port, source: "netlink", states: BOUND_INACTIVE_STATES }).catch(() => null);
    if (bound) {
      boundInactiveListed = true;
      for (const r of bound.sockets) snapshot.sockets.push(r);
      if (bound.v6only && snapshot.v6only) for (const [k, v] of bound.v6only) snapshot.v6only.set(k, v);
      snapshot.unreadableProcesses = Math.max(snapshot.unreadableProcesses, bound.unreadableProcesses);
    }
  }
  const rows: SocketRow[] = snapshot.sockets;
  if (snapshot.v6only !== null && snapshot.v6only.size > 0) {
    for (const r of rows) {
      if (r.inode === 0) continue;
      const v = snapshot.v6only.get(r.inode);
      if (v !== undefined) r.v6only = v;
    }
  }
  const settings = readPortSettings();
  // Node's listen() with no host binds the IPv6 wildcard, dual-stack: every address.
  const d = diagnose(port, host ?? "::", rows, bind, snapshot.omitted, {
    ephemeralRange: settings.ephemeralRange,
    reservedPorts: parsePortRanges(settings.reservedPorts),
    unreadableProcesses: snapshot.unreadableProcesses,
    boundInactiveListed,
  });
  // Only when there is something to look further into (a listener to name, or nothing here).
  const needsMore =
    d.groups.length === 0 ||
    d.kinds.includes("unknown") ||
    rows.some((r) => r.state === "LISTEN" && r.owners.some((o) => o.pid === 1 || o.command.includes("docker-proxy")));
  const further: Further = needsMore
    ? explainFurther(port, host ?? "::", d, rows, options.env ?? process.env)
    : { findings: [], ownNamespace: null, namespacesScanned: null };
  for (const f of further.findings) {
    if (!d.kinds.includes(f.kind)) d.kinds.push(f.kind);
  }
  if (further.findings.length) {
    // What was found beyond the table is the better first line: it names the real holder.
    d.summary = further.findings[0]!.summary;
    d.advice.unshift(...further.findings.map((f) => f.advice));
    if (d.kinds[0] === "free" || d.kinds.includes("unknown")) d.kinds = d.kinds.filter((k) => k !== "free" && k !== "unknown");
  }
  if (localhost) {
    const others = localhost.resolvesTo.filter((a) => a !== localhost!.nodeBinds);
    d.advice.push(
      `localhost resolves to ${localhost.resolvesTo.join(", ") || "nothing"} here; Node's listen({ host: "localhost" }) binds only the first, ${localhost.nodeBinds}, so this is the address checked.` +
        (others.length ? ` A client that tries ${others.join(", ")} first does not reach it, and another server may hold ${others.map((a) => formatEndpoint(a, port)).join(", ")} without any conflict; bind the address you mean, or both.` : ""),
    );
  }
  return { ...d, localhost: localhost ?? null, further, unreadableProcesses: snapshot.unreadableProcesses, source: snapshot.source };
}

export function formatWhy(r: WhyReport): string {
  const lines: string[] = [];
  const where = r.host === "::" || r.host === "0.0.0.0" ? `port ${r.port} (all addresses)` : formatEndpoint(r.host, r.port);
  lines.push(
    r.bindable
      ? `${where}: bindable by a Node server (SO_REUSEADDR)` +
          (r.withoutReuseAddr === "EADDRINUSE" ? `; a program without SO_REUSEADDR would get EADDRINUSE` : "")
      : `${where}: NOT bindable: ${r.kinds.includes("permission") ? "EACCES (permission denied)" : r.kinds.includes("address-not-available") ? "EADDRNOTAVAIL (no such address here)" : "EADDRINUSE"}`,
  );
  // Cause, holder and one remedy first; the evidence and the long explanation follow.
  lines.push(`  cause:  ${r.summary.cause}`);
  if (r.summary.holder !== null) lines.push(`  holder: ${r.summary.holder}`);
  lines.push(`  do:     ${r.summary.remedy}`);
  if (r.groups.length === 0) lines.push("No TCP socket uses this port.");
  for (const g of r.groups) {
    const timer = g.longestTimerMs !== null && (g.state === "TIME_WAIT" || g.state.startsWith("FIN_WAIT") || g.state === "CLOSING" || g.state === "LAST_ACK")
      ? `, longest ${seconds(g.longestTimerMs)} left`
      : "";
    const label = g.state === "CLOSE" ? "BOUND (not listening, not connected)" : g.state;
    lines.push("", `${label} (${g.count}${timer})`);
    const shown = g.sockets.slice(0, SHOWN_PER_STATE);
    lines.push(
      table(
        shown.map((s) => [
          formatEndpoint(s.localAddress, s.localPort),
          s.state === "LISTEN" ? "*" : formatEndpoint(s.remoteAddress, s.remotePort),
          s.owners.length === 0
            ? ownerLabel(s, r.unreadableProcesses)
            : s.owners.map((o) => `pid ${o.pid}${o.user ? ` (${o.user})` : ""} ${printableCommand(o.command)}`).join("; "),
          s.timer !== "none" && s.state !== "ESTABLISHED" && s.state !== "LISTEN" ? `${seconds(s.timerMs)} left` : "",
        ]),
        "  ",
      ),
    );
    if (g.count > shown.length) lines.push(`  ... and ${g.count - shown.length} more`);
  }
  if (r.advice.length) {
    lines.push("", "Why, and what to do:");
    for (const a of r.advice) lines.push(`  - ${a}`);
  }
  const scanned = r.further.namespacesScanned;
  if (scanned && scanned.skipped > 0) {
    lines.push("", `(${scanned.skipped} of ${scanned.looked + scanned.skipped} other network namespaces not looked into within the time limit; ADDRINUSE_NETNS_BUDGET_MS raises it)`);
  }
  if (r.unreadableProcesses > 0) {
    lines.push("", `(${r.unreadableProcesses} processes could not be inspected; run as root to name every owner)`);
  }
  return lines.join("\n") + "\n";
}

export async function runWhy(opts: WhyOptions, io: CliIO): Promise<number> {
  const r = await whyReport(opts.port, opts.host, { source: tableSourceNamed(io.env.ADDRINUSE_TABLE), complete: opts.json, env: io.env });
  // Indented on a terminal; compact when piped, where a port with 50,000 TIME_WAIT sockets makes a
  // 20 MB indented document and stringifying it cost more than reading the kernel table.
  if (opts.json) {
    // Two writes rather than `json + "\n"`: concatenating would copy the whole document once more.
    io.stdout.write(JSON.stringify(r, null, io.stdout.isTTY ? 2 : undefined));
    io.stdout.write("\n");
  } else io.stdout.write(formatWhy(r));
  return r.bindable ? 0 : 1;
}
