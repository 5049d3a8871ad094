/** The public library entry. */
export * from "./errors.js";
export { readTcpTable, readTcpSockets, findSocketOwners } from "./kernel/read.js";
export type { OwnedSocket, SocketOwner, TableSnapshot } from "./kernel/read.js";
export { parseTcpTable, parseTcpLine } from "./kernel/parse.js";
export type { TcpSocket, TcpState } from "./kernel/parse.js";
export { tryBind } from "./net/probe.js";
