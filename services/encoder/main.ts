/** Encoder stage service: config → model → batching service → gRPC server; SIGTERM drains. */
import { z } from "zod";
import { loadConfig } from "../../shared/config.ts";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { StageServer } from "../../shared/grpc/grpc.adapter.ts";
import { createLogger } from "../../shared/logger.ts";
import { maxMessageBytes, stageEnv } from "../../shared/stage-config.ts";
import { StageMetrics } from "../../shared/stage-metrics.ts";
import { encoderHandlers } from "./encoder.grpc.ts";
import { EncoderService } from "./encoder.service.ts";

export const encoderConfigSchema = z.object({
  ...stageEnv,
  /** Default 50051. */
  /** Prometheus /metrics port. Default 9465. */
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9465),
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50051),
  /** Images per engine call. Default 32. */
  ENCODER_MAX_BATCH_SIZE: z.coerce.number().int().positive().default(32),
  /** Wait for more images after the first. Default 5. */
  ENCODER_MAX_BATCH_DELAY_MS: z.coerce.number().nonnegative().default(5),
});

async function main(): Promise<void> {
  const cfg = loadConfig(encoderConfigSchema);
  const log = createLogger("encoder");
  const model = await EmuModel.load(cfg.EMU_MODEL_DIR, {
    engines: ["encoder"], providers: cfg.EXECUTION_PROVIDERS, verifyHashes: !cfg.SKIP_HASH_CHECK,
    onFallback: (reason) => log.warn("execution provider fallback", { reason }),
  });
  let service: EncoderService | null = null;
  const metrics = new StageMetrics("encoder", () => service?.queued ?? 0);
  service = new EncoderService({ engine: model.encoder!, maxBatchSize: cfg.ENCODER_MAX_BATCH_SIZE, maxBatchDelayMs: cfg.ENCODER_MAX_BATCH_DELAY_MS, onBatch: (b) => { metrics.batchSize.observe(b.size); metrics.queueDelay.observe(b.queueDelayMs / 1000); metrics.latency.observe(b.runMs / 1000); } });
  const server = new StageServer({
    stage: "Encoder", address: `${cfg.GRPC_HOST}:${cfg.GRPC_PORT}`, maxMessageBytes: maxMessageBytes(model.manifest),
    handlers: encoderHandlers(service, (msg, err) => log.error(msg, { err })),
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
  process.stderr.write(`encoder: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
