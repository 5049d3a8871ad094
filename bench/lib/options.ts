/**
 * Command-line options of the bench scripts: `--name value`, nothing more (a bench is run by hand
 * or by CI with a few flags; a parser library would be a dependency for four lines).
 */

/** The value after `--name` (or after `name` when it is given with its dashes), or `fallback`. */
export function arg(name: string, fallback: string): string {
  const flag = name.startsWith("-") ? name : `--${name}`;
  const i = process.argv.indexOf(flag);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/** A positive integer option; a bad value ends the bench with a one-line error (exit 2). */
export function countArg(name: string, fallback: number): number {
  const raw = arg(name, String(fallback));
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`${name.startsWith("-") ? name : `--${name}`} must be a positive integer, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return v;
}

/** Present or not: `--name`. */
export function flag(name: string): boolean {
  return process.argv.includes(name.startsWith("-") ? name : `--${name}`);
}
