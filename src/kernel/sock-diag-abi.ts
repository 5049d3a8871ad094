/**
 * The numbers of the kernel's netlink sock_diag ABI (linux/netlink.h, linux/sock_diag.h,
 * linux/inet_diag.h) that both the table dump (inet-diag.ts) and SOCK_DESTROY (sock-destroy.ts) send.
 */
export const SOCK_DIAG_BY_FAMILY = 20;
export const SOCK_DESTROY = 21;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
/** NLM_F_ROOT | NLM_F_MATCH */
export const NLM_F_DUMP = 0x300;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const IPPROTO_TCP = 6;
