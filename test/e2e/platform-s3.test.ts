/**
 * The product end to end with the `s3` storage adapter against a real S3 server process (s3rver; it
 * does not check signatures, so nothing here claims signed-URL security): HTTP gateway → BullMQ on the
 * real Redis → orchestrator → gRPC stages with ONNX → S3 → presigned URLs, and Standard Webhooks
 * verified with the independent `standardwebhooks` library. The stack must not change answers: every
 * result equals the in-process engines' for the same input and seed.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import sharp from "sharp";
import { Webhook } from "standardwebhooks";
import { JobStore } from "../../shared/jobs/job-store.ts";
import { TypedQueue, TypedWorker } from "../../shared/jobs/queue.adapter.ts";
import { generateWebhookSecret } from "../../shared/jobs/webhook-signing.ts";
import { createLogger } from "../../shared/logger.ts";
import { connectRedis, type RedisClient } from "../../shared/redis.adapter.ts";
import { S3Store } from "../../shared/storage/s3-storage.adapter.ts";
import type { PromptPart } from "../../shared/engine/sequence.ts";
import { createApp } from "../../services/gateway/app.ts";
import { GatewayMetrics } from "../../services/gateway/metrics.ts";
import { handleWebhook, JobRunner } from "../../services/orchestrator/job-runner.ts";
import { Pipeline } from "../../services/orchestrator/pipeline.ts";
import { judgeImage } from "../../models/world/checker.ts";
import { renderScene } from "../../models/world/render.ts";
import { World } from "../../models/world/tasks.ts";
import { startS3rver, type S3rverHandle } from "../support/s3rver-process.ts";
import { startStageCluster, type StageCluster } from "../support/stage-cluster.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

interface JobBody { id: string; status: string; output: { text?: string; images?: { url: string; width: number; height: number }[]; video?: { url: string; frames: number } } | null; error: { code: string } | null }

describe("platform end to end with S3 storage", () => {
  const prefix = `test-${randomUUID()}`;
  const secret = generateWebhookSecret();
  const log = createLogger("test", "error");
  const conns: RedisClient[] = [];
  const conn = (blocking = false): RedisClient => { const c = connectRedis(REDIS_URL, { blocking }); conns.push(c); return c; };
  let s3: S3rverHandle;
  let cluster: StageCluster;
  let server: Server;
  let receiver: Server;
  let base = "";
  let hookUrl = "";
  const hooks: { headers: Record<string, string>; body: string }[] = [];
  let workers: TypedWorker<"jobs" | "webhooks">[] = [];
  let queues: TypedQueue<"jobs" | "webhooks">[] = [];
  let redis: RedisClient;

  const post = async (body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${base}/v1/jobs`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  const run = async (body: unknown): Promise<JobBody> => {
    const res = await post(body, { prefer: "wait=60" });
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()) as JobBody;
  };

  before(async () => {
    s3 = await startS3rver();
    cluster = await startStageCluster();
    redis = conn();
    const store = new JobStore(redis, prefix);
    const objects = new S3Store({ endpoint: s3.endpoint, accessKey: "S3RVER", secretKey: "S3RVER", bucket: "emu-e2e" });
    await objects.ensureReady();
    const jobs = new TypedQueue("jobs", { connection: conn(), prefix });
    const webhooks = new TypedQueue("webhooks", { connection: conn(), prefix });
    queues = [jobs, webhooks];
    const app = createApp({
      store, redis, eventReader: () => conn(true), jobs, objects, publicBaseUrl: "http://gateway.test", apiKeyHashes: [], log,
      metrics: new GatewayMetrics(() => jobs.backlog()),
    });
    server = app.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const pipeline = new Pipeline({ manifest: cluster.model.manifest, builder: cluster.model.builder, stages: cluster.clients, store: objects, signedUrlTtlS: 600, egressAllowHosts: ["127.0.0.1"] });
    const runner = new JobRunner({ store, pipeline, webhooks, log });
    workers = [
      new TypedWorker("jobs", (p, ctx) => runner.handleJob(p, ctx), { connection: conn(true), prefix, concurrency: 8 }),
      new TypedWorker("webhooks", (p, ctx) => handleWebhook(p, ctx, { secret, egressAllowHosts: ["127.0.0.1"], log }), { connection: conn(true), prefix, concurrency: 4 }),
    ] as TypedWorker<"jobs" | "webhooks">[];
    await store.onCancel(conn(), (id) => runner.cancel(id));
    receiver = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => { body += c.toString(); });
      req.on("end", () => { hooks.push({ headers: req.headers as Record<string, string>, body }); res.writeHead(200).end(); });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    hookUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hooks/emu`;
    await Promise.all(workers.map((w) => w.waitUntilReady()));
  });

  after(async () => {
    await Promise.all(workers.map((w) => w.close()));
    await Promise.all(queues.map((q) => q.close()));
    await new Promise((r) => server.close(r));
    receiver.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    for (const c of conns) c.disconnect();
    await cluster.stop();
    await s3.stop();
  });

  /** The in-process engines' image for a generate prompt (the stack must return the same pixels). */
  async function localImage(parts: PromptPart[], seed: number): Promise<Uint8Array> {
    const m = cluster.model;
    const seq = m.builder.build("image", parts);
    const r = await m.reasoner!.generate({ sequence: seq, images: await m.encoder!.encode(seq.images), mode: "image" });
    return (await m.decoder!.decode({ embeddings: r.visual, count: 1, negative: await m.reasoner!.unconditional(), seed }))[0]!.data;
  }

  it("generates a correct PNG stored in S3, equal to the in-process result, with verified webhooks", async () => {
    const job = await run({ task: "generate", input: ["a red circle at the top left"], params: { seed: 7 }, webhook: hookUrl });
    assert.equal(job.status, "succeeded");
    const img = job.output!.images![0]!;
    assert.match(img.url, /^http:\/\/127\.0\.0\.1:\d+\/emu-e2e\/outputs\/job_[0-9A-Z]+\/0\.png\?.*X-Amz-Signature=/);
    const png = Buffer.from(await (await fetch(img.url)).arrayBuffer());
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const [w, h] = cluster.model.manifest.encoder.image_size;
    assert.deepEqual([info.width, info.height, img.width], [w, h, w]);
    assert.ok(judgeImage(new Uint8Array(data), { shape: "circle", color: "red", cell: 0 }).ok, "the checker reads a red circle at the top left");
    const local = await localImage(["a red circle at the top left"], 7);
    let d = 0;
    for (let i = 0; i < local.length; i++) d = Math.max(d, Math.abs(local[i]! - data[i]!));
    assert.ok(d <= 1, `stack vs in-process pixels differ by ${d}`);
    for (let i = 0; i < 100 && hooks.filter((x) => x.headers["webhook-id"]?.includes(job.id)).length < 3; i++) await new Promise((r) => setTimeout(r, 50));
    const mine = hooks.filter((x) => x.headers["webhook-id"]?.includes(job.id));
    assert.equal(mine.length, 3);
    const verifier = new Webhook(secret.slice("whsec_".length));
    for (const x of mine) {
      const payload = verifier.verify(x.body, { "webhook-id": x.headers["webhook-id"]!, "webhook-timestamp": x.headers["webhook-timestamp"]!, "webhook-signature": x.headers["webhook-signature"]! }) as { type: string };
      assert.ok(["job.started", "job.output", "job.completed"].includes(payload.type));
    }
  });

  it("answers a chat about an uploaded world scene correctly, streaming tokens before done", async () => {
    const scene = new World("eval").poolScene("singles", 11);
    const png = await sharp(renderScene(scene), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    const form = new FormData();
    form.append("file", new Blob([png], { type: "image/png" }), "scene.png");
    const up = (await (await fetch(`${base}/v1/uploads`, { method: "POST", body: form })).json()) as { url: string };
    const created = (await (await post({ task: "chat", input: [{ type: "image", url: up.url }, "what color is the shape ?"] })).json()) as { id: string };
    const sse = await (await fetch(`${base}/v1/jobs/${created.id}/events`)).text();
    const order = [...sse.matchAll(/^event: (\w+)$/gm)].map((x) => x[1]);
    assert.ok(order.indexOf("token") >= 0 && order.indexOf("token") < order.indexOf("done"), `events: ${order.join(",")}`);
    const job = (await (await fetch(`${base}/v1/jobs/${created.id}`)).json()) as JobBody;
    assert.equal(job.output?.text, scene.objects[0]!.color);
    const m = cluster.model;
    const seq = m.builder.build("chat", [{ type: "image", image: { kind: "bytes", data: png } }, "what color is the shape ?"]);
    const local = await m.reasoner!.generate({ sequence: seq, images: await m.encoder!.encode(seq.images), mode: "text" });
    assert.equal(job.output?.text, local.text);
  });

  it("runs a 4-shot nonce-label prompt and a video as the in-process engines do", async () => {
    const world = new World("eval");
    const ex = world.fewshot(3, 4);
    const toPng = async (scene: ReturnType<World["poolScene"]>): Promise<Buffer> => sharp(renderScene(scene), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    const parts: PromptPart[] = [];
    const input: unknown[] = [];
    for (const seg of ex.segments.slice(1, ex.promptLength)) {
      if (seg.kind === "text") { parts.push(seg.text); input.push(seg.text); continue; }
      if (seg.kind !== "image" || seg.image.kind !== "pool") throw new Error("unexpected segment");
      const png = await toPng(world.poolScene(seg.image.pool, seg.image.index));
      parts.push({ type: "image", image: { kind: "bytes", data: png } });
      input.push({ type: "image", url: `data:image/png;base64,${png.toString("base64")}` });
    }
    const job = await run({ task: "complete", input, params: { max_new_tokens: 4 } });
    const m = cluster.model;
    const seq = m.builder.build("complete", parts);
    const local = await m.reasoner!.generate({ sequence: seq, images: await m.encoder!.encode(seq.images), mode: "text", text: { maxNewTokens: 4 } });
    assert.equal(job.output?.text, local.text);
    const video = await run({ task: "video", input: ["a blue square moving right"], params: { output_format: "webp", seed: 3 } });
    const webp = Buffer.from(await (await fetch(video.output!.video!.url)).arrayBuffer());
    const meta = await sharp(webp, { animated: true }).metadata();
    assert.deepEqual([meta.format, meta.pages], ["webp", m.manifest.video.frames]);
    // Lossless WebP: every frame's pixels equal the in-process engines' frames.
    const frames = await sharp(webp, { animated: true }).removeAlpha().raw().toBuffer();
    const vseq = m.builder.build("video", ["a blue square moving right"]);
    const vr = await m.reasoner!.generate({ sequence: vseq, images: await m.encoder!.encode(vseq.images), mode: "video", frames: m.manifest.video.frames });
    const localFrames = await m.decoder!.decode({ embeddings: vr.visual, count: m.manifest.video.frames, negative: await m.reasoner!.unconditional(), seed: 3 });
    const flat = Buffer.concat(localFrames.map((f) => Buffer.from(f.data)));
    let dv = 0;
    for (let i = 0; i < flat.length; i++) dv = Math.max(dv, Math.abs(flat[i]! - frames[i]!));
    assert.ok(dv <= 1, `video frames differ by ${dv}`);
  });

  it("answers every kind of bad input with a 4xx and a stable code", async () => {
    const cases: [unknown, number, string, Record<string, string>?][] = [
      ["{not json", 400, "invalid_json"],
      [{ input: ["x"] }, 400, "invalid_request"],
      [{ task: "draw", input: ["x"] }, 400, "invalid_request"],
      [{ task: "complete" }, 400, "invalid_request"],
      [{ task: "complete", input: "x" }, 400, "invalid_request"],
      [{ task: "complete", input: [{ type: "video", url: "x" }] }, 400, "invalid_request"],
      [{ task: "complete", input: [{ type: "image", url: "ftp://a/b.png" }] }, 400, "invalid_request"],
      [{ task: "generate", input: [{ type: "text", text: "a", box: [0.6, 0.1, 0.2, 0.5] }] }, 400, "invalid_request"],
      [{ task: "generate", input: [{ type: "text", text: "a", box: [0, 0, 1.5, 1] }] }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"], messages: [{ role: "user", content: ["x"] }] }, 400, "invalid_request"],
      [{ task: "chat", messages: [{ role: "assistant", content: ["x"] }] }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"], params: { temperature: -1 } }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"], params: { top_p: 0 } }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"], params: { max_new_tokens: 0 } }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"], params: { unknown_param: 1 } }, 400, "invalid_request"],
      [{ task: "generate", input: ["x"], params: { output_format: "gif" } }, 400, "invalid_request"],
      [{ task: "video", input: ["x"], params: { output_format: "png" } }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"], webhook: "not a url" }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"], webhook_events_filter: ["completed"] }, 400, "invalid_request"],
      [{ task: "complete", input: ["x"] }, 400, "invalid_idempotency_key", { "idempotency-key": "x".repeat(300) }],
    ];
    for (const [body, status, code, headers] of cases) {
      const res = await post(body, headers);
      const e = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(e.error.code, code, JSON.stringify(body));
      assert.ok(e.error.message.length > 10, "a message a person can act on");
    }
    const big = await post({ task: "complete", input: ["x".repeat(11 << 20)] });
    assert.deepEqual([big.status, ((await big.json()) as { error: { code: string } }).error.code], [413, "body_too_large"]);
    assert.equal(((await (await fetch(`${base}/v1/jobs/job_missing`)).json()) as { error: { code: string } }).error.code, "job_not_found");
    assert.equal(((await (await fetch(`${base}/v1/jobs?limit=0`)).json()) as { error: { code: string } }).error.code, "invalid_query");
    // Input errors found while running fail the job at once with their own code.
    const failed = await run({ task: "chat", input: [{ type: "image", url: "https://10.0.0.1/x.png" }, "hi"] });
    assert.deepEqual([failed.status, failed.error?.code], ["failed", "url_forbidden"]);
    const unreadable = await run({ task: "chat", input: [{ type: "image", url: "data:image/png;base64,AAAA" }, "hi"] });
    assert.deepEqual([unreadable.status, unreadable.error?.code], ["failed", "image_unreadable"]);
    const missing = await run({ task: "chat", input: [{ type: "image", url: "upload://u_nothere" }, "hi"] });
    assert.deepEqual([missing.status, missing.error?.code], ["failed", "upload_not_found"]);
  });
});
