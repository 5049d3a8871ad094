/**
 * Addresses as the kernel compares them for bind conflicts. Pure.
 *
 * Linux refuses a bind when an existing socket on the same port has an overlapping local address:
 * equal, or either one a wildcard. An IPv6 wildcard (::) socket that is not IPV6_V6ONLY (Node's
 * default) also covers every IPv4 address, and v4-mapped ::ffff:a.b.c.d is the IPv4 address itself.
 */
import { isIP } from "node:net";

export function isWildcard(addr: string): boolean {
  return addr === "0.0.0.0" || addr === "::";
}

/** ::ffff:1.2.3.4 -> 1.2.3.4; anything else unchanged. */
export function unmapV4(addr: string): string {
  return addr.startsWith("::ffff:") && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
}

export function addressFamily(addr: string): 4 | 6 {
  return isIP(unmapV4(addr)) === 4 ? 4 : 6;
}

/** Whether a socket bound to `held` conflicts with a bind to `wanted` on the same port. */
export function addressesOverlap(held: string, wanted: string): boolean {
  const a = unmapV4(held);
  const b = unmapV4(wanted);
  if (a === b) return true;
  if (a === "::" || b === "::") return true; // dual-stack wildcard covers both families
  if (a === "0.0.0.0") return addressFamily(b) === 4;
  if (b === "0.0.0.0") return addressFamily(a) === 4;
  return false;
}

export function formatEndpoint(addr: string, port: number): string {
  const a = unmapV4(addr);
  return isIP(a) === 6 ? `[${a}]:${port}` : `${a}:${port}`;
}

/** Parses a port typed by a user: an integer 1..65535, nothing else. */
export function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : undefined;
}
