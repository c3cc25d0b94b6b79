/** Encoder stage service: batches images of concurrent calls into one engine run. */
import { encoderConfigSchema } from "../../shared/stage-config.ts";
import { runStage } from "../../shared/stage-main.ts";
import { encoderHandlers } from "./encoder.grpc.ts";
import { EncoderService } from "./encoder.service.ts";

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
