/**
 * The reasoner stage over real gRPC with real ONNX: streamed tokens, regressed images and video
 * frames, concurrent calls sharing decoding steps (continuous batching) with one-by-one results,
 * client cancellation, and invalid requests → INVALID_ARGUMENT.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { createStageClient, Status, StageServer, type GrpcClient, type ServiceError } from "../../shared/grpc/grpc.adapter.ts";
import { fromWire, type WireTensor } from "../../shared/tensor-codec.ts";
import { reasonerHandlers } from "../../services/reasoner/reasoner.grpc.ts";
import { ReasonerService } from "../../services/reasoner/reasoner.service.ts";

const PACKAGE_DIR = join(import.meta.dirname, "../../models/emu2-tiny");
const MB = 1 << 20;

interface Event { token?: { id: number; text: string }; visual?: { index: number; embeddings: WireTensor }; negative?: WireTensor; done?: { finish_reason: string; text: string } }
interface Stream { on(ev: "data", cb: (e: Event) => void): void; on(ev: "error", cb: (e: ServiceError) => void): void; on(ev: "end", cb: () => void): void; cancel(): void }

describe("reasoner stage over gRPC", () => {
  let model: EmuModel;
  let service: ReasonerService;
  let server: StageServer;
  let client: GrpcClient;

  const call = (req: object): { events: Promise<Event[]>; stream: Stream } => {
    const stream = (client as unknown as { Generate: (r: object, o: object) => Stream }).Generate(req, { deadline: Date.now() + 30_000 });
    const events = new Promise<Event[]>((resolve, reject) => {
      const got: Event[] = [];
      stream.on("data", (e) => got.push(e));
      stream.on("error", reject);
      stream.on("end", () => resolve(got));
    });
    return { events, stream };
  };

  before(async () => {
    model = await EmuModel.load(PACKAGE_DIR, { engines: ["reasoner"] });
    service = new ReasonerService({ engine: model.reasoner! });
    const dims = { tokens: model.manifest.encoder.tokens_per_image, dim: model.manifest.encoder.dim };
    server = new StageServer({ stage: "Reasoner", handlers: reasonerHandlers(service, dims), maxMessageBytes: 8 * MB });
    const port = await server.start();
    client = createStageClient({ stage: "Reasoner", target: `127.0.0.1:${port}`, maxMessageBytes: 8 * MB });
  });

  after(async () => {
    client.close();
    await server.stop(1000);
    await model.close();
  });

  it("streams tokens then done for text, and visual events for images and video", async () => {
    const chat = model.builder.build("chat", ["how many shapes are there ?"]);
    const text = await call({ token_ids: chat.ids, mode: "MODE_TEXT", sampling: { max_new_tokens: 5 } }).events;
    assert.ok(text.at(-1)?.done, "no done event");
    const tokens = text.filter((e) => e.token);
    assert.equal(text.at(-1)!.done!.text, tokens.at(-1)?.token?.text ?? "");
    const image = model.builder.build("image", ["a red circle at the top left"]);
    const img = await call({ token_ids: image.ids, mode: "MODE_IMAGE", include_negative: true }).events;
    assert.ok(img[0]?.negative, "negative first");
    const vis = img.filter((e) => e.visual);
    assert.equal(vis.length, 1);
    assert.deepEqual(fromWire(vis[0]!.visual!.embeddings).dims, [model.manifest.encoder.tokens_per_image, model.manifest.encoder.dim]);
    const video = model.builder.build("video", ["a blue square moving right"]);
    const vid = await call({ token_ids: video.ids, mode: "MODE_VIDEO", frames: 3 }).events;
    assert.deepEqual(vid.filter((e) => e.visual).map((e) => e.visual!.index), [0, 1, 2]);
  });

  it("serves concurrent calls in shared decoding steps with the one-by-one results", async () => {
    const prompts = ["a red circle at the top left", "a small green square on the right", "a purple triangle in the middle", "a yellow circle at the bottom"];
    const seqs = prompts.map((p) => model.builder.build("image", [p]));
    const single: Float32Array[] = [];
    for (const s of seqs) single.push(fromWire((await call({ token_ids: s.ids, mode: "MODE_IMAGE" }).events).find((e) => e.visual)!.visual!.embeddings).data as Float32Array);
    const stepsBefore = service.steps;
    const all = await Promise.all(seqs.map((s) => call({ token_ids: s.ids, mode: "MODE_IMAGE" }).events));
    const steps = service.steps - stepsBefore;
    assert.ok(steps < prompts.length * model.manifest.encoder.tokens_per_image, `${steps} steps for ${prompts.length} concurrent images`);
    all.forEach((ev, i) => {
      const got = fromWire(ev.find((e) => e.visual)!.visual!.embeddings).data as Float32Array;
      let d = 0;
      for (let k = 0; k < got.length; k++) d = Math.max(d, Math.abs(got[k]! - single[i]![k]!));
      assert.ok(d <= 1e-4, `prompt ${i}: max |diff| ${d}`);
    });
  });

  it("stops generating when the client cancels", async () => {
    const seq = model.builder.build("complete", ["a red"]);
    const { stream, events } = call({ token_ids: seq.ids, mode: "MODE_TEXT", sampling: { max_new_tokens: 200, temperature: 1, seed: 3 } });
    stream.on("data", () => stream.cancel());
    await assert.rejects(events, (err: ServiceError) => err.code === Status.CANCELLED);
    for (let i = 0; i < 50 && service.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(service.inFlight, 0);
  });

  it("rejects invalid requests with INVALID_ARGUMENT", async () => {
    await assert.rejects(call({ token_ids: [1, 2], mode: "MODE_UNSPECIFIED" }).events, (err: ServiceError) => err.code === Status.INVALID_ARGUMENT);
    const chat = model.builder.build("chat", [{ type: "image", image: { kind: "bytes", data: new Uint8Array(1) } }, "hi"]);
    await assert.rejects(call({ token_ids: chat.ids, mode: "MODE_TEXT" }).events, (err: ServiceError) => err.code === Status.INVALID_ARGUMENT);
    const long = new Array<number>(model.manifest.lm.max_positions + 1).fill(model.builder.ids.bos);
    await assert.rejects(call({ token_ids: long, mode: "MODE_TEXT" }).events, (err: ServiceError) => err.code === Status.INVALID_ARGUMENT && /prompt_too_long/.test(err.details));
  });
});
