/** Encoder stage service: batches images of concurrent calls into one engine run. */
import { z } from "zod";
import { stageEnv } from "../../shared/stage-config.ts";
import { runStage } from "../../shared/stage-main.ts";
import { encoderHandlers } from "./encoder.grpc.ts";
import { EncoderService } from "./encoder.service.ts";

export const encoderConfigSchema = z.object({
  ...stageEnv,
  /** Default 50051. */
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50051),
  /** Prometheus /metrics port. Default 9465. */
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9465),
  /** Images per engine call. Default 32. */
  ENCODER_MAX_BATCH_SIZE: z.coerce.number().int().positive().default(32),
  /** Wait for more images after the first. Default 5. */
  ENCODER_MAX_BATCH_DELAY_MS: z.coerce.number().nonnegative().default(5),
});

runStage({
  name: "encoder", stage: "Encoder", engine: "encoder", schema: encoderConfigSchema,
  build: (model, cfg, metrics, log) => {
    const service = new EncoderService({
      engine: model.encoder!, maxBatchSize: cfg.ENCODER_MAX_BATCH_SIZE, maxBatchDelayMs: cfg.ENCODER_MAX_BATCH_DELAY_MS,
      onBatch: (b) => { metrics.batchSize.observe(b.size); metrics.queueDelay.observe(b.queueDelayMs / 1000); metrics.latency.observe(b.runMs / 1000); },
    });
    return { handlers: encoderHandlers(service, (msg, err) => log.error(msg, { err })), inFlight: () => service.queued };
  },
});
