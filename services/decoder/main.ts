/** Decoder stage service: diffusion steps of concurrent calls share UNet runs. */
import { decoderConfigSchema } from "../../shared/stage-config.ts";
import { runStage } from "../../shared/stage-main.ts";
import { decoderHandlers } from "./decoder.grpc.ts";
import { DecoderService } from "./decoder.service.ts";

runStage({
  name: "decoder", stage: "Decoder", engine: "decoder", schema: decoderConfigSchema,
  build: (model, cfg, metrics, log) => {
    const service = new DecoderService({ engine: model.decoder!, maxBatchRows: cfg.DECODER_MAX_BATCH_ROWS, onStep: (s) => { metrics.batchSize.observe(s.rows); metrics.latency.observe(s.stepMs / 1000); }, onAdmit: (ms) => metrics.queueDelay.observe(ms / 1000) });
    const dims = { tokens: model.manifest.encoder.tokens_per_image, dim: model.manifest.encoder.dim };
    return { handlers: decoderHandlers(service, dims, (msg, err) => log.error(msg, { err })), inFlight: () => service.inFlight };
  },
});
