/**
 * The encoder stage over real gRPC on 127.0.0.1:0 with real ONNX: health, batching of concurrent
 * calls (fewer engine calls, same embeddings as one by one), bad input → INVALID_ARGUMENT,
 * deadlines, and two-phase shutdown.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import sharp from "sharp";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { createStageClient, Status, StageServer, type GrpcClient, type ServiceError } from "../../shared/grpc/grpc.adapter.ts";
import { fromWire, type WireTensor } from "../../shared/tensor-codec.ts";
import { encoderHandlers } from "../../services/encoder/encoder.grpc.ts";
import { EncoderService } from "../../services/encoder/encoder.service.ts";
import { renderScene } from "../../models/world/render.ts";
import { World } from "../../models/world/tasks.ts";

const PACKAGE_DIR = join(import.meta.dirname, "../../models/emu2-tiny");
const MB = 1 << 20;

type EncodeFn = (req: object, opts: { deadline?: number }, cb: (err: ServiceError | null, res?: { embeddings: WireTensor }) => void) => void;

describe("encoder stage over gRPC", () => {
  let model: EmuModel;
  let service: EncoderService;
  let server: StageServer;
  let client: GrpcClient;
  const pngs: Buffer[] = [];

  const encode = (images: object[], deadlineMs = 10_000): Promise<{ embeddings: WireTensor }> =>
    new Promise((resolve, reject) => {
      (client as unknown as { Encode: EncodeFn }).Encode({ images }, { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res!)));
    });

  before(async () => {
    model = await EmuModel.load(PACKAGE_DIR, { engines: ["encoder"] });
    service = new EncoderService({ engine: model.encoder!, maxBatchSize: 32, maxBatchDelayMs: 20 });
    server = new StageServer({ stage: "Encoder", handlers: encoderHandlers(service), maxMessageBytes: 8 * MB });
    const port = await server.start();
    client = createStageClient({ stage: "Encoder", target: `127.0.0.1:${port}`, maxMessageBytes: 8 * MB });
    const world = new World("eval");
    for (let i = 0; i < 8; i++) {
      pngs.push(await sharp(renderScene(world.poolScene("scenes", i)), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer());
    }
  });

  after(async () => {
    client.close();
    await server.stop(1000);
    await model.close();
  });

  it("reports SERVING on grpc.health.v1", async () => {
    const { checkHealth } = await import("../../shared/grpc/health-client.ts");
    const status = await checkHealth(`127.0.0.1:${server.port}`);
    assert.equal(status, "SERVING");
  });

  it("batches concurrent calls into fewer engine runs with the same embeddings", async () => {
    const single: Float32Array[] = [];
    for (const png of pngs) single.push(fromWire((await encode([{ encoded: png }])).embeddings).data as Float32Array);
    const before = service.engineCalls;
    const results = await Promise.all(pngs.map((png) => encode([{ encoded: png }])));
    const calls = service.engineCalls - before;
    assert.ok(calls < pngs.length, `${calls} engine calls for ${pngs.length} concurrent requests`);
    results.forEach((r, i) => {
      const t = fromWire(r.embeddings);
      assert.deepEqual(t.dims, [1, model.manifest.encoder.tokens_per_image, model.manifest.encoder.dim]);
      const got = t.data as Float32Array;
      let d = 0;
      for (let k = 0; k < got.length; k++) d = Math.max(d, Math.abs(got[k]! - single[i]![k]!));
      assert.ok(d <= 1e-4, `image ${i}: max |diff| ${d}`);
    });
  });

  it("encodes several images and a grounding box in one call", async () => {
    const r = fromWire((await encode([{ encoded: pngs[0] }, { box_mask: { box: [0.1, 0.1, 0.6, 0.5] } }])).embeddings);
    assert.equal(r.dims[0], 2);
  });

  it("answers unreadable images with INVALID_ARGUMENT and a stable code", async () => {
    await assert.rejects(encode([{ encoded: Buffer.from("not an image") }]), (err: ServiceError) =>
      err.code === Status.INVALID_ARGUMENT && /^image_unreadable:/.test(err.details));
    await assert.rejects(encode([{}]), (err: ServiceError) => err.code === Status.INVALID_ARGUMENT);
  });

  it("honours the caller's deadline", async () => {
    await assert.rejects(encode([{ encoded: pngs[0] }], 0), (err: ServiceError) => err.code === Status.DEADLINE_EXCEEDED);
  });
});
