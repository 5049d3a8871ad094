/** `addrinuse lab`: placeholder registration; the scenarios land with issue #8. */
import type { Command } from "commander";
import type { CliIO } from "./io.js";

export function registerLab(_program: Command, _io: CliIO, _done: (code: number) => void): void {
  // Registered by the lab work (src/lab); nothing to add yet.
}
