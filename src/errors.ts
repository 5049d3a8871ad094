/**
 * Every error this package raises on purpose is an AddrinuseError with a stable `code`, so that
 * callers branch on the code (or the subclass) and the CLI maps each one to a one-line message and an
 * exit code in a single place (src/cli/exit.ts). Anything else that escapes is a bug.
 */

export type ErrorCode =
  | "ERR_USAGE"
  | "ERR_BAD_PORT"
  | "ERR_BAD_ADDRESS"
  | "ERR_BAD_ARGUMENT"
  | "ERR_NOT_LINUX"
  | "ERR_NOT_ROOT"
  | "ERR_PORT_IN_USE"
  | "ERR_PORTS_EXHAUSTED"
  | "ERR_HOSTLIST_SYNTAX"
  | "ERR_HOSTFILE"
  | "ERR_CONNECT_TIMEOUT"
  | "ERR_COMMAND_TIMEOUT"
  | "ERR_IDLE_TIMEOUT"
  | "ERR_DROPPED_BY_SERVER"
  | "ERR_CONNECT_REFUSED"
  | "ERR_CONNECT"
  | "ERR_REMOTE_REFUSED"
  | "ERR_PROTOCOL"
  | "ERR_CONNECTION_LOST"
  | "ERR_AUTH"
  | "ERR_HOST_KEY"
  | "ERR_CANCELLED"
  | "ERR_TRANSPORT"
  | "ERR_LAB"
  | "ERR_COPY"
  | "ERR_STDIN"
  | "ERR_GROUP";

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
  constructor(message: string, code: ErrorCode = "ERR_USAGE") {
    super(code, message);
    this.name = "UsageError";
  }
}

/** A bad argument to a library call: thrown at the call, before any I/O. */
export class ArgumentError extends AddrinuseError {
  constructor(message: string) {
    super("ERR_BAD_ARGUMENT", message);
    this.name = "ArgumentError";
  }
}

export class NotLinuxError extends AddrinuseError {
  constructor(what: string) {
    super(
      "ERR_NOT_LINUX",
      `${what} reads the Linux kernel's socket table (/proc/net/tcp); this is ${process.platform}, where it does not work`,
    );
    this.name = "NotLinuxError";
  }
}

export class HostListError extends AddrinuseError {
  constructor(message: string) {
    super("ERR_HOSTLIST_SYNTAX", message);
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
    super("ERR_PORT_IN_USE", message, { cause });
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
    super("ERR_PORTS_EXHAUSTED", message);
    this.name = "PortsExhaustedError";
    this.byState = byState;
  }
}

export function isAddrinuseError(e: unknown): e is AddrinuseError {
  return e instanceof AddrinuseError;
}
