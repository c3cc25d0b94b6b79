/**
 * Builds and starts the orchestrator from the platform config: the jobs and webhooks workers, the
 * cancel subscription, and a /metrics endpoint with the backlog (waiting + prioritized + delayed)
 * and each stage's demand (calls waiting for or in flight to it), which the autoscalers read.
 */
import { createServer, type Server } from "node:http";
import { readFileSync } from "node:fs";
import { Gauge, Registry } from "prom-client";
import { loadModelPackage } from "../../shared/engine/model-package.ts";
import { SequenceBuilder } from "../../shared/engine/sequence.ts";
import { EmuTokenizer } from "../../shared/engine/tokenizer.ts";
import { StageClients } from "../../shared/grpc/stage-clients.ts";
import { JobStore } from "../../shared/jobs/job-store.ts";
import { TypedQueue, TypedWorker } from "../../shared/jobs/queue.adapter.ts";
import type { Logger } from "../../shared/logger.ts";
import { publicBaseUrl, type PlatformConfig } from "../../shared/platform-config.ts";
import { connectRedis, type RedisClient } from "../../shared/redis.adapter.ts";
import { maxMessageBytes } from "../../shared/stage-config.ts";
import { objectStoreFromConfig } from "../../shared/storage/from-config.ts";
import { handleWebhook, JobRunner } from "./job-runner.ts";
import { Pipeline } from "./pipeline.ts";

export interface RunningOrchestrator {
  metricsPort: number;
  stop(): Promise<void>;
}

export async function startOrchestrator(cfg: PlatformConfig, log: Logger, secrets: { signingKey: string; webhookSecret: string }): Promise<RunningOrchestrator> {
  const pkg = loadModelPackage(cfg.EMU_MODEL_DIR, { verifyHashes: !cfg.SKIP_HASH_CHECK });
  const m = pkg.manifest;
  const tokenizer = new EmuTokenizer(JSON.parse(readFileSync(pkg.file(m.tokenizer.file), "utf8")) as object);
  const builder = new SequenceBuilder(tokenizer, m);
  const stages = new StageClients({
    encoder: cfg.ENCODER_ADDR, reasoner: cfg.REASONER_ADDR, decoder: cfg.DECODER_ADDR, maxMessageBytes: maxMessageBytes(m),
    dims: { tokens: m.encoder.tokens_per_image, dim: m.encoder.dim },
    readyTimeoutMs: cfg.STAGE_READY_TIMEOUT_MS, callTimeoutMs: cfg.STAGE_CALL_TIMEOUT_MS,
  });
  const { store: objects } = objectStoreFromConfig(cfg, publicBaseUrl(cfg), secrets.signingKey);
  await objects.ensureReady();
  // BullMQ leaves connections it was given open on close: every one made here is closed in stop().
  const conns: RedisClient[] = [];
  const conn = (name: string, blocking = false): RedisClient => { const c = connectRedis(cfg.REDIS_URL, { name, blocking }); conns.push(c); return c; };
  const redis = conn("orchestrator");
  const store = new JobStore(redis);
  const jobsQueue = new TypedQueue("jobs", { connection: conn("orchestrator-jobs-queue") });
  const webhooks = new TypedQueue("webhooks", { connection: conn("orchestrator-webhooks-queue") });
  const pipeline = new Pipeline({ manifest: m, builder, stages, store: objects, signedUrlTtlS: cfg.SIGNED_URL_TTL_S, egressAllowHosts: cfg.EGRESS_ALLOW_HOSTS });
  const runner = new JobRunner({ store, pipeline, webhooks, log });
  const jobWorker = new TypedWorker("jobs", (p, ctx) => runner.handleJob(p, ctx), { connection: conn("orchestrator-jobs", true), concurrency: cfg.ORCHESTRATOR_CONCURRENCY });
  const hookWorker = new TypedWorker("webhooks", (p, ctx) => handleWebhook(p, ctx, { secret: secrets.webhookSecret, egressAllowHosts: cfg.EGRESS_ALLOW_HOSTS, log }), {
    connection: conn("orchestrator-webhooks", true), concurrency: cfg.WEBHOOK_CONCURRENCY,
  });
  jobWorker.on("failed", (jobId, err, final) => log.warn("job attempt failed", { jobId, final, err }));
  const sub = conn("orchestrator-cancel");
  const offCancel = await store.onCancel(sub, (id) => { if (runner.cancel(id)) log.info("canceling", { jobId: id }); });

  const registry = new Registry();
  new Gauge({ name: "emu_jobs_backlog", help: "Jobs not yet started (waiting + prioritized + delayed)", registers: [registry], async collect() { this.set(await jobsQueue.backlog()); } });
  new Gauge({ name: "emu_jobs_active", help: "Jobs running now, on every orchestrator", registers: [registry], async collect() { this.set((await jobsQueue.counts()).active ?? 0); } });
  new Gauge({ name: "emu_webhooks_backlog", help: "Webhook deliveries not yet started", registers: [registry], async collect() { this.set(await webhooks.backlog()); } });
  new Gauge({
    name: "emu_stage_demand", help: "Calls waiting for or in flight to each stage (this orchestrator)", labelNames: ["stage"], registers: [registry],
    collect() { for (const [stage, n] of Object.entries(stages.inFlight)) this.set({ stage }, n); },
  });
  const metrics: Server = createServer((req, res) => {
    if (req.url === "/metrics") {
      registry.metrics().then((body) => res.writeHead(200, { "content-type": registry.contentType }).end(body), () => res.writeHead(500).end());
    } else if (req.url === "/healthz") res.writeHead(200).end("ok");
    else res.writeHead(404).end();
  });
  metrics.listen(cfg.METRICS_PORT, "0.0.0.0");
  await new Promise((r) => metrics.once("listening", r));
  await Promise.all([jobWorker.waitUntilReady(), hookWorker.waitUntilReady()]);
  return {
    metricsPort: (metrics.address() as { port: number }).port,
    stop: async () => {
      // Stop taking jobs, let running ones finish (BullMQ waits), then close connections.
      await Promise.all([jobWorker.close(), hookWorker.close()]);
      await offCancel();
      await Promise.all([jobsQueue.close(), webhooks.close()]);
      metrics.close();
      stages.close();
      for (const c of conns) c.disconnect();
    },
  };
}
