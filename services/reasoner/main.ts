/** Reasoner stage service: config → model → continuous-batching service → gRPC server; SIGTERM drains. */
import { z } from "zod";
import { loadConfig } from "../../shared/config.ts";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { StageServer } from "../../shared/grpc/grpc.adapter.ts";
import { createLogger } from "../../shared/logger.ts";
import { maxMessageBytes, stageEnv } from "../../shared/stage-config.ts";
import { StageMetrics } from "../../shared/stage-metrics.ts";
import { reasonerHandlers } from "./reasoner.grpc.ts";
import { ReasonerService } from "./reasoner.service.ts";

export const reasonerConfigSchema = z.object({
  ...stageEnv,
  /** Default 50052. */
  /** Prometheus /metrics port. Default 9466. */
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9466),
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50052),
});

async function main(): Promise<void> {
  const cfg = loadConfig(reasonerConfigSchema);
  const log = createLogger("reasoner");
  const model = await EmuModel.load(cfg.EMU_MODEL_DIR, {
    engines: ["reasoner"], providers: cfg.EXECUTION_PROVIDERS, verifyHashes: !cfg.SKIP_HASH_CHECK,
    onFallback: (reason) => log.warn("execution provider fallback", { reason }),
  });
  let service: ReasonerService | null = null;
  const metrics = new StageMetrics("reasoner", () => service?.inFlight ?? 0);
  service = new ReasonerService({ engine: model.reasoner!, onStep: (s) => { metrics.batchSize.observe(s.size); metrics.latency.observe(s.stepMs / 1000); } });
  const dims = { tokens: model.manifest.encoder.tokens_per_image, dim: model.manifest.encoder.dim };
  const server = new StageServer({
    stage: "Reasoner", address: `${cfg.GRPC_HOST}:${cfg.GRPC_PORT}`, maxMessageBytes: maxMessageBytes(model.manifest),
    handlers: reasonerHandlers(service, dims, (msg, err) => log.error(msg, { err })),
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
}

main().catch((err: unknown) => {
  process.stderr.write(`reasoner: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
