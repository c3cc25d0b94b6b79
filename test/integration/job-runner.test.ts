/**
 * The orchestrator's workers end to end below the gateway: BullMQ on the real Redis, real gRPC
 * stages with ONNX, local storage, and a real HTTP webhook receiver. A job runs to `succeeded` with
 * its events; signed webhooks arrive once per event; bad input fails at once without retries; a
 * cancel request stops a running job.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createJobSchema, type Job } from "../../shared/jobs/job-schema.ts";
import { JobStore } from "../../shared/jobs/job-store.ts";
import { newJobDocument, newJobId } from "../../shared/jobs/new-job.ts";
import { TypedQueue, TypedWorker } from "../../shared/jobs/queue.adapter.ts";
import { generateWebhookSecret, verifyWebhook } from "../../shared/jobs/webhook-signing.ts";
import { createLogger } from "../../shared/logger.ts";
import { connectRedis, type RedisClient } from "../../shared/redis.adapter.ts";
import { LocalStore } from "../../shared/storage/local-storage.adapter.ts";
import { JobRunner, handleWebhook } from "../../services/orchestrator/job-runner.ts";
import { Pipeline } from "../../services/orchestrator/pipeline.ts";
import { startStageCluster, type StageCluster } from "../support/stage-cluster.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

describe("orchestrator workers", () => {
  const prefix = `test-${randomUUID()}`;
  const secret = generateWebhookSecret();
  const log = createLogger("test", "error");
  let cluster: StageCluster;
  let redis: RedisClient;
  let store: JobStore;
  let jobs: TypedQueue<"jobs">;
  let webhooks: TypedQueue<"webhooks">;
  let jobWorker: TypedWorker<"jobs">;
  let hookWorker: TypedWorker<"webhooks">;
  let receiver: Server;
  let hookUrl = "";
  const received: { headers: Record<string, string>; body: string }[] = [];
  let root: string;
  const conns: RedisClient[] = [];
  const conn = (blocking = false): RedisClient => { const c = connectRedis(REDIS_URL, { blocking }); conns.push(c); return c; };

  before(async () => {
    cluster = await startStageCluster();
    redis = conn();
    store = new JobStore(redis, prefix);
    root = mkdtempSync(join(tmpdir(), "emu-runner-"));
    const files = new LocalStore({ root, publicBaseUrl: "http://127.0.0.1:1/files", signingKey: "k" });
    await files.ensureReady();
    const pipeline = new Pipeline({ manifest: cluster.model.manifest, builder: cluster.model.builder, stages: cluster.clients, store: files, signedUrlTtlS: 600 });
    jobs = new TypedQueue("jobs", { connection: conn(), prefix });
    webhooks = new TypedQueue("webhooks", { connection: conn(), prefix });
    const runner = new JobRunner({ store, pipeline, webhooks, log });
    jobWorker = new TypedWorker("jobs", (p, ctx) => runner.handleJob(p, ctx), { connection: conn(true), prefix, concurrency: 4 });
    hookWorker = new TypedWorker("webhooks", (p, ctx) => handleWebhook(p, ctx, { secret, egressAllowHosts: ["127.0.0.1"], log }), { connection: conn(true), prefix, concurrency: 4 });
    const sub = conn();
    await store.onCancel(sub, (id) => runner.cancel(id));
    receiver = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => { body += c.toString(); });
      req.on("end", () => {
        received.push({ headers: req.headers as Record<string, string>, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    hookUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook`;
    await Promise.all([jobWorker.waitUntilReady(), hookWorker.waitUntilReady()]);
  });

  after(async () => {
    await Promise.all([jobWorker.close(), hookWorker.close()]);
    await Promise.all([jobs.close(), webhooks.close()]);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    await Promise.all(conns.map((c) => c.quit()));
    receiver.close();
    await cluster.stop();
    rmSync(root, { recursive: true, force: true });
  });

  async function submit(body: unknown): Promise<string> {
    const id = newJobId();
    await store.create(newJobDocument(id, createJobSchema.parse(body), "http://127.0.0.1:8080"), 3600);
    await jobs.add({ jobId: id }, { jobId: id });
    return id;
  }

  async function settle(id: string, timeoutMs = 60_000): Promise<Job> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const j = await store.get(id);
      if (j && ["succeeded", "failed", "canceled"].includes(j.status)) return j;
      if (Date.now() > until) throw new Error(`job ${id} still ${j?.status}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it("runs a job to succeeded with events and signed webhooks, one per event", async () => {
    const id = await submit({ task: "generate", input: ["a red circle at the top left"], params: { steps: 3 }, webhook: hookUrl });
    const job = await settle(id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    assert.equal(job.output?.images?.length, 1);
    for (const k of ["queue_ms", "encode_ms", "reason_ms", "decode_ms", "store_ms", "total_ms"]) assert.ok(k in job.metrics, k);
    // The document turns final just before the closing events are appended: wait for "done".
    let types: string[] = [];
    for (let i = 0; i < 100 && types.at(-1) !== "done"; i++) {
      if (i) await new Promise((r) => setTimeout(r, 20));
      types = (await store.readEvents(id, "0", 0)).map((e) => e.type);
    }
    assert.equal(types[0], "status");
    assert.ok(types.includes("progress") && types.includes("output"));
    assert.equal(types.at(-1), "done");
    for (let i = 0; i < 100 && received.filter((r) => r.headers["webhook-id"]?.includes(id)).length < 3; i++) await new Promise((r) => setTimeout(r, 50));
    const mine = received.filter((r) => r.headers["webhook-id"]?.includes(id));
    assert.deepEqual(mine.map((r) => (JSON.parse(r.body) as { type: string }).type).sort(), ["job.completed", "job.output", "job.started"]);
    for (const r of mine) {
      assert.ok(verifyWebhook(secret, { id: r.headers["webhook-id"]!, timestamp: r.headers["webhook-timestamp"]!, signature: r.headers["webhook-signature"]! }, r.body));
    }
    const completed = JSON.parse(mine.find((r) => r.body.includes("job.completed"))!.body) as { data: Job };
    assert.equal(completed.data.status, "succeeded");
  });

  it("fails bad input at once, without retries", async () => {
    const id = await submit({ task: "chat", input: [{ type: "image", url: "upload://u_gone" }, "hi"] });
    const job = await settle(id);
    assert.equal(job.status, "failed");
    assert.equal(job.error?.code, "upload_not_found");
    const attempts = (await store.readEvents(id, "0", 0)).filter((e) => e.type === "status" && (e.data as { attempt?: number }).attempt !== undefined);
    assert.equal(attempts.length, 1, "one attempt only");
  });

  it("cancels a running job on request", async () => {
    const id = await submit({ task: "video", input: ["a red circle moving down"], params: { decoder: "diffusion", steps: 200, frames: 8 } });
    for (let i = 0; i < 400; i++) {
      const ev = await store.readEvents(id, "0", 0);
      if (ev.some((e) => e.type === "progress")) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    await store.requestCancel(id);
    const job = await settle(id, 30_000);
    assert.equal(job.status, "canceled");
  });
});
