/**
 * The orchestrator's job plan over real gRPC stages, real ONNX and real storage: text tasks, image
 * generation stored with sha256 and a signed URL, video, grounded boxes, the encoder cache for
 * repeated images, input errors with stable codes, and cancellation.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { LocalStore } from "../../shared/storage/local-storage.adapter.ts";
import { createJobSchema } from "../../shared/jobs/job-schema.ts";
import { Pipeline } from "../../services/orchestrator/pipeline.ts";
import { renderScene } from "../../models/world/render.ts";
import { World } from "../../models/world/tasks.ts";
import { startStageCluster, type StageCluster } from "../support/stage-cluster.ts";

describe("job pipeline", () => {
  let c: StageCluster;
  let store: LocalStore;
  let pipeline: Pipeline;
  let root: string;
  let dataUri: string;

  before(async () => {
    c = await startStageCluster();
    root = mkdtempSync(join(tmpdir(), "emu-pipe-"));
    store = new LocalStore({ root, publicBaseUrl: "http://127.0.0.1:8080/files", signingKey: "k" });
    await store.ensureReady();
    pipeline = new Pipeline({ manifest: c.model.manifest, builder: c.model.builder, stages: c.clients, store, signedUrlTtlS: 600 });
    const png = await sharp(renderScene(new World("eval").poolScene("singles", 1)), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    dataUri = `data:image/png;base64,${png.toString("base64")}`;
    await store.put("uploads/u_abc", png, "image/png");
  });
  after(async () => {
    await c.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it("answers chat and complete jobs with text, streaming tokens", async () => {
    const tokens: string[] = [];
    const stages: string[] = [];
    const r = await pipeline.run("job_t1", createJobSchema.parse({ task: "chat", input: [{ type: "image", url: dataUri }, "what shape is it ?"], params: { max_new_tokens: 5 } }), undefined, {
      token: (t) => tokens.push(t), status: (s) => stages.push(s),
    });
    assert.equal(typeof r.output.text, "string");
    assert.equal(tokens.at(-1) ?? "", r.output.text);
    assert.deepEqual(stages, ["encode", "reason"]);
    for (const k of ["encode_ms", "reason_ms", "total_ms", "tokens_in", "tokens_out"]) assert.ok(k in r.metrics, k);
    const few = await pipeline.run("job_t2", createJobSchema.parse({ task: "complete", input: [{ type: "image", url: "upload://u_abc" }, "dax .", { type: "image", url: dataUri }, "wug .", { type: "image", url: "upload://u_abc" }], params: { max_new_tokens: 3 } }), undefined);
    // All three images have the bytes the chat job already encoded: none reaches the encoder again.
    assert.equal(few.metrics.images_cached, 3, "repeated images come from the encoder cache");
  });

  it("generates an image, stores it with its sha256 and returns a signed URL", async () => {
    const progress: number[] = [];
    const r = await pipeline.run("job_i1", createJobSchema.parse({ task: "generate", input: [{ type: "text", text: "a red circle", box: [0.1, 0.1, 0.45, 0.45] }], params: { decoder: "diffusion", steps: 3, seed: 5, output_format: "webp" } }), undefined, {
      progress: (stage, s) => { if (stage === "decode") progress.push(s); },
    });
    const img = r.output.images![0]!;
    assert.deepEqual(progress, [1, 2, 3]);
    assert.equal(img.content_type, "image/webp");
    const stored = await store.get(img.key);
    assert.equal(img.sha256, createHash("sha256").update(stored).digest("hex"));
    assert.equal(img.bytes, stored.byteLength);
    const u = new URL(img.url);
    assert.equal(store.verify(img.key, u.searchParams.get("expires") ?? undefined, u.searchParams.get("sig") ?? undefined), null);
    assert.deepEqual([img.width, img.height], [64, 64]);
    assert.ok(r.metrics.decode_ms !== undefined && r.metrics.store_ms !== undefined);
  });

  it("renders a video as an animated file", async () => {
    const r = await pipeline.run("job_v1", createJobSchema.parse({ task: "video", input: ["a blue square moving right"], params: { steps: 2, frames: 3, output_format: "gif" } }), undefined);
    const meta = await sharp(await store.get(r.output.video!.key), { animated: true }).metadata();
    assert.deepEqual([meta.format, meta.pages, r.output.video!.frames], ["gif", 3, 3]);
  });

  it("fails bad inputs with stable codes, and cancels", async () => {
    await assert.rejects(pipeline.run("job_e1", createJobSchema.parse({ task: "chat", input: [{ type: "image", url: "upload://u_missing" }, "hi"] }), undefined), (e: { code?: string }) => e.code === "upload_not_found");
    await assert.rejects(pipeline.run("job_e2", createJobSchema.parse({ task: "chat", input: [{ type: "image", url: "https://127.0.0.1/x.png" }, "hi"] }), undefined), (e: { code?: string }) => e.code === "url_forbidden");
    await assert.rejects(pipeline.run("job_e3", createJobSchema.parse({ task: "chat", input: [{ type: "image", url: "data:image/png;base64,AAAA" }, "hi"] }), undefined), (e: { code?: string }) => e.code === "image_unreadable");
    const ac = new AbortController();
    const p = pipeline.run("job_c1", createJobSchema.parse({ task: "video", input: ["a red circle moving up"], params: { decoder: "diffusion", steps: 50, frames: 8 } }), ac.signal, { progress: (stage) => { if (stage === "decode") ac.abort(); } });
    await assert.rejects(p, (e: { code?: string }) => e.code === "canceled");
  });
});
