/** Decoder stage service: diffusion steps of concurrent calls share UNet runs. */
import { z } from "zod";
import { stageEnv } from "../../shared/stage-config.ts";
import { runStage } from "../../shared/stage-main.ts";
import { decoderHandlers } from "./decoder.grpc.ts";
import { DecoderService } from "./decoder.service.ts";

export const decoderConfigSchema = z.object({
  ...stageEnv,
  /** Default 50053. */
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50053),
  /** Prometheus /metrics port. Default 9467. */
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9467),
  /** UNet rows per call (a guided image takes 2). Default 64. */
  DECODER_MAX_BATCH_ROWS: z.coerce.number().int().positive().default(64),
});

runStage({
  name: "decoder", stage: "Decoder", engine: "decoder", schema: decoderConfigSchema,
  build: (model, cfg, metrics, log) => {
    const service = new DecoderService({ engine: model.decoder!, maxBatchRows: cfg.DECODER_MAX_BATCH_ROWS, onStep: (s) => { metrics.batchSize.observe(s.rows); metrics.latency.observe(s.stepMs / 1000); } });
    const dims = { tokens: model.manifest.encoder.tokens_per_image, dim: model.manifest.encoder.dim };
    return { handlers: decoderHandlers(service, dims, (msg, err) => log.error(msg, { err })), inFlight: () => service.inFlight };
  },
});
