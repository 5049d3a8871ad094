/**
 * `addrinuse free PORT [--yes]`: shows what would free the port, and does it only with --yes.
 * Ownerless sockets (TIME_WAIT, orphans) are destroyed through netlink SOCK_DESTROY, as `ss -K`;
 * processes holding the port get TERM, then KILL after --grace seconds.
 *
 * Exit status: 0 the port is bindable at the end (by a Node server); 1 it is not (a dry run with
 * something to do, a refusal, or a holder that would not go); 2 usage.
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { addressesOverlap, formatEndpoint } from "../../core/address.js";
import { freePlan, type FreePlan } from "../../diagnosis/free-plan.js";
import { readTcpTableAsync, tableSourceNamed } from "../../kernel/read.js";
import { requestsWithAck } from "../../kernel/netlink.js";
import { encodeDestroyRequest } from "../../kernel/sock-destroy.js";
import { tryBind } from "../../net/probe.js";
import { endianness } from "node:os";
import { kernelConfigOption } from "../../kernel/sysctl.js";
import type { CliIO } from "../io.js";

export interface FreeOptions {
  port: number;
  host?: string;
  yes: boolean;
  graceS: number;
  json: boolean;
}

export interface FreeReport {
  port: number;
  host: string;
  plan: FreePlan;
  dryRun: boolean;
  /** With --yes: what SOCK_DESTROY did. */
  destroyed: { ok: number; gone: number; failed: number; error: string | null };
  /** With --yes: each signalled process and how it ended. */
  signalled: { pid: number; term: boolean; killed: boolean; exited: boolean }[];
  /** CONFIG_INET_DIAG_DESTROY of the running kernel: whether SOCK_DESTROY can work (null: no config to read). */
  destroySupported: boolean | null;
  bindableBefore: boolean;
  bindableAfter: boolean;
  consequences: string[];
}

const ERRNO_TEXT: Record<number, string> = {
  1: "EPERM: destroying sockets needs CAP_NET_ADMIN (run as root)",
  95: "EOPNOTSUPP: this kernel was built without CONFIG_INET_DIAG_DESTROY, so sockets cannot be destroyed (ss -K cannot either)",
};

/** Running, as opposed to gone or a zombie (exited, its parent has not reaped it: its sockets are closed). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

export async function freeReport(o: FreeOptions, io: CliIO): Promise<FreeReport> {
  const host = o.host ?? "::";
  const bindableBefore = (await tryBind(o.port, o.host)).ok;
  const snapshot = await readTcpTableAsync({ localPort: o.port, source: tableSourceNamed(io.env.ADDRINUSE_TABLE) });
  const rows = snapshot.sockets.filter((r) => addressesOverlap(r.localAddress, host));
  const plan = freePlan(rows, process.pid);
  const consequences: string[] = [];
  const destroyOption = kernelConfigOption("CONFIG_INET_DIAG_DESTROY");
  if (plan.destroy.length && destroyOption === "n") {
    consequences.push(`This kernel was built without CONFIG_INET_DIAG_DESTROY: the ownerless sockets cannot be destroyed (nor by ss -K); they expire on their own.`);
  }
  if (plan.destroy.length) {
    consequences.push(
      `Destroying ${plan.destroy.length} ownerless socket${plan.destroy.length === 1 ? "" : "s"} (${[...new Set(plan.destroy.map((r) => r.state))].join(", ")}) makes the kernel forget ${plan.destroy.length === 1 ? "that connection" : "those connections"}: TIME_WAIT is what keeps a delayed segment of an old connection out of a new one on the same 4-tuple (RFC 9293 §3.6.1); the peers are not told (they have closed already).`,
    );
  }
  for (const s of plan.signal) {
    consequences.push(
      `pid ${s.pid} (${s.command}) gets SIGTERM, then SIGKILL after ${o.graceS} s` +
        (s.clients.length ? `; its ${s.clients.length} connection${s.clients.length === 1 ? "" : "s"} on the port go with it: ${s.clients.slice(0, 10).join(", ")}${s.clients.length > 10 ? ", ..." : ""}` : "") +
        ".",
    );
  }
  for (const r of plan.refused) consequences.push(`pid ${r.pid} is not signalled: ${r.reason}.`);
  if (plan.hidden) consequences.push(`${plan.hidden} socket${plan.hidden === 1 ? "" : "s"} on the port belong to processes this user cannot see (run as root).`);
  const report: FreeReport = {
    port: o.port,
    host,
    plan,
    dryRun: !o.yes,
    destroyed: { ok: 0, gone: 0, failed: 0, error: null },
    signalled: [],
    destroySupported: destroyOption === null ? null : destroyOption !== "n",
    bindableBefore,
    bindableAfter: bindableBefore,
    consequences,
  };
  if (!o.yes) return report;

  if (plan.destroy.length) {
    const endian = endianness();
    try {
      const errnos = await requestsWithAck(plan.destroy.map((r) => (seq: number) => encodeDestroyRequest(r, seq, endian)));
      for (const e of errnos) {
        if (e === 0) report.destroyed.ok++;
        else if (e === 2) report.destroyed.gone++; // ENOENT: expired meanwhile
        else {
          report.destroyed.failed++;
          report.destroyed.error ??= ERRNO_TEXT[e] ?? `errno ${e}`;
        }
      }
    } catch (e) {
      report.destroyed.failed = plan.destroy.length;
      report.destroyed.error = (e as Error).message;
    }
  }
  for (const s of plan.signal) {
    const entry = { pid: s.pid, term: false, killed: false, exited: false };
    report.signalled.push(entry);
    try {
      process.kill(s.pid, "SIGTERM");
      entry.term = true;
    } catch {
      entry.exited = !alive(s.pid);
    }
  }
  // Bounded: the grace, polled every 50 ms, then KILL and at most one more second.
  const deadline = Date.now() + o.graceS * 1000;
  while (report.signalled.some((s) => !s.exited) && Date.now() < deadline) {
    await sleep(50);
    for (const s of report.signalled) if (!s.exited && !alive(s.pid)) s.exited = true;
  }
  for (const s of report.signalled) {
    if (s.exited) continue;
    try {
      process.kill(s.pid, "SIGKILL");
      s.killed = true;
    } catch {
      // gone
    }
  }
  for (let i = 0; i < 20 && report.signalled.some((s) => !s.exited); i++) {
    await sleep(50);
    for (const s of report.signalled) if (!s.exited && !alive(s.pid)) s.exited = true;
  }
  report.bindableAfter = (await tryBind(o.port, o.host)).ok;
  return report;
}

export function formatFree(r: FreeReport): string {
  const where = r.host === "::" ? `port ${r.port}` : formatEndpoint(r.host, r.port);
  const lines: string[] = [];
  const nothing = r.plan.destroy.length === 0 && r.plan.signal.length === 0;
  if (r.dryRun) {
    lines.push(nothing ? `${where}: nothing to free${r.bindableBefore ? " (bindable)" : ""}` : `${where}: would free it as follows; nothing done (add --yes to do it)`);
  } else {
    lines.push(`${where}: ${r.bindableAfter ? "bindable now" : "still NOT bindable"}`);
    if (r.plan.destroy.length) {
      lines.push(`  destroyed ${r.destroyed.ok} of ${r.plan.destroy.length} ownerless sockets${r.destroyed.gone ? ` (${r.destroyed.gone} had expired)` : ""}${r.destroyed.error ? `; ${r.destroyed.failed} failed: ${r.destroyed.error}` : ""}`);
    }
    for (const s of r.signalled) lines.push(`  pid ${s.pid}: ${s.killed ? "SIGTERM, then SIGKILL" : s.term ? "SIGTERM" : "not signalled"}; ${s.exited ? "exited" : "STILL RUNNING"}`);
  }
  for (const c of r.consequences) lines.push(`  - ${c}`);
  return lines.join("\n") + "\n";
}

export async function runFree(o: FreeOptions, io: CliIO): Promise<number> {
  const r = await freeReport(o, io);
  io.stdout.write(o.json ? JSON.stringify(r) + "\n" : formatFree(r));
  return (o.yes ? r.bindableAfter : r.bindableBefore && r.plan.destroy.length === 0 && r.plan.signal.length === 0) ? 0 : 1;
}
