/**
 * The lifecycle every stage service shares: config → model (one engine) → service + metrics →
 * gRPC server → on SIGTERM/SIGINT drain (NOT_SERVING, finish in-flight calls) and close.
 */
import type { z } from "zod";
import { loadConfig } from "./config.ts";
import { EmuModel, type EngineName } from "./engine/emu-model.ts";
import { StageServer, type Handlers, type StageName } from "./grpc/grpc.adapter.ts";
import { createLogger, type Logger } from "./logger.ts";
import { maxMessageBytes, type stageEnv } from "./stage-config.ts";
import { StageMetrics } from "./stage-metrics.ts";

type StageEnv = { [K in keyof typeof stageEnv]: z.infer<(typeof stageEnv)[K]> } & { GRPC_PORT: number; METRICS_PORT: number };

export interface StageDefinition<C extends StageEnv> {
  name: "encoder" | "reasoner" | "decoder";
  stage: StageName;
  engine: EngineName;
  schema: z.ZodType<C>;
  /** Builds the service around the loaded model; returns its gRPC handlers and in-flight count. */
  build(model: EmuModel, cfg: C, metrics: StageMetrics, log: Logger): { handlers: Handlers; inFlight: () => number };
}

export function runStage<C extends StageEnv>(def: StageDefinition<C>): void {
  const start = async (): Promise<void> => {
    const cfg = loadConfig(def.schema);
    const log = createLogger(def.name);
    const model = await EmuModel.load(cfg.EMU_MODEL_DIR, {
      engines: [def.engine], providers: cfg.EXECUTION_PROVIDERS, verifyHashes: !cfg.SKIP_HASH_CHECK,
      onFallback: (reason) => log.warn("execution provider fallback", { reason }),
    });
    let inFlight = (): number => 0;
    const metrics = new StageMetrics(def.name, () => inFlight());
    const built = def.build(model, cfg, metrics, log);
    inFlight = built.inFlight;
    const server = new StageServer({
      stage: def.stage, address: `${cfg.GRPC_HOST}:${cfg.GRPC_PORT}`, maxMessageBytes: maxMessageBytes(model.manifest), handlers: built.handlers,
      maxConnectionAgeMs: cfg.GRPC_MAX_CONNECTION_AGE_MS, maxConnectionAgeGraceMs: cfg.GRPC_MAX_CONNECTION_AGE_GRACE_MS,
    });
    const port = await server.start();
    const metricsPort = await metrics.listen(cfg.METRICS_PORT);
    log.info("serving", { port, metrics_port: metricsPort, model: `${model.manifest.name}@${model.manifest.version}` });
    const stop = async (): Promise<void> => {
      log.info("draining");
      await server.stop(cfg.SHUTDOWN_GRACE_MS);
      metrics.close();
      await model.close();
      process.exit(0);
    };
    process.once("SIGTERM", () => void stop());
    process.once("SIGINT", () => void stop());
  };
  start().catch((err: unknown) => {
    process.stderr.write(`${def.name}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
