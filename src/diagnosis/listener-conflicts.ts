/**
 * Why a listening socket blocks a bind to the port, case by case: the same address (or the two
 * wildcards, IPv4's and a dual-stack IPv6 one), a SO_REUSEPORT group, a specific address under a
 * wildcard listener (the hijack Linux refuses), or a wildcard over a specific listener. Pure, like
 * diagnose.ts, which calls it; apart from it because a listener is the one holder that is serving,
 * and its cases turn on addresses and families, where those of the other sockets turn on
 * SO_REUSEADDR and timers.
 */
import { addressFamily, formatEndpoint, isWildcard, unmapV4 } from "../core/address.js";
import type { Diagnosis, DiagnosisKind, SocketRow } from "./diagnose.js";

/** Where a case of the diagnosis writes, in order: its kinds (each kept once), advice paragraphs, summaries. */
export interface Findings {
  addKind: (k: DiagnosisKind) => void;
  advice: string[];
  summaries: Diagnosis["summary"][];
}

/** The listeners on the port whose address overlaps `host`'s: what each address's listeners mean for the bind. */
export function explainListeners(
  listeners: readonly SocketRow[],
  port: number,
  host: string,
  who: (r: SocketRow) => string,
  unreadable: number,
  out: Findings,
): void {
  const { addKind, advice, summaries } = out;
  const hAddr = unmapV4(host);
  // Two or more on one address are a SO_REUSEPORT group (Linux allows no other way).
  const byAddress = new Map<string, SocketRow[]>();
  for (const l of listeners) {
    const k = unmapV4(l.localAddress);
    const list = byAddress.get(k);
    if (list) list.push(l);
    else byAddress.set(k, [l]);
  }
  const dualStackNote = (l: SocketRow) =>
    unmapV4(l.localAddress) === "::" && l.v6only !== true
      ? ` ${formatEndpoint("::", port)} without IPV6_V6ONLY covers IPv4's 0.0.0.0 too (Node's default).`
      : "";
  for (const [lAddr, group] of byAddress) {
    const l = group[0]!;
    const names = [...new Set(group.map(who))].join("; ");
    const pids = [...new Set(group.flatMap((g) => g.owners.map((o) => o.pid)))];
    const stop = pids.length
      ? `Stop it (kill ${pids.join(" ")}, or stop its service) or give your program another port.`
      : `Its owner could not be named${unreadable > 0 ? " (run as root to see every process)" : ""}; stop that server or use another port.`;
    if (group.length > 1) {
      addKind("reuseport-group");
      const uids = [...new Set(group.map((g) => g.uid).filter((u): u is number => u !== undefined))];
      advice.push(
        `${group.length} listening sockets share ${formatEndpoint(l.localAddress, port)} (${names}): a SO_REUSEPORT group; the kernel spreads new connections over them. ` +
          `Another bind joins the group and takes a share of the connections only if it sets SO_REUSEPORT too and runs as the same effective user${uids.length === 1 ? ` (uid ${uids[0]})` : ""}; any other bind, a Node 20 server's included (its net module has no reusePort option before Node 22.12), gets EADDRINUSE. ${stop}`,
      );
      summaries.push({ cause: `a SO_REUSEPORT group of ${group.length} listeners on ${formatEndpoint(l.localAddress, port)}`, holder: names, remedy: pids.length ? `stop them (kill ${pids.join(" ")}) or use another port` : "stop that server or use another port" });
      continue;
    }
    if (lAddr === hAddr || (isWildcard(lAddr) && isWildcard(hAddr))) {
      addKind("listener");
      let family = "";
      if (lAddr !== hAddr) {
        // 0.0.0.0 against Node's default [::] (dual-stack, so it needs IPv4's wildcard too), or the reverse.
        addKind("dual-stack");
        family =
          lAddr === "0.0.0.0"
            ? ` It holds IPv4 only, but a bind to [::] without IPV6_V6ONLY (what Node's listen() does with no host) needs IPv4's 0.0.0.0 too; listen({ host: "::", ipv6Only: true }) would serve IPv6 beside it.`
            : dualStackNote(l);
      }
      advice.push(`A live server is listening on ${formatEndpoint(l.localAddress, port)}: ${names}.${family} ${stop}`);
      summaries.push({ cause: `a live listener on ${formatEndpoint(l.localAddress, port)}`, holder: names, remedy: pids.length ? `stop it (kill ${pids.join(" ")}) or use another port` : "stop that server or use another port" });
    } else if (isWildcard(lAddr)) {
      addKind("specific-over-wildcard");
      if (lAddr === "::" && addressFamily(hAddr) === 4) addKind("dual-stack");
      advice.push(
        `${names} listens on every address (${formatEndpoint(l.localAddress, port)}).${dualStackNote(l)} Binding the more specific ${hAddr} over it is the hijack the note warns about (a second server stealing one address's connections); Linux refuses it, even with SO_REUSEADDR. Stop that server, or make it bind only the addresses it needs.`,
      );
      summaries.push({ cause: `a listener on every address (${formatEndpoint(l.localAddress, port)}) covers ${hAddr}`, holder: names, remedy: "stop that server, or make it bind only the addresses it needs" });
    } else {
      addKind("wildcard-over-specific");
      if (hAddr === "::" && addressFamily(lAddr) === 4) addKind("dual-stack");
      advice.push(
        `${names} listens on the specific address ${formatEndpoint(l.localAddress, port)}, so a bind to every address (${hAddr}${hAddr === "::" ? ", which without IPV6_V6ONLY is IPv4's too" : ""}) on this port is refused. Bind your server to a specific address instead (another one is still free, e.g. with --host), or stop that server.`,
      );
      summaries.push({ cause: `a listener on ${formatEndpoint(l.localAddress, port)} blocks a bind to every address`, holder: names, remedy: "bind a specific address (--host) or stop that server" });
    }
  }
}
