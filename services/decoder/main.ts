/** Decoder stage service: config → model → step-batching service → gRPC server; SIGTERM drains. */
import { z } from "zod";
import { loadConfig } from "../../shared/config.ts";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { StageServer } from "../../shared/grpc/grpc.adapter.ts";
import { createLogger } from "../../shared/logger.ts";
import { maxMessageBytes, stageEnv } from "../../shared/stage-config.ts";
import { StageMetrics } from "../../shared/stage-metrics.ts";
import { decoderHandlers } from "./decoder.grpc.ts";
import { DecoderService } from "./decoder.service.ts";

export const decoderConfigSchema = z.object({
  ...stageEnv,
  /** Default 50053. */
  /** Prometheus /metrics port. Default 9467. */
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9467),
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50053),
  /** UNet rows per call (a guided image takes 2). Default 64. */
  DECODER_MAX_BATCH_ROWS: z.coerce.number().int().positive().default(64),
});

async function main(): Promise<void> {
  const cfg = loadConfig(decoderConfigSchema);
  const log = createLogger("decoder");
  const model = await EmuModel.load(cfg.EMU_MODEL_DIR, {
    engines: ["decoder"], providers: cfg.EXECUTION_PROVIDERS, verifyHashes: !cfg.SKIP_HASH_CHECK,
    onFallback: (reason) => log.warn("execution provider fallback", { reason }),
  });
  let service: DecoderService | null = null;
  const metrics = new StageMetrics("decoder", () => service?.inFlight ?? 0);
  service = new DecoderService({ engine: model.decoder!, maxBatchRows: cfg.DECODER_MAX_BATCH_ROWS, onStep: (s) => { metrics.batchSize.observe(s.rows); metrics.latency.observe(s.stepMs / 1000); } });
  const dims = { tokens: model.manifest.encoder.tokens_per_image, dim: model.manifest.encoder.dim };
  const server = new StageServer({
    stage: "Decoder", address: `${cfg.GRPC_HOST}:${cfg.GRPC_PORT}`, maxMessageBytes: maxMessageBytes(model.manifest),
    handlers: decoderHandlers(service, dims, (msg, err) => log.error(msg, { err })),
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
  process.stderr.write(`decoder: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
