/**
 * multi-rsh's exit status, in one place. 0: every host ran its command and it exited 0. 1: any host
 * failed, timed out, or exited non-zero. With -S (pdsh): the largest remote exit code, or 1 if a host
 * failed without one. 130: the run was interrupted (Ctrl-C twice / Ctrl-\). Usage errors (2) never
 * get this far.
 */
export interface PolicyInput {
  state: string;
  exitCode: number | null;
}

export function runExitCode(results: readonly PolicyInput[], opts: { largestRemote: boolean; interrupted: boolean }): number {
  if (opts.interrupted) return 130;
  const failed = results.some((r) => r.state !== "done");
  if (opts.largestRemote) {
    const max = Math.max(0, ...results.map((r) => r.exitCode ?? 0));
    if (max > 0) return Math.min(max, 255);
    return failed ? 1 : 0;
  }
  return failed || results.some((r) => (r.exitCode ?? 0) !== 0) ? 1 : 0;
}
