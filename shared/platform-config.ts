/**
 * Environment variables of the platform (gateway, orchestrator, all-in-one), validated at start with
 * every bad variable listed at once. Documented in the README; defaults suit a laptop.
 */
import { z } from "zod";
import { commaList } from "./config.ts";
import { DEFAULT_MODEL_DIR } from "./stage-config.ts";

const bool = z.enum(["true", "false"]).transform((v) => v === "true");

export const platformEnv = {
  /** Gateway port. Default 8080. */
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  /** Gateway bind address. Default 127.0.0.1 when API_KEYS is unset (auth off), else 0.0.0.0. */
  HOST: z.string().optional(),
  /** The gateway as clients reach it. Default http://127.0.0.1:$PORT. */
  PUBLIC_BASE_URL: z.string().url().optional(),
  /** Default redis://127.0.0.1:6379. */
  REDIS_URL: z.string().default("redis://127.0.0.1:6379"),
  /** Model package folder (the orchestrator reads its manifest and tokenizer). Default: bundled emu2-tiny. */
  EMU_MODEL_DIR: z.string().default(DEFAULT_MODEL_DIR),
  /** local | s3. Default local. */
  STORAGE_BACKEND: z.enum(["local", "s3"]).default("local"),
  /** Local storage and private Redis data. Default ./.data */
  DATA_DIR: z.string().default(".data"),
  S3_ENDPOINT: z.string().url().optional(),
  /** Where clients reach S3 (signed URLs are signed for it). Default S3_ENDPOINT. */
  S3_PUBLIC_ENDPOINT: z.string().url().optional(),
  S3_ACCESS_KEY: z.string().optional(),
  S3_SECRET_KEY: z.string().optional(),
  /** Default emu. */
  S3_BUCKET: z.string().default("emu"),
  /** Default us-east-1. */
  S3_REGION: z.string().default("us-east-1"),
  /** Lifetime of signed media URLs, ≤ 7 days. Default 3600. */
  SIGNED_URL_TTL_S: z.coerce.number().int().min(1).max(7 * 24 * 3600).default(3600),
  /** Comma list of API keys; unset = auth off and the gateway binds to loopback only. */
  API_KEYS: z.string().optional().transform((v) => commaList(v)),
  /** whsec_… for webhook signatures; generated and printed at start when unset. */
  WEBHOOK_SECRET: z.string().regex(/^whsec_[A-Za-z0-9+/=]+$/, "must look like whsec_<base64>").optional(),
  /** Hosts allowed despite the SSRF guard (e.g. 127.0.0.1 in tests). */
  EGRESS_ALLOW_HOSTS: z.string().optional().transform((v) => commaList(v)),
  /** Stage addresses (host:port or dns:///name:port). */
  ENCODER_ADDR: z.string().default("127.0.0.1:50051"),
  REASONER_ADDR: z.string().default("127.0.0.1:50052"),
  DECODER_ADDR: z.string().default("127.0.0.1:50053"),
  /**
   * How long a job waits for a stage with no ready replica (scaled to zero, still loading) before
   * failing with stage_unavailable. Cover the autoscaler's reaction plus a cold start. Default 120000.
   */
  STAGE_READY_TIMEOUT_MS: z.coerce.number().int().positive().default(120_000),
  /** Deadline of one stage call. Default 600000. */
  STAGE_CALL_TIMEOUT_MS: z.coerce.number().int().positive().default(600_000),
  /** Jobs one orchestrator runs at once (I/O-bound). Default 32. */
  ORCHESTRATOR_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(32),
  /** Webhook deliveries at once. Default 16. */
  WEBHOOK_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(16),
  /** Orchestrator metrics port (backlog and stage demand for autoscalers). Default 9464. */
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  /** Skip the package hash check at start. Default false. */
  SKIP_HASH_CHECK: bool.default(false),
};

export const platformConfigSchema = z.object(platformEnv).superRefine((c, ctx) => {
  if (c.STORAGE_BACKEND === "s3") {
    for (const k of ["S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY"] as const) {
      if (!c[k]) ctx.addIssue({ code: "custom", path: [k], message: `required when STORAGE_BACKEND=s3` });
    }
  }
});

export type PlatformConfig = z.infer<typeof platformConfigSchema>;

export function publicBaseUrl(c: PlatformConfig, port = c.PORT): string {
  return (c.PUBLIC_BASE_URL ?? `http://127.0.0.1:${port}`).replace(/\/$/, "");
}
