#!/usr/bin/env node
// `npx emu` entry: runs the TypeScript CLI through tsx (a runtime dependency), no build step.
import { register } from "tsx/esm/api";
import { pathToFileURL, fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

register();
const { run, UsageError, USAGE } = await import(pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), "emu.ts")).href);
const ac = new AbortController();
process.once("SIGINT", () => { process.stderr.write("\ncanceling…\n"); ac.abort(); });
try {
  await run(process.argv.slice(2), undefined, ac.signal);
} catch (err) {
  process.stderr.write(`emu: ${err instanceof Error ? err.message : String(err)}\n`);
  if (err instanceof UsageError) process.stderr.write(`${USAGE}\n`);
  process.exitCode = err instanceof UsageError ? 2 : 1;
}
