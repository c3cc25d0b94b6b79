/**
 * The orchestrator's /metrics as the autoscalers read it, on a real Redis and real gRPC stages:
 * - emu_jobs_backlog counts waiting, prioritized and delayed jobs (not the running one);
 * - emu_stage_demand shows a call waiting for a stage that has no server yet (scaled to zero);
 * - when the stage comes up, the waiting job finishes instead of failing.
 * Uses Redis database 9, emptied before and after (the orchestrator uses the default key prefixes).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { loadConfig } from "../../shared/config.ts";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import type { StageServer } from "../../shared/grpc/grpc.adapter.ts";
import { createJobSchema } from "../../shared/jobs/job-schema.ts";
import { JobStore } from "../../shared/jobs/job-store.ts";
import { newJobDocument, newJobId } from "../../shared/jobs/new-job.ts";
import { TypedQueue } from "../../shared/jobs/queue.adapter.ts";
import { createLogger } from "../../shared/logger.ts";
import { platformConfigSchema } from "../../shared/platform-config.ts";
import { connectRedis, type RedisClient } from "../../shared/redis.adapter.ts";
import { createStageServers } from "../../services/all-in-one/stage-servers.ts";
import { startOrchestrator, type RunningOrchestrator } from "../../services/orchestrator/orchestrator.ts";
import { healthcheck } from "../../services/serve.ts";
import { PACKAGE_DIR } from "../support/stage-cluster.ts";

const REDIS_URL = `${(process.env.REDIS_URL ?? "redis://127.0.0.1:6379").replace(/\/\d+$/, "")}/9`;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `name{labels} value` lines → value of the first series whose name and labels match. */
function metric(body: string, name: string, labels = ""): number | undefined {
  const line = body.split("\n").find((l) => l.startsWith(labels ? `${name}{${labels}}` : `${name} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

let redis: RedisClient;
let orch: RunningOrchestrator | null = null;
let servers: StageServer[] = [];
let model: EmuModel | null = null;
let dataDir: string;

before(async () => {
  redis = connectRedis(REDIS_URL);
  await redis.flushdb();
  dataDir = mkdtempSync(join(tmpdir(), "emu-orch-metrics-"));
});

after(async () => {
  await orch?.stop();
  await Promise.all(servers.map((s) => s.stop(1000)));
  await model?.close();
  await redis.flushdb();
  redis.disconnect();
  rmSync(dataDir, { recursive: true, force: true });
});

test("backlog = waiting + prioritized + delayed; a scaled-to-zero stage shows demand, then serves the waiting job", async () => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const cfg = loadConfig(platformConfigSchema, {
    REDIS_URL, DATA_DIR: dataDir, METRICS_PORT: "0", ORCHESTRATOR_CONCURRENCY: "1", STAGE_READY_TIMEOUT_MS: "60000",
    ENCODER_ADDR: `127.0.0.1:${ports[0]}`, REASONER_ADDR: `127.0.0.1:${ports[1]}`, DECODER_ADDR: `127.0.0.1:${ports[2]}`,
    WEBHOOK_SECRET: "whsec_dGVzdC1zZWNyZXQ=", PUBLIC_BASE_URL: "http://127.0.0.1:8080",
  });
  const log = createLogger("test", "error");
  orch = await startOrchestrator(cfg, log, { signingKey: "k", webhookSecret: cfg.WEBHOOK_SECRET! });
  await healthcheck("orchestrator", { METRICS_PORT: String(orch.metricsPort) }); // the container's health check
  const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${orch!.metricsPort}/metrics`)).text();

  const storeConn = connectRedis(REDIS_URL);
  const queueConn = connectRedis(REDIS_URL);
  const store = new JobStore(storeConn);
  const queue = new TypedQueue("jobs", { connection: queueConn });
  const enqueue = async (opts: { priority?: number; delayMs?: number } = {}): Promise<string> => {
    const id = newJobId();
    await store.create(newJobDocument(id, createJobSchema.parse({ task: "generate", input: ["a red circle at the top left"], params: { seed: 7 } }), cfg.PUBLIC_BASE_URL!), 3600);
    await queue.add({ jobId: id }, { jobId: id, ...opts });
    return id;
  };
  try {
    // The only job slot is taken by a job whose reasoner has no server: it waits for readiness.
    const first = await enqueue();
    const body = await until("reasoner demand", async () => {
      const b = await scrape();
      return metric(b, "emu_stage_demand", 'stage="reasoner"') === 1 ? b : undefined;
    });
    assert.equal(metric(body, "emu_jobs_active"), 1);
    assert.equal(metric(body, "emu_jobs_backlog"), 0, "the running job is not backlog");

    await enqueue();
    await enqueue();
    await enqueue({ priority: 1 });
    await enqueue({ delayMs: 600_000 });
    await enqueue({ delayMs: 600_000 });
    const counts = await queue.counts();
    assert.deepEqual([counts.waiting, counts.prioritized, counts.delayed, counts.active], [2, 1, 2, 1], "BullMQ keeps them in three places");
    const after5 = await scrape();
    assert.equal(metric(after5, "emu_jobs_backlog"), 5, "2 waiting + 1 prioritized + 2 delayed");
    assert.equal(metric(after5, "emu_stage_demand", 'stage="reasoner"'), 1);
    assert.equal(metric(after5, "emu_stage_demand", 'stage="decoder"'), 0);
    assert.equal((await store.get(first))?.status, "running");

    // The stages come up (as a pod scaled from zero would): the waiting job goes on and succeeds.
    model = await EmuModel.load(PACKAGE_DIR);
    servers = createStageServers(model, ports.map((p) => `127.0.0.1:${p}`) as [string, string, string]);
    await Promise.all(servers.map((s) => s.start()));
    const done = await until("the first job to finish", async () => {
      const j = await store.get(first);
      return j && j.status !== "running" && j.status !== "queued" ? j : undefined;
    });
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    // The waiting and prioritized jobs run next; the delayed ones stay in the backlog.
    const drained = await until("the backlog to hold only the delayed jobs", async () => {
      const b = await scrape();
      return metric(b, "emu_jobs_backlog") === 2 && metric(b, "emu_jobs_active") === 0 ? b : undefined;
    });
    assert.equal(metric(drained, "emu_stage_demand", 'stage="reasoner"'), 0);
  } finally {
    await queue.close();
    storeConn.disconnect();
    queueConn.disconnect();
  }
});
