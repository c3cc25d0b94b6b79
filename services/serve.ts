/**
 * The container image's one entry: `serve.ts` runs the service EMU_SERVICE names; `serve.ts
 * healthcheck` asks that service whether it is ready (Docker HEALTHCHECK; Kubernetes probes call the
 * services directly). Exit 0 = healthy.
 */
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { loadConfig } from "../shared/config.ts";
import { stageServiceName } from "../shared/grpc/grpc.adapter.ts";
import { checkHealth } from "../shared/grpc/health-client.ts";
import { platformConfigSchema } from "../shared/platform-config.ts";
import { decoderConfigSchema, encoderConfigSchema, reasonerConfigSchema } from "../shared/stage-config.ts";

export const SERVICES = ["gateway", "orchestrator", "encoder", "reasoner", "decoder", "all-in-one"] as const;
export type ServiceName = (typeof SERVICES)[number];

export const serveEnv = {
  /** Which service this container runs. Default all-in-one. */
  EMU_SERVICE: z.enum(SERVICES).default("all-in-one"),
};

/** Each service's whole environment schema (what deploy/ may set for it). */
export const SERVICE_SCHEMAS = {
  gateway: platformConfigSchema, orchestrator: platformConfigSchema, "all-in-one": platformConfigSchema,
  encoder: encoderConfigSchema, reasoner: reasonerConfigSchema, decoder: decoderConfigSchema,
} as const;

const STAGE_NAMES = { encoder: "Encoder", reasoner: "Reasoner", decoder: "Decoder" } as const;

async function httpOk(url: string): Promise<void> {
  const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
}

export async function healthcheck(service: ServiceName, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  switch (service) {
    case "gateway":
    case "all-in-one":
      return httpOk(`http://127.0.0.1:${loadConfig(platformConfigSchema, env).PORT}/readyz`);
    case "orchestrator":
      return httpOk(`http://127.0.0.1:${loadConfig(platformConfigSchema, env).METRICS_PORT}/healthz`);
    default: {
      const cfg = loadConfig(SERVICE_SCHEMAS[service], env);
      const status = await checkHealth(`127.0.0.1:${cfg.GRPC_PORT}`, stageServiceName(STAGE_NAMES[service]), 4000);
      if (status !== "SERVING") throw new Error(`${service}: ${status}`);
    }
  }
}

async function main(): Promise<void> {
  const { EMU_SERVICE } = loadConfig(z.object(serveEnv));
  if (process.argv[2] === "healthcheck") {
    await healthcheck(EMU_SERVICE);
    return;
  }
  await import(`./${EMU_SERVICE}/main.ts`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`serve: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
