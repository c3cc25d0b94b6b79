/**
 * The orchestrator's view of the stages: encode → reason → decode over real gRPC, matching the
 * in-process engines; cancel reaches the stage; a stage that is down fails as stage_unavailable.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { StageClients, StageUnavailableError } from "../../shared/grpc/stage-clients.ts";
import { startStageCluster, type StageCluster } from "../support/stage-cluster.ts";

describe("stage clients over gRPC", () => {
  let c: StageCluster;
  before(async () => { c = await startStageCluster(); });
  after(async () => { await c.stop(); });

  it("runs text, image and video plans with the engines' results", async () => {
    const b = c.model.builder;
    const chat = b.build("chat", [{ type: "text", text: "a red circle", box: [0.1, 0.1, 0.4, 0.4] }, "where is it ?"]);
    const emb = await c.clients.encode(chat.images);
    assert.equal(emb.count, 1);
    const tokens: string[] = [];
    const r = await c.clients.reason({ tokenIds: chat.ids, images: emb, mode: "text", sampling: { max_new_tokens: 6 }, onToken: (_i, t) => tokens.push(t) });
    const local = await c.model.reasoner!.generate({ sequence: chat, images: await c.model.encoder!.encode(chat.images), mode: "text", text: { maxNewTokens: 6 } });
    assert.equal(r.text, local.text);
    assert.equal(tokens.at(-1) ?? "", r.text);
    const img = b.build("image", ["a red circle at the top left"]);
    const g = await c.clients.reason({ tokenIds: img.ids, images: await c.clients.encode([]), mode: "image", includeNegative: true });
    assert.ok(g.negative && g.negative.length === g.visual.length);
    let last = 0;
    const pics = await c.clients.decode({ embeddings: g.visual, count: 1, negative: g.negative, decoder: "diffusion", steps: 3, seed: 1, onProgress: (s) => { last = s; } });
    assert.equal(last, 3);
    const localPics = await c.model.decoder!.decode({ embeddings: g.visual, count: 1, negative: g.negative!, decoder: "diffusion", steps: 3, seed: 1 });
    let d = 0;
    for (let k = 0; k < pics[0]!.data.length; k++) d = Math.max(d, Math.abs(pics[0]!.data[k]! - localPics[0]!.data[k]!));
    assert.ok(d <= 1, `pixels differ by ${d}`);
    const vid = b.build("video", ["a blue square moving up"]);
    const v = await c.clients.reason({ tokenIds: vid.ids, images: await c.clients.encode([]), mode: "video", frames: 2 });
    assert.equal(v.visual.length, 2 * c.model.manifest.encoder.tokens_per_image * c.model.manifest.encoder.dim);
  });

  it("cancels a running generation from the caller's AbortSignal", async () => {
    const seq = c.model.builder.build("complete", ["a"]);
    const ac = new AbortController();
    const p = c.clients.reason({ tokenIds: seq.ids, images: await c.clients.encode([]), mode: "text", sampling: { max_new_tokens: 300, temperature: 1, seed: 2 }, signal: ac.signal, onToken: () => ac.abort() });
    await assert.rejects(p, (e: { code?: string }) => e.code === "canceled");
  });

  it("reports a stage that does not come up as stage_unavailable", async () => {
    const dead = new StageClients({ encoder: "127.0.0.1:1", reasoner: "127.0.0.1:1", decoder: "127.0.0.1:1", maxMessageBytes: 1 << 20, dims: { tokens: 16, dim: 64 }, readyTimeoutMs: 300 });
    await assert.rejects(dead.encode([{ kind: "box-mask", box: [0, 0, 1, 1] }]), StageUnavailableError);
    dead.close();
  });
});
