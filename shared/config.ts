/**
 * Typed configuration from the environment: each deployable declares a zod schema of its variables
 * and calls `loadConfig` once in main.ts. A bad environment fails with every bad variable listed.
 */
import type { z } from "zod";

export class ConfigError extends Error {
  readonly code = "config_invalid";
}

export function loadConfig<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv = process.env): z.infer<S> {
  const parsed = schema.safeParse(env);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((i) => `  ${i.path.join(".") || "(environment)"}: ${i.message}`);
  throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
}

/** "a,b , c" → ["a","b","c"] */
export function commaList(v: string | undefined): string[] {
  return (v ?? "").split(",").map((s) => s.trim()).filter(Boolean);
}
