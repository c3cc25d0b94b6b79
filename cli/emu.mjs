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
  // Bad input (usage, prompt, image, decoder name) exits 2 with one line; anything else exits 1.
  const badInput = err instanceof UsageError || ["invalid_prompt", "image_unreadable", "image_too_large", "prompt_too_long", "invalid_decoder", "model_package_invalid"].includes(err?.code);
  process.stderr.write(`emu: ${err instanceof Error ? err.message : String(err)}\n`);
  if (err instanceof UsageError && process.argv.length <= 2) process.stderr.write(`${USAGE}\n`);
  process.exitCode = badInput ? 2 : 1;
}
