/**
 * The testbed's sockets as the benches count them: TIME_WAIT on this machine towards the testbed and
 * in each host, reserved ports busy elsewhere, and the clean slate (`ss -K`) before each run so no
 * run inherits another's.
 */
import { readTcpSockets } from "../../src/kernel/read.js";
import { hostSockets, run, type Testbed } from "../../testbed/testbed.js";

/** This machine's TIME_WAIT sockets towards the testbed network (`net` = "10.233"). */
export function timeWaitTowards(net: string): number {
  return readTcpSockets().filter((s) => s.state === "TIME_WAIT" && s.remoteAddress.startsWith(`${net}.`)).length;
}

/** Reserved local ports (512-1023) busy with anything but the testbed: what the tools compete for. */
export function reservedBusy(net: string): number {
  return new Set(readTcpSockets().filter((s) => s.localPort >= 512 && s.localPort < 1024 && s.state !== "LISTEN" && !s.remoteAddress.startsWith(`${net}.`)).map((s) => s.localPort)).size;
}

/** TIME_WAIT sockets in each host's own table. */
export function hostTimeWaits(tb: Testbed, hosts: Testbed["hosts"] = tb.hosts): Map<string, number> {
  const out = new Map<string, number>();
  for (const h of hosts) out.set(h.name, hostSockets(tb, h).filter((s) => s.state === "TIME_WAIT").length);
  return out;
}

/** ss -K: this machine's sockets towards the testbed, and the TIME_WAITs in every host that has any. */
export async function cleanSockets(tb: Testbed, hosts: Testbed["hosts"] = tb.hosts): Promise<void> {
  await run("ss", ["-t", "-K", "state", "all", "dst", `${tb.net}.0.0/16`], { timeoutMs: 30_000 });
  const dirty = [...hostTimeWaits(tb, hosts)].filter(([, n]) => n > 0).map(([name]) => name);
  for (let i = 0; i < dirty.length; i += 16) {
    await Promise.all(dirty.slice(i, i + 16).map((name) => run("nsenter", [`--net=/run/netns/${name}`, "ss", "-K", "state", "time-wait"], { timeoutMs: 30_000 })));
  }
}
