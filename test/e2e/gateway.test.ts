/**
 * The whole stack through HTTP: gateway (express on 127.0.0.1:0) → BullMQ on the real Redis →
 * orchestrator workers → real gRPC stages with ONNX → local signed files. Covers auth, validation
 * errors, Prefer: wait, signed media URLs, idempotency, uploads, SSE, cancel, docs and metrics.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { JobStore } from "../../shared/jobs/job-store.ts";
import { TypedQueue, TypedWorker } from "../../shared/jobs/queue.adapter.ts";
import { createLogger } from "../../shared/logger.ts";
import { connectRedis, type RedisClient } from "../../shared/redis.adapter.ts";
import { LocalStore } from "../../shared/storage/local-storage.adapter.ts";
import { createApp } from "../../services/gateway/app.ts";
import { GatewayMetrics } from "../../services/gateway/metrics.ts";
import { JobRunner } from "../../services/orchestrator/job-runner.ts";
import { Pipeline } from "../../services/orchestrator/pipeline.ts";
import { renderScene } from "../../models/world/render.ts";
import { World } from "../../models/world/tasks.ts";
import { startStageCluster, type StageCluster } from "../support/stage-cluster.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const KEY = "sk_test_123";

describe("gateway end to end", () => {
  const prefix = `test-${randomUUID()}`;
  const log = createLogger("test", "error");
  const conns: RedisClient[] = [];
  const conn = (blocking = false): RedisClient => { const c = connectRedis(REDIS_URL, { blocking }); conns.push(c); return c; };
  let cluster: StageCluster;
  let server: Server;
  let base = "";
  let worker: TypedWorker<"jobs">;
  let jobs: TypedQueue<"jobs">;
  let webhooks: TypedQueue<"webhooks">;
  let root: string;
  let redis: RedisClient;

  const api = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(`${base}${path}`, { ...init, headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", ...(init.headers as Record<string, string>) } });

  before(async () => {
    cluster = await startStageCluster();
    redis = conn();
    const store = new JobStore(redis, prefix);
    root = mkdtempSync(join(tmpdir(), "emu-gw-"));
    jobs = new TypedQueue("jobs", { connection: conn(), prefix });
    webhooks = new TypedQueue("webhooks", { connection: conn(), prefix });
    // Listen first: signed file URLs must point where clients reach this gateway.
    server = createServer();
    server.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const files = new LocalStore({ root, publicBaseUrl: `${base}/files`, signingKey: "k" });
    const app = createApp({
      store, redis, eventReader: () => conn(true), jobs, objects: files, localFiles: files, publicBaseUrl: "http://placeholder",
      apiKeyHashes: [createHash("sha256").update(KEY).digest("hex")], log, metrics: new GatewayMetrics(() => jobs.backlog()), maxWaitS: 30,
    });
    server.on("request", app);
    await files.ensureReady();
    const pipeline = new Pipeline({ manifest: cluster.model.manifest, builder: cluster.model.builder, stages: cluster.clients, store: files, signedUrlTtlS: 600 });
    const runner = new JobRunner({ store, pipeline, webhooks, log });
    worker = new TypedWorker("jobs", (p, ctx) => runner.handleJob(p, ctx), { connection: conn(true), prefix, concurrency: 4 });
    await store.onCancel(conn(), (id) => runner.cancel(id));
    await worker.waitUntilReady();
  });

  after(async () => {
    await worker.close();
    await Promise.all([jobs.close(), webhooks.close()]);
    await new Promise((r) => server.close(r));
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    for (const c of conns) c.disconnect();
    await cluster.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it("refuses requests without the API key, and bad bodies with a stable code", async () => {
    const noKey = await fetch(`${base}/v1/jobs`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
    assert.equal(noKey.status, 401);
    assert.equal(((await noKey.json()) as { error: { code: string } }).error.code, "unauthorized");
    const bad = await api("/v1/jobs", { method: "POST", body: JSON.stringify({ task: "draw", input: ["x"] }) });
    assert.equal(bad.status, 400);
    const e = (await bad.json()) as { error: { code: string; message: string } };
    assert.equal(e.error.code, "invalid_request");
    assert.match(e.error.message, /^task: /);
    const notJson = await api("/v1/jobs", { method: "POST", body: "{nope" });
    assert.equal(((await notJson.json()) as { error: { code: string } }).error.code, "invalid_json");
    assert.equal((await api("/v1/jobs/job_nope")).status, 404);
  });

  it("runs a generate job with Prefer: wait and serves the image at its signed URL", async () => {
    const res = await api("/v1/jobs", { method: "POST", headers: { prefer: "wait=30" }, body: JSON.stringify({ task: "generate", input: ["a red circle at the top left"], params: { steps: 3 } }) });
    assert.equal(res.status, 200);
    const job = (await res.json()) as { id: string; status: string; output: { images: { url: string; sha256: string; content_type: string }[] }; urls: { get: string } };
    assert.equal(job.status, "succeeded");
    assert.equal(job.urls.get, `http://placeholder/v1/jobs/${job.id}`);
    const img = job.output.images[0]!;
    const file = await fetch(img.url);
    assert.equal(file.status, 200);
    const bytes = Buffer.from(await file.arrayBuffer());
    assert.equal(createHash("sha256").update(bytes).digest("hex"), img.sha256);
    assert.equal((await sharp(bytes).metadata()).format, "png");
    const tampered = new URL(img.url);
    tampered.searchParams.set("sig", "x");
    assert.equal((await fetch(tampered)).status, 403);
  });

  it("returns the same job for a repeated Idempotency-Key, and 422 for another body", async () => {
    const body = JSON.stringify({ task: "complete", input: ["a red"], params: { max_new_tokens: 2 } });
    const a = (await (await api("/v1/jobs", { method: "POST", headers: { "idempotency-key": "k-1" }, body })).json()) as { id: string };
    const b = (await (await api("/v1/jobs", { method: "POST", headers: { "idempotency-key": "k-1" }, body })).json()) as { id: string };
    assert.equal(a.id, b.id);
    const c = await api("/v1/jobs", { method: "POST", headers: { "idempotency-key": "k-1" }, body: JSON.stringify({ task: "complete", input: ["a blue"] }) });
    assert.equal(c.status, 422);
  });

  it("accepts uploads and uses them in a chat job streamed over SSE", async () => {
    const png = await sharp(renderScene(new World("eval").poolScene("singles", 2)), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    const form = new FormData();
    form.append("file", new Blob([png], { type: "image/png" }), "scene.png");
    const up = await fetch(`${base}/v1/uploads`, { method: "POST", body: form, headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(up.status, 201);
    const u = (await up.json()) as { url: string; sha256: string };
    assert.equal(u.sha256, createHash("sha256").update(png).digest("hex"));
    const notImage = new FormData();
    notImage.append("file", new Blob([Buffer.from("hello")]), "x.txt");
    assert.equal((await fetch(`${base}/v1/uploads`, { method: "POST", body: notImage, headers: { authorization: `Bearer ${KEY}` } })).status, 400);
    const created = (await (await api("/v1/jobs", { method: "POST", body: JSON.stringify({ task: "chat", input: [{ type: "image", url: u.url }, "what shape is it ?"], params: { max_new_tokens: 4 } }) })).json()) as { id: string };
    const sse = await fetch(`${base}/v1/jobs/${created.id}/events`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(sse.headers.get("content-type"), "text/event-stream");
    const text = await sse.text();
    const events = [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    assert.equal(events[0], "status");
    assert.equal(events.at(-1), "done");
    assert.ok(events.includes("output"));
  });

  it("cancels a queued or running job, lists jobs, and serves docs and metrics", async () => {
    const created = (await (await api("/v1/jobs", { method: "POST", body: JSON.stringify({ task: "video", input: ["a red circle moving left"], params: { decoder: "diffusion", steps: 200 } }) })).json()) as { id: string };
    const c = await api(`/v1/jobs/${created.id}/cancel`, { method: "POST" });
    assert.equal(c.status, 200);
    for (let i = 0; i < 200; i++) {
      const j = (await (await api(`/v1/jobs/${created.id}`)).json()) as { status: string };
      if (j.status === "canceled") break;
      if (i === 199 || j.status === "succeeded") {
        const ev = await (await fetch(`${base}/v1/jobs/${created.id}/events`, { headers: { authorization: `Bearer ${KEY}` } })).text();
        assert.fail(`job still ${j.status}; cancel answered ${JSON.stringify(await c.json())}; events ${ev.slice(0, 1500)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const list = (await (await api("/v1/jobs?limit=2")).json()) as { data: { id: string }[]; next_cursor: string | null };
    assert.equal(list.data.length, 2);
    assert.ok(list.next_cursor);
    const canceled = (await (await api("/v1/jobs?status=canceled")).json()) as { data: { id: string }[] };
    assert.ok(canceled.data.some((j) => j.id === created.id));
    assert.equal((await api("/v1/jobs?limit=1000")).status, 400);
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as { paths: Record<string, unknown>; components: { schemas: Record<string, { properties?: Record<string, unknown> }> } };
    assert.ok(doc.paths["/v1/jobs"] && doc.components.schemas.CreateJob?.properties?.task);
    assert.equal((await fetch(`${base}/docs`)).status, 200);
    assert.match(await (await fetch(`${base}/metrics`)).text(), /emu_jobs_backlog \d+/);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
  });
});
