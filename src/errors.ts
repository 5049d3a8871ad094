/**
 * Every error this package raises on purpose is an AddrinuseError with a stable `code`, so that
 * callers branch on the code (or the subclass) and the CLI maps each one to a one-line message and an
 * exit code in a single place (src/cli/exit.ts). Anything else that escapes is a bug.
 *
 * The codes have a namespace of their own, `AIU_` (addrinuse), so that they are never taken for
 * Node's (`ERR_*`) or the system's (`E*` errno names) when a caller branches on `err.code`. A host's
 * failure inside a multi-rsh run is not one of these: it is a result, with a `HOST_*` code of its own
 * (remote/transport.ts `HostErrorCode`).
 */

export type ErrorCode =
  // The caller's input (CLI exit 2).
  | "AIU_USAGE"
  | "AIU_BAD_PORT"
  | "AIU_BAD_ADDRESS"
  | "AIU_BAD_ARGUMENT"
  | "AIU_HOSTLIST_SYNTAX"
  | "AIU_HOSTFILE"
  | "AIU_GROUP"
  | "AIU_COPY"
  | "AIU_STDIN"
  // This machine.
  | "AIU_NOT_LINUX"
  | "AIU_NOT_ROOT"
  | "AIU_LAB"
  // The library's sockets.
  | "AIU_PORT_IN_USE"
  | "AIU_PORTS_EXHAUSTED"
  | "AIU_CONNECT_TIMEOUT"
  | "AIU_CONNECT_REFUSED"
  | "AIU_CONNECT_FAILED";

export class AddrinuseError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AddrinuseError";
    this.code = code;
  }
}

/** The user typed something we cannot use (CLI exit 2). */
export class UsageError extends AddrinuseError {
  constructor(message: string, code: ErrorCode = "AIU_USAGE") {
    super(code, message);
    this.name = "UsageError";
  }
}

/** A bad argument to a library call: thrown at the call, before any I/O. */
export class ArgumentError extends AddrinuseError {
  constructor(message: string) {
    super("AIU_BAD_ARGUMENT", message);
    this.name = "ArgumentError";
  }
}

export class NotLinuxError extends AddrinuseError {
  constructor(what: string) {
    super(
      "AIU_NOT_LINUX",
      `${what} reads the Linux kernel's socket table (/proc/net/tcp); this is ${process.platform}, where it does not work`,
    );
    this.name = "NotLinuxError";
  }
}

export class HostListError extends AddrinuseError {
  constructor(message: string) {
    super("AIU_HOSTLIST_SYNTAX", message);
    this.name = "HostListError";
  }
}

/** One socket holding a port, as named by the kernel table; carried by PortInUseError. */
export interface PortHolder {
  state: string;
  local: string;
  remote: string;
  pid: number | null;
  command: string | null;
  user: string | null;
}

export class PortInUseError extends AddrinuseError {
  readonly port: number;
  readonly host: string;
  readonly holders: PortHolder[];
  constructor(message: string, port: number, host: string, holders: PortHolder[], cause?: unknown) {
    super("AIU_PORT_IN_USE", message, { cause });
    this.name = "PortInUseError";
    this.port = port;
    this.host = host;
    this.holders = holders;
  }
}

export class PortsExhaustedError extends AddrinuseError {
  /** How many candidate ports were found in each state (e.g. { TIME_WAIT: 480, ESTABLISHED: 20 }). */
  readonly byState: Record<string, number>;
  constructor(message: string, byState: Record<string, number>) {
    super("AIU_PORTS_EXHAUSTED", message);
    this.name = "PortsExhaustedError";
    this.byState = byState;
  }
}

export function isAddrinuseError(e: unknown): e is AddrinuseError {
  return e instanceof AddrinuseError;
}
