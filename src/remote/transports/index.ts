/** Transport registry: -R NAME picks one. Each transport file exports a factory; add new ones here. */
import { UsageError } from "../../errors.js";
import type { Transport, TransportName, TransportOptions } from "../transport.js";

type Factory = (options: TransportOptions) => Transport;
const factories = new Map<TransportName, () => Promise<Factory>>();

export function registerTransport(name: TransportName, load: () => Promise<Factory>): void {
  factories.set(name, load);
}

export async function createTransport(name: string, options: TransportOptions): Promise<Transport> {
  const load = factories.get(name as TransportName);
  if (!load) {
    throw new UsageError(`unknown transport '${name}': expected one of ${[...factories.keys()].join(", ") || "(none built)"}`);
  }
  return (await load())(options);
}

export function transportNames(): TransportName[] {
  return [...factories.keys()];
}

// Loaded lazily so that `-R rsh` never pays for ssh2's start-up.
registerTransport("rsh", async () => (await import("./rsh.js")).createRshTransport);
registerTransport("ssh", async () => (await import("./ssh.js")).createSshTransport);
registerTransport("exec", async () => (await import("./exec.js")).createExecTransport);
registerTransport("openssh", async () => (await import("./openssh.js")).createOpenSshTransport);
