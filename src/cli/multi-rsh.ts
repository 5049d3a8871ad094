export async function main(): Promise<number> {
  return 2;
}
export function run(): void {
  process.stderr.write("multi-rsh: not built yet\n");
  process.exitCode = 2;
}
