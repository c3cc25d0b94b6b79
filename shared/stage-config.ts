/** Configuration every gRPC stage service shares (each adds its own batching knobs). */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { commaList } from "./config.ts";
import type { Manifest } from "./engine/model-package.ts";

export const DEFAULT_MODEL_DIR = join(dirname(fileURLToPath(import.meta.url)), "../models/emu2-tiny");

export const stageEnv = {
  /** Model package folder. Default: the bundled emu2-tiny. */
  EMU_MODEL_DIR: z.string().default(DEFAULT_MODEL_DIR),
  /** Listen address. Default 0.0.0.0 (in a pod); tests bind 127.0.0.1. */
  GRPC_HOST: z.string().default("0.0.0.0"),
  /** onnxruntime execution providers in order, e.g. "cuda,cpu". Default "cpu". */
  EXECUTION_PROVIDERS: z.string().default("cpu").transform(commaList),
  /** Drain time on SIGTERM before in-flight calls are cut. Default 30000. */
  SHUTDOWN_GRACE_MS: z.coerce.number().int().nonnegative().default(30_000),
  /** Skip the sha256 check of every package file at start. Default false. */
  SKIP_HASH_CHECK: z.enum(["true", "false"]).default("false").transform((v) => v === "true"),
  /**
   * Connections older than this get GOAWAY, so clients re-resolve DNS and spread over replicas that
   * started since (grpc-js resolves a headless Service only on reconnect). Default 300000; 0 = never.
   */
  GRPC_MAX_CONNECTION_AGE_MS: z.coerce.number().int().nonnegative().default(300_000),
  /** Time calls on an aged connection get to finish. Default 600000 (the orchestrator's call deadline). */
  GRPC_MAX_CONNECTION_AGE_GRACE_MS: z.coerce.number().int().nonnegative().default(600_000),
};

const port = (def: number) => z.coerce.number().int().min(0).max(65535).default(def);

/** Each stage service's whole environment (validated in its main.ts; checked against deploy/ by tests). */
export const encoderConfigSchema = z.object({
  ...stageEnv,
  /** Default 50051. */
  GRPC_PORT: port(50051),
  /** Prometheus /metrics port. Default 9465. */
  METRICS_PORT: port(9465),
  /** Images per engine call. Default 32. */
  ENCODER_MAX_BATCH_SIZE: z.coerce.number().int().positive().default(32),
  /** Wait for more images after the first. Default 5. */
  ENCODER_MAX_BATCH_DELAY_MS: z.coerce.number().nonnegative().default(5),
});

export const reasonerConfigSchema = z.object({
  ...stageEnv,
  /** Default 50052. */
  GRPC_PORT: port(50052),
  /** Prometheus /metrics port. Default 9466. */
  METRICS_PORT: port(9466),
});

export const decoderConfigSchema = z.object({
  ...stageEnv,
  /** Default 50053. */
  GRPC_PORT: port(50053),
  /** Prometheus /metrics port. Default 9467. */
  METRICS_PORT: port(9467),
  /** UNet rows per call (a guided image takes 2). Default 64. */
  DECODER_MAX_BATCH_ROWS: z.coerce.number().int().positive().default(64),
});

/**
 * Largest gRPC message a stage sends or receives: encoded input images, embeddings for the longest
 * sequence, or decoded RGB frames of a video at up to 1024² — whichever is largest, at least 64 MiB.
 */
export function maxMessageBytes(m: Manifest): number {
  const frames = Math.max(1, m.video.frames);
  const embeddings = m.lm.max_positions * m.encoder.dim * 4;
  return Math.max(64 << 20, frames * 1024 * 1024 * 3, embeddings);
}
