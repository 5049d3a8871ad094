/** Reads the kernel settings that govern TIME_WAIT and port use, and the socket summary. Read-only. */
import { readFileSync } from "node:fs";
import { release } from "node:os";
import { gunzipSync } from "node:zlib";

export function readSysctl(name: string, procRoot = "/proc"): string | null {
  try {
    return readFileSync(`${procRoot}/sys/${name.replace(/\./g, "/")}`, "utf8").trim().replace(/\s+/g, " ");
  } catch {
    return null;
  }
}

/** /proc/net/sockstat(6): the kernel's own counts, cheap to read at any table size. */
export function readSockstat(procRoot = "/proc"): { inuse: number; orphan: number; timeWait: number; inuse6: number } {
  const pick = (text: string, key: string) => {
    const m = new RegExp(`\\b${key} (\\d+)`).exec(text);
    return m ? Number(m[1]) : 0;
  };
  let v4 = "";
  let v6 = "";
  try {
    v4 = (/^TCP: .*$/m.exec(readFileSync(`${procRoot}/net/sockstat`, "utf8")) ?? [""])[0];
  } catch {
    // Not Linux, or procfs hidden: zeros.
  }
  try {
    v6 = (/^TCP6: .*$/m.exec(readFileSync(`${procRoot}/net/sockstat6`, "utf8")) ?? [""])[0];
  } catch {
    // No IPv6.
  }
  // "tw" in sockstat counts TIME_WAIT for both families (one tw hashinfo).
  return { inuse: pick(v4, "inuse"), orphan: pick(v4, "orphan"), timeWait: pick(v4, "tw"), inuse6: pick(v6, "inuse") };
}

/** The kernel settings `why` reads to explain a port: the ephemeral range and the reserved ports. */
export interface PortSettings {
  /** net.ipv4.ip_local_port_range (this network namespace's). */
  ephemeralRange: [number, number] | undefined;
  /** net.ipv4.ip_local_reserved_ports as the kernel prints it ("8080,9000-9010"), or "". */
  reservedPorts: string;
}

export function readPortSettings(procRoot = "/proc"): PortSettings {
  const r = /^(\d+) (\d+)$/.exec(readSysctl("net.ipv4.ip_local_port_range", procRoot) ?? "");
  return {
    ephemeralRange: r ? [Number(r[1]), Number(r[2])] : undefined,
    reservedPorts: readSysctl("net.ipv4.ip_local_reserved_ports", procRoot) ?? "",
  };
}

/**
 * One option of the running kernel's build configuration (/proc/config.gz, else
 * /boot/config-RELEASE): "y", "m", "n" (unset), or null when neither file is there to tell.
 */
export function kernelConfigOption(name: string, procRoot = "/proc"): "y" | "m" | "n" | null {
  let text: string | null = null;
  try {
    text = gunzipSync(readFileSync(`${procRoot}/config.gz`)).toString("latin1");
  } catch {
    try {
      text = readFileSync(`/boot/config-${release()}`, "latin1");
    } catch {
      return null;
    }
  }
  const m = new RegExp(`^${name}=([ym])$`, "m").exec(text);
  return m ? (m[1] as "y" | "m") : "n";
}
