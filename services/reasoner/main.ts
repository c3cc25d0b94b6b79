/** Reasoner stage service: one continuous batch; calls join it between decoding steps. */
import { reasonerConfigSchema } from "../../shared/stage-config.ts";
import { runStage } from "../../shared/stage-main.ts";
import { reasonerHandlers } from "./reasoner.grpc.ts";
import { ReasonerService } from "./reasoner.service.ts";

runStage({
  name: "reasoner", stage: "Reasoner", engine: "reasoner", schema: reasonerConfigSchema,
  build: (model, _cfg, metrics, log) => {
    const service = new ReasonerService({ engine: model.reasoner!, onStep: (s) => { metrics.batchSize.observe(s.size); metrics.latency.observe(s.stepMs / 1000); }, onAdmit: (ms) => metrics.queueDelay.observe(ms / 1000) });
    const dims = { tokens: model.manifest.encoder.tokens_per_image, dim: model.manifest.encoder.dim };
    return { handlers: reasonerHandlers(service, dims, (msg, err) => log.error(msg, { err })), inFlight: () => service.inFlight };
  },
});
