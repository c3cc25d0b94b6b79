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
};

/**
 * Largest gRPC message a stage sends or receives: encoded input images, embeddings for the longest
 * sequence, or decoded RGB frames of a video at up to 1024² — whichever is largest, at least 64 MiB.
 */
export function maxMessageBytes(m: Manifest): number {
  const frames = Math.max(1, m.video.frames);
  const embeddings = m.lm.max_positions * m.encoder.dim * 4;
  return Math.max(64 << 20, frames * 1024 * 1024 * 3, embeddings);
}
