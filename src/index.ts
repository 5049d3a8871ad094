/** The public library entry. */
export * from "./errors.js";
export { readTcpTable, readTcpTableAsync, readTcpSockets, readTcpSocketsAsync, findSocketOwners } from "./kernel/read.js";
export type { OwnedSocket, SocketOwner, SocketReadOptions, TableReadOptions, TableSnapshot, TableSource } from "./kernel/read.js";
export { netlinkAvailable, netlinkUnavailableReason } from "./kernel/netlink.js";
export { parseTcpTable, parseTcpLine } from "./kernel/parse.js";
export type { PortFilter, TcpSocket, TcpState } from "./kernel/parse.js";
export { tryBind } from "./net/probe.js";
export { connectFrom, pickLocalPorts, RESERVED_PORTS } from "./net/connect-from.js";
export type { ConnectFromOptions, ConnectFromResult, PickInput, PickResult } from "./net/connect-from.js";
export { listen, portInUseError } from "./net/listen.js";
export type { ListenOptions } from "./net/listen.js";
export { shutdown, trackConnections } from "./net/shutdown.js";
export type { ShutdownOptions, ShutdownReport } from "./net/shutdown.js";
export { closeAfterPeer, endAfterPeer, abort, type ClosedBy } from "./net/close.js";
export type { CloseAfterPeerOptions, CloseResult } from "./net/close.js";
