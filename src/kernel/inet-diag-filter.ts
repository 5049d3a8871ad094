/**
 * The port filter of an inet_diag dump request, as the bytecode the kernel runs over each socket
 * (INET_DIAG_REQ_BYTECODE, net/ipv4/inet_diag.c inet_diag_bc_run): how the kernel is told to leave
 * the sockets on other ports where they are. Pure. Apart from inet-diag.ts because it is a small
 * language of its own with its own rules (the kernel's audit of jumps); the request and the records
 * around it are there.
 */
import type { PortFilter } from "./parse.js";

const INET_DIAG_BC_S_GE = 2;
const INET_DIAG_BC_S_LE = 3;
const INET_DIAG_BC_D_GE = 4;
const INET_DIAG_BC_D_LE = 5;
const INET_DIAG_BC_JMP = 1;

/**
 * A port filter as inet_diag bytecode: an OR of ranges, each `port >= FROM && port <= TO` on the
 * local (S_*) or remote (D_*) port. Each comparison is an op {code, yes, no} followed by an op whose
 * `no` holds the port; `yes` steps to the next op and `no` jumps to the next range (or past the end,
 * len + 4, which is the kernel's "reject"). Between ranges a JMP (which always takes `no`) lands
 * exactly on the end, the kernel's "accept"; the kernel's audit wants every `yes` to step to the
 * next op, which is why an OR is built from jumps on failure (iproute2's ss does the same).
 * S_GE/S_LE rather than S_EQ: they go back to the first inet_diag kernels, S_EQ only to 4.16.
 */
function portBytecode(ranges: readonly { local: boolean; from: number; to: number }[], le: boolean): Buffer {
  const total = ranges.length * 16 + (ranges.length - 1) * 4;
  const b = Buffer.alloc(total);
  const u16 = (v: number, at: number) => (le ? b.writeUInt16LE(v, at) : b.writeUInt16BE(v, at));
  let at = 0;
  ranges.forEach((r, k) => {
    const last = k === ranges.length - 1;
    const fail = last ? total + 4 : at + 20;
    b[at] = r.local ? INET_DIAG_BC_S_GE : INET_DIAG_BC_D_GE;
    b[at + 1] = 8;
    u16(fail - at, at + 2);
    u16(r.from, at + 6);
    b[at + 8] = r.local ? INET_DIAG_BC_S_LE : INET_DIAG_BC_D_LE;
    b[at + 9] = 8;
    u16(fail - at - 8, at + 10);
    u16(r.to, at + 14);
    at += 16;
    if (!last) {
      b[at] = INET_DIAG_BC_JMP;
      b[at + 1] = 4;
      u16(total - at, at + 2);
      at += 4;
    }
  });
  return b;
}

/** The bytecode for a request's ports, or null when it asks for no port filter. */
export function filterBytecode(req: { localPort?: number; ports?: PortFilter }, le: boolean): Buffer | null {
  if (req.localPort !== undefined) return portBytecode([{ local: true, from: req.localPort, to: req.localPort }], le);
  const ranges: { local: boolean; from: number; to: number }[] = [];
  if (req.ports?.local) ranges.push({ local: true, from: req.ports.local[0], to: req.ports.local[1] });
  if (req.ports?.remote) ranges.push({ local: false, from: req.ports.remote[0], to: req.ports.remote[1] });
  // A filter with neither side matches nothing; the reader does not ask the kernel then.
  return ranges.length === 0 ? null : portBytecode(ranges, le);
}
