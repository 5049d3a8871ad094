/**
 * SOCK_DESTROY over NETLINK_SOCK_DIAG, as `ss -K` does it: the kernel finds one socket by its exact
 * 4-tuple and aborts it (tcp_abort: a live connection gets a RST; a TIME_WAIT entry is simply
 * dropped). Needs CAP_NET_ADMIN and a kernel built with CONFIG_INET_DIAG_DESTROY; without it the
 * answer is EOPNOTSUPP. No I/O here: bytes out, the errno of the kernel's ack in.
 *
 * The request is an inet_diag_req_v2 (include/uapi/linux/inet_diag.h) with the socket's state bit,
 * addresses in network order and INET_DIAG_NOCOOKIE; an IPv4 socket is asked for as AF_INET with its
 * plain address, a v4-mapped IPv6 one as AF_INET6 (it lives in the IPv6 table).
 */
import { isIP } from "node:net";
import { TCP_STATES, type Endianness, type SocketEnds } from "./parse.js";
import { AF_INET, AF_INET6, IPPROTO_TCP, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST, SOCK_DESTROY } from "./sock-diag-abi.js";


/** The socket to destroy, as the table named it. */
export type DestroyTarget = SocketEnds;

function addressBytes(addr: string, family: 4 | 6): number[] {
  if (family === 4) return addr.split(".").map(Number);
  // IPv6, possibly ::ffff:a.b.c.d: expand "::" and any dotted tail into 16 bytes.
  let a = addr;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  let tail: number[] = [];
  if (dotted) {
    tail = dotted[1]!.split(".").map(Number);
    a = a.slice(0, -dotted[1]!.length) + "0:0";
  }
  const [head, rest] = a.includes("::") ? a.split("::") : [a, undefined];
  const h = head ? head.split(":") : [];
  const r = rest !== undefined && rest !== "" ? rest.split(":") : [];
  const groups = rest === undefined ? h : [...h, ...Array(8 - h.length - r.length).fill("0"), ...r];
  const out: number[] = [];
  for (const g of groups) {
    const v = parseInt(g || "0", 16);
    out.push(v >> 8, v & 0xff);
  }
  if (tail.length) out.splice(12, 4, ...tail);
  return out;
}

export function encodeDestroyRequest(t: DestroyTarget, seq: number, endian: Endianness = "LE"): Buffer {
  const le = endian === "LE";
  const b = Buffer.alloc(16 + 56);
  const u16 = (v: number, at: number) => (le ? b.writeUInt16LE(v, at) : b.writeUInt16BE(v, at));
  const u32 = (v: number, at: number) => (le ? b.writeUInt32LE(v >>> 0, at) : b.writeUInt32BE(v >>> 0, at));
  const stateNumber = TCP_STATES.indexOf(t.state as (typeof TCP_STATES)[number]);
  if (stateNumber < 1) throw new Error(`no such TCP state: ${t.state}`);
  if (isIP(t.localAddress) === 0 || isIP(t.remoteAddress) === 0) throw new Error("SOCK_DESTROY needs IP addresses");
  u32(b.length, 0);
  u16(SOCK_DESTROY, 4);
  u16(NLM_F_REQUEST | NLM_F_ACK, 6);
  u32(seq, 8);
  const body = 16;
  b[body] = t.family === 6 ? AF_INET6 : AF_INET;
  b[body + 1] = IPPROTO_TCP;
  u32(1 << stateNumber, body + 4);
  const id = body + 8;
  b.writeUInt16BE(t.localPort, id);
  b.writeUInt16BE(t.remotePort, id + 2);
  Buffer.from(addressBytes(t.localAddress, t.family)).copy(b, id + 4);
  Buffer.from(addressBytes(t.remoteAddress, t.family)).copy(b, id + 20);
  u32(0xffffffff, id + 40); // INET_DIAG_NOCOOKIE
  u32(0xffffffff, id + 44);
  return b;
}

/** The errno in the kernel's ack (NLMSG_ERROR; 0 = done), or null if the bytes are no ack. */
export function decodeAck(msg: Uint8Array, endian: Endianness = "LE"): number | null {
  if (msg.byteLength < 20) return null;
  const v = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength);
  const type = endian === "LE" ? v.readUInt16LE(4) : v.readUInt16BE(4);
  if (type !== NLMSG_ERROR) return null;
  return -(endian === "LE" ? v.readInt32LE(16) : v.readInt32BE(16));
}
