/**
 * The decoder stage over real gRPC with real ONNX: progress then images, concurrent diffusion
 * requests sharing UNet calls with the one-by-one pixels (±1 level), the direct decoder, and bad
 * requests → INVALID_ARGUMENT.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { createStageClient, Status, StageServer, type GrpcClient, type ServiceError } from "../../shared/grpc/grpc.adapter.ts";
import { floatsToWire } from "../../shared/tensor-codec.ts";
import { decoderHandlers } from "../../services/decoder/decoder.grpc.ts";
import { DecoderService } from "../../services/decoder/decoder.service.ts";

const PACKAGE_DIR = join(import.meta.dirname, "../../models/emu2-tiny");
const MB = 1 << 20;

interface Event { progress?: { step: number; total: number }; image?: { index: number; width: number; height: number; rgb: Uint8Array } }
interface Stream { on(ev: "data", cb: (e: Event) => void): void; on(ev: "error", cb: (e: ServiceError) => void): void; on(ev: "end", cb: () => void): void }

describe("decoder stage over gRPC", () => {
  let model: EmuModel;
  let service: DecoderService;
  let server: StageServer;
  let client: GrpcClient;
  let negative: Float32Array;
  let tokens: number;
  let dim: number;

  const call = (req: object): Promise<Event[]> => new Promise((resolve, reject) => {
    const s = (client as unknown as { Decode: (r: object, o: object) => Stream }).Decode(req, { deadline: Date.now() + 60_000 });
    const got: Event[] = [];
    s.on("data", (e) => got.push(e));
    s.on("error", reject);
    s.on("end", () => resolve(got));
  });
  const embeddings = (seed: number, count = 1): Float32Array => {
    const out = new Float32Array(count * tokens * dim);
    for (let i = 0; i < out.length; i++) out[i] = (negative[i % negative.length] as number) + 0.5 * Math.sin(seed * 7.1 + i * 0.37);
    return out;
  };

  before(async () => {
    model = await EmuModel.load(PACKAGE_DIR, { engines: ["reasoner", "decoder"] });
    tokens = model.manifest.encoder.tokens_per_image;
    dim = model.manifest.encoder.dim;
    negative = await model.reasoner!.unconditional();
    service = new DecoderService({ engine: model.decoder! });
    server = new StageServer({ stage: "Decoder", handlers: decoderHandlers(service, { tokens, dim }), maxMessageBytes: 16 * MB });
    const port = await server.start();
    client = createStageClient({ stage: "Decoder", target: `127.0.0.1:${port}`, maxMessageBytes: 16 * MB });
  });

  after(async () => {
    client.close();
    await server.stop(1000);
    await model.close();
  });

  const req = (seed: number, extra: object = {}): object => ({
    embeddings: floatsToWire(embeddings(seed), [1, tokens, dim]), negative: floatsToWire(negative, [tokens, dim]), steps: 6, seed, decoder: "diffusion", ...extra,
  });

  it("streams progress, then the image", async () => {
    const ev = await call(req(1));
    const progress = ev.filter((e) => e.progress).map((e) => e.progress!.step);
    assert.equal(progress.at(-1), 6);
    const img = ev.find((e) => e.image)!.image!;
    assert.deepEqual([img.width, img.height, img.rgb.length], [64, 64, 64 * 64 * 3]);
  });

  it("shares UNet calls between concurrent requests with the one-by-one pixels", async () => {
    const seeds = [11, 12, 13, 14];
    const single: Uint8Array[] = [];
    for (const s of seeds) single.push((await call(req(s))).find((e) => e.image)!.image!.rgb);
    const before = service.unetCalls;
    const all = await Promise.all(seeds.map((s) => call(req(s))));
    const calls = service.unetCalls - before;
    assert.ok(calls < seeds.length * 6, `${calls} UNet calls for ${seeds.length} concurrent 6-step requests`);
    all.forEach((ev, i) => {
      const got = ev.find((e) => e.image)!.image!.rgb;
      let d = 0;
      for (let k = 0; k < got.length; k++) d = Math.max(d, Math.abs(got[k]! - single[i]![k]!));
      assert.ok(d <= 1, `request ${i}: pixels differ by ${d} levels`);
    });
  });

  it("decodes video frames and the direct decoder in one call each", async () => {
    const frames = await call({ embeddings: floatsToWire(embeddings(3, 3), [3, tokens, dim]), negative: floatsToWire(negative, [tokens, dim]), steps: 2, decoder: "diffusion" });
    assert.deepEqual(frames.filter((e) => e.image).map((e) => e.image!.index), [0, 1, 2]);
    const direct = await call({ embeddings: floatsToWire(embeddings(4), [1, tokens, dim]), decoder: "direct" });
    assert.equal(direct.filter((e) => e.image).length, 1);
  });

  it("rejects bad requests with INVALID_ARGUMENT", async () => {
    await assert.rejects(call(req(1, { decoder: "nope" })), (err: ServiceError) => err.code === Status.INVALID_ARGUMENT && /invalid_decoder/.test(err.details));
    await assert.rejects(call({ embeddings: floatsToWire(new Float32Array(10), [1, 2, 5]) }), (err: ServiceError) => err.code === Status.INVALID_ARGUMENT);
    await assert.rejects(call(req(1, { steps: 100000 })), (err: ServiceError) => err.code === Status.INVALID_ARGUMENT);
  });
});
