/**
 * What `why` says beyond the port's own table, each only when the cheap reading points at it:
 *  - a listener owned by docker-proxy: the container it publishes (runtime state on disk);
 *  - a listener owned by PID 1: systemd socket activation, and the .socket unit to stop;
 *  - the port looks free here (or the bind failed with nothing to show): listeners in other network
 *    namespaces (containers, `ip netns`), and DNAT rules that send the port elsewhere.
 * The last costs a walk of /proc and a run of nft/iptables-save, so it is never on the path of a
 * port that already has an explanation (bench/why.ts times that path).
 */
import { readFileSync } from "node:fs";
import { formatEndpoint, unmapV4 } from "../../core/address.js";
import { printableCommand, type Diagnosis, type DiagnosisKind, type SocketRow } from "../../diagnosis/diagnose.js";
import {
  containerOfNamespace,
  containerOfPid,
  dockerRoots,
  parseDockerProxy,
  readDockerContainers,
  type ContainerInfo,
  type ContainerRef,
} from "../../kernel/containers.js";
import { listenersElsewhere, listNetworkNamespaces, type NetworkNamespace } from "../../kernel/namespaces.js";
import { readNatRules } from "../../kernel/nat.js";
import { findSocketUnits } from "../../kernel/systemd.js";

export interface Finding {
  kind: DiagnosisKind;
  advice: string;
  summary: Diagnosis["summary"];
  /** The facts behind it, for --json. */
  detail: Record<string, unknown>;
}

export interface Further {
  findings: Finding[];
  /** The namespace this process (and so the user's bind) is in; set when namespaces were looked at. */
  ownNamespace: { inode: number; names: string[] } | null;
  /** Other namespaces whose tables were read, and those left for lack of time (ADDRINUSE_NETNS_BUDGET_MS, default 500). */
  namespacesScanned: { looked: number; skipped: number } | null;
}

function describeContainer(c: ContainerInfo | ContainerRef): string {
  const info = c as Partial<ContainerInfo>;
  return `${c.runtime} container ${info.name ? `${info.name} ` : ""}(id ${c.id.slice(0, 12)}${info.image ? `, image ${info.image}` : ""})`;
}

function nsName(ns: { inode: number; names: string[] }): string {
  return `${ns.names.length ? ns.names.join(", ") : "unnamed"} (net:[${ns.inode}])`;
}

function argvOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1").replace(/\0+$/, "").split("\0");
  } catch {
    return [];
  }
}

export function explainFurther(port: number, host: string, d: Diagnosis, rows: readonly SocketRow[], env: NodeJS.ProcessEnv): Further {
  const findings: Finding[] = [];
  let containers: ContainerInfo[] | undefined;
  const allContainers = () => (containers ??= readDockerContainers(dockerRoots(env)));
  const listeners = rows.filter((r) => r.state === "LISTEN" && r.localPort === port);

  for (const l of listeners) {
    for (const o of l.owners) {
      const proxy = parseDockerProxy(argvOf(o.pid));
      if (proxy) {
        const c = allContainers().find((x) => x.addresses.includes(proxy.containerIp)) ?? null;
        const what = c ? describeContainer(c) : `the container at ${proxy.containerIp}`;
        findings.push({
          kind: "container",
          advice: `pid ${o.pid} is docker-proxy: port ${proxy.hostPort} is published by ${what}, forwarded to ${formatEndpoint(proxy.containerIp, proxy.containerPort)} inside it. Killing docker-proxy does not free it (Docker starts it again and keeps its DNAT rule): stop or re-create the container without that port (docker stop ${c?.name ?? c?.id.slice(0, 12) ?? "CONTAINER"}), or publish another host port (-p OTHER:${proxy.containerPort}).`,
          summary: { cause: `port ${port} is published by ${what}`, holder: `pid ${o.pid} (docker-proxy)`, remedy: `docker stop ${c?.name ?? "the container"}, or publish another host port` },
          detail: { proxy, container: c },
        });
      }
      if (o.pid === 1) {
        const units = findSocketUnits(port, env);
        const u = units[0];
        findings.push({
          kind: "socket-activation",
          advice:
            `PID 1 (${printableCommand(o.command, 40)}) holds the listening socket: systemd socket activation${u ? `, unit ${u.unit} (ListenStream=${u.listen}${u.from === "systemctl" ? "" : `, in ${u.from}`})` : " (no .socket unit with this port was found)"}. ` +
            `Stopping or killing the service${u?.activates ? ` (${u.activates})` : ""} does not free the port: PID 1 keeps the socket and starts the service again at the next connection. ` +
            `Stop the socket unit (systemctl stop ${u?.unit ?? "NAME.socket"}; systemctl disable it to keep it stopped), or move it to another port.`,
          summary: { cause: `systemd socket activation${u ? `: ${u.unit}` : ""} (PID 1 holds the socket)`, holder: "pid 1", remedy: `systemctl stop ${u?.unit ?? "NAME.socket"}` },
          detail: { units },
        });
      }
    }
  }

  const unexplained = d.kinds.includes("unknown") || (d.kinds.length === 1 && d.kinds[0] === "free" && d.groups.length === 0);
  let ownNamespace: Further["ownNamespace"] = null;
  let namespacesScanned: Further["namespacesScanned"] = null;
  if (unexplained) {
    const namespaces = listNetworkNamespaces();
    const own: NetworkNamespace | undefined = namespaces.find((n) => n.own);
    ownNamespace = own ? { inode: own.inode, names: own.names } : null;
    const ownText = own ? `this process's, ${nsName(own)}` : "this process's";
    const budget = Number(env.ADDRINUSE_NETNS_BUDGET_MS);
    const scan = listenersElsewhere(port, namespaces, Number.isFinite(budget) && budget >= 0 ? budget : 500);
    namespacesScanned = { looked: scan.looked, skipped: scan.skipped };
    for (const e of scan.found) {
      const owner = e.owners[0];
      const c = (owner ? containerOfPid(owner.pid, allContainers()) : null) ?? containerOfNamespace(e.namespace.inode, allContainers());
      const holder = e.owners.length ? e.owners.map((x) => `pid ${x.pid} (${printableCommand(x.command.split(" ")[0] ?? "?", 40)})`).join(", ") : `a process of pid ${e.namespace.pids.join(", ")}'s namespace`;
      const where = c ? describeContainer(c) : `network namespace ${nsName(e.namespace)}`;
      findings.push({
        kind: c ? "container" : "other-namespace",
        advice:
          `${holder} listens on ${formatEndpoint(e.localAddress, port)} in ${where}${c ? `, network namespace ${nsName(e.namespace)}` : ""}. ` +
          `That is another network namespace: it does not block a bind here, and connections to port ${port} here do not reach it (unless a published port or NAT rule forwards them). ` +
          `Your bind would be in ${ownText}. To reach that server, connect from inside it (${e.namespace.names[0] && !e.namespace.names[0].startsWith("/") ? `ip netns exec ${e.namespace.names[0]} ...` : `nsenter -t ${owner?.pid ?? e.namespace.pids[0]} -n ...`}) or publish the port.`,
        summary: { cause: `a listener on port ${port} in ${where}, another network namespace`, holder, remedy: "connect from inside that namespace, or publish the port" },
        detail: { namespace: e.namespace, localAddress: e.localAddress, owners: e.owners, container: c },
      });
    }
    const nat = readNatRules(port);
    for (const r of nat.rules) {
      const toAddr = unmapV4(r.to.replace(/^\[?([^\]]*?)\]?(?::\d+)?$/, "$1"));
      const c = allContainers().find((x) => x.addresses.includes(toAddr)) ?? null;
      findings.push({
        kind: "dnat",
        advice:
          `A NAT rule (${r.source}, ${r.chain}) sends TCP port ${port} to ${r.to}${c ? `, ${describeContainer(c)}` : ""}: ${printableCommand(r.rule, 160)}. ` +
          `It needs no socket here, so ss shows nothing and a bind succeeds, but connections that pass that chain go to ${r.to}, never to a server bound here. ` +
          (c ? `Stop the container or publish another port.` : `Remove the rule (nft delete rule ... / iptables -t nat -D ...) or use another port.`),
        summary: { cause: `a DNAT rule sends port ${port} to ${r.to}${c ? ` (${describeContainer(c)})` : ""}`, holder: null, remedy: c ? "stop the container, or publish another port" : "remove the rule, or use another port" },
        detail: { rule: r, container: c, tools: nat.tools },
      });
    }
  }
  return { findings, ownNamespace, namespacesScanned };
}
